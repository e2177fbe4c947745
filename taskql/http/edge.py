"""The HTTP edge in one ASGI layer: what every HTTP request gets, whatever it asks for.

- A request id: a sane `X-Request-ID` is taken over, anything else replaced by a generated one
  (never echo or log arbitrary client text). It is in the scope's state for the logs and masked
  errors, and echoed in the response (WebSocket handshakes get one too).
- Security headers on every response. The API answers JSON only, so production forbids everything
  else (`default-src 'none'`). In development the same page also serves GraphiQL, whose policy
  (http/graphiql.py) allows this server's own files and the page's inline scripts. HSTS only in
  production: it would pin a developer's `localhost` to HTTPS.
- One access-log line when the request ends: request id, trace id, user id, GraphQL operations
  (name and type), duration, status and error codes. Never the query text, the variables
  (passwords travel there) or any header (tokens travel there).

One layer rather than one per concern: each layer wraps `send` and adds a call per message to every
request. The tracing layer, when tracing is on, runs inside this one and notes the trace id.
"""

from __future__ import annotations

import re
import secrets
import time

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskql.logs import ERROR_CODES_KEY, FIELDS, OPERATIONS_KEY, TRACE_ID_KEY, access_logger

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_HEADER = REQUEST_ID_HEADER.encode()
_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
API_ONLY_POLICY = "default-src 'none'; frame-ancestors 'none'"
HSTS = "max-age=63072000; includeSubDomains"


def request_id_of(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == _REQUEST_ID_HEADER:
            sent = value.decode("latin-1")
            return sent if _SAFE.match(sent) else secrets.token_hex(16)
    return secrets.token_hex(16)


class HttpEdge:
    def __init__(self, app: ASGIApp, *, production: bool, content_security_policy: str = API_ONLY_POLICY) -> None:
        self.app = app
        headers = {
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
            "x-frame-options": "DENY",
            "content-security-policy": content_security_policy,
        }
        if production:
            headers["strict-transport-security"] = HSTS
        self.security_headers = tuple(headers.items())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts

        async def edge_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                for name, value in self.security_headers:
                    headers.setdefault(name, value)
            await send(message)

        try:
            await self.app(scope, receive, edge_send)
        finally:
            operations = state.get(OPERATIONS_KEY, [])
            fields = {
                "request_id": request_id,
                "trace_id": state.get(TRACE_ID_KEY),
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "user_id": next((o["user_id"] for o in operations if o["user_id"]), None),
                "operations": [{k: v for k, v in o.items() if k != "user_id"} for o in operations],
                "error_codes": sorted(set(state.get(ERROR_CODES_KEY, []))),
            }
            access_logger.info("%s %s %s", scope["method"], scope["path"], status, extra={FIELDS: fields})
