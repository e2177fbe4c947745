"""Logs: one JSON object per line in production (for a log pipeline), readable text in development.

Every HTTP request is logged once, when it ends, by AccessLogMiddleware: request id, trace id, user id,
GraphQL operations (name and type), duration, status and error codes. Never the query text, the
variables (passwords travel there) or any header (tokens travel there).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskql.settings import Settings

access_logger = logging.getLogger("taskql.access")
# In the request's scope state, filled by the GraphQL layer (schema/root.py OperationLog, server.py).
OPERATIONS_KEY = "graphql_operations"
ERROR_CODES_KEY = "graphql_error_codes"
FIELDS = "fields"  # structured fields of a record: logger.info(..., extra={FIELDS: {...}})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, FIELDS, {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, FIELDS, None)
        return f"{text} {' '.join(f'{k}={v}' for k, v in fields.items())}" if fields else text


JsonFormatter.converter = time.gmtime


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.uses_json_logs else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # Uvicorn's own access lines would repeat ours without the request id or the user.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            state = scope.get("state", {})
            operations = state.get(OPERATIONS_KEY, [])
            fields = {
                "request_id": state.get("request_id"),
                "trace_id": current_trace_id(),
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "user_id": next((o["user_id"] for o in operations if o["user_id"]), None),
                "operations": [{k: v for k, v in o.items() if k != "user_id"} for o in operations],
                "error_codes": sorted(set(state.get(ERROR_CODES_KEY, []))),
            }
            access_logger.info("%s %s %s", scope["method"], scope["path"], status, extra={FIELDS: fields})


def current_trace_id() -> str | None:
    """The trace of the running request (tracing.py), as trace viewers show it: 32 hex digits."""
    span_context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(span_context.trace_id) if span_context.is_valid else None


def note_operation(state: Any, name: str | None, kind: str, user_id: str | None) -> None:
    """Called by the GraphQL layer for each operation an HTTP request runs."""
    operations = getattr(state, OPERATIONS_KEY, None)
    if operations is None:
        operations = []
        setattr(state, OPERATIONS_KEY, operations)
    operations.append({"name": name, "type": kind, "user_id": user_id})


def note_error_codes(state: Any, codes: list[str]) -> None:
    setattr(state, ERROR_CODES_KEY, [*getattr(state, ERROR_CODES_KEY, []), *codes])
