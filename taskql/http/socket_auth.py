"""How a WebSocket presents its token, and how a refused one is told why.

Clients put the token in the `connection_init` payload in different shapes: graphql-ws apps write
`{"authorization": "Bearer …"}` (what the README shows), some `{"Authorization": …}`, and
GraphiQL's headers editor sends `{"headers": {"Authorization": …}}`. All are read, the name in any
case.

Strawberry closes every refused graphql-transport-ws socket with 4403 "Forbidden", which tells a
developer nothing and makes graphql-ws retry even what cannot succeed. A refusal here carries its
close code and a readable reason (at most 123 bytes, the WebSocket limit), following graphql-ws's
client: 4400 (not retried) when no token was sent at all, 4403 (retried, with whatever token
`connectionParams` returns then) when the token is refused, 1013 (try again later) while the
database is unreachable.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.exceptions import ConnectionRejectionError

NO_TOKEN = 4400
TOKEN_REFUSED = 4403
TRY_AGAIN_LATER = 1013
_REASON_BYTES = 123
_REFUSAL_KEY = "taskql.ws_refusal"


def connection_authorization(params: Any) -> str | None:
    """The `Authorization` value a connection_init payload carries, at its top level or in `headers`."""
    for source in (params, params.get("headers") if isinstance(params, dict) else None):
        if isinstance(source, dict):
            for name, value in source.items():
                if isinstance(name, str) and name.lower() == "authorization" and isinstance(value, str):
                    return value
    return None


def refusal(scope: Scope, code: int, reason: str) -> ConnectionRejectionError:
    """What on_ws_connect raises: the legacy protocol sends `reason` as its connection_error, and
    graphql-transport-ws closes with `code` and `reason` (RefusalReasons)."""
    encoded = reason.encode()
    if len(encoded) > _REASON_BYTES:
        reason = encoded[: _REASON_BYTES - 3].decode(errors="ignore") + "..."
    scope[_REFUSAL_KEY] = (code, reason)
    return ConnectionRejectionError({"message": reason})


class RefusalReasons(ASGIWebSocketAdapter):
    """Strawberry's WebSocket adapter, closing a refused connection_init with the refusal's code and reason."""

    async def close(self, code: int, reason: str) -> None:
        refused = self.ws.scope.pop(_REFUSAL_KEY, None)
        if refused is not None and (code, reason) == (4403, "Forbidden"):  # Strawberry's answer to a refusal
            code, reason = refused
        await super().close(code, reason)
