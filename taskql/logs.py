"""Logs: one JSON object per line in production (for a log pipeline), readable text in development.

Every HTTP request is logged once, when it ends, by the HTTP edge (http/edge.py): request id, trace
id, user id, GraphQL operations (name and type), duration, status and error codes. Never the query
text, the variables (passwords travel there) or any header (tokens travel there).

Records are formatted and written by a thread of their own (a QueueHandler feeding a
QueueListener), so neither the formatting nor a slow stderr holds up the event loop.
"""

from __future__ import annotations

import atexit
import logging
import queue
import time
from contextvars import ContextVar
from logging.handlers import QueueHandler, QueueListener
from typing import Any

import orjson

from taskql.settings import Settings

access_logger = logging.getLogger("taskql.access")
# In the request's scope state, filled by the GraphQL layer (schema/extensions/guard.py, server.py) and tracing.
OPERATIONS_KEY = "graphql_operations"
ERROR_CODES_KEY = "graphql_error_codes"
TRACE_ID_KEY = "trace_id"
FIELDS = "fields"  # structured fields of a record: logger.info(..., extra={FIELDS: {...}})
# Fields every record logged in this context carries (a job's id and name: jobs/worker.py).
context_fields: ContextVar[dict[str, Any]] = ContextVar("taskql_log_fields", default={})  # noqa: B039 (never mutated)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, FIELDS, {}),
        }
        if record.exc_info or record.exc_text:  # text once queued (_LogQueue.prepare)
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, FIELDS, None)
        return f"{text} {' '.join(f'{k}={v}' for k, v in fields.items())}" if fields else text


JsonFormatter.converter = time.gmtime


class _LogQueue(QueueHandler):
    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """Settles on the caller's thread only what cannot wait: the arguments (they may change) into
        the message, the exception into text, the context's fields. The formatter runs on the
        listener's thread."""
        record.msg, record.args = record.getMessage(), None
        shared = context_fields.get()
        if shared:
            setattr(record, FIELDS, {**shared, **getattr(record, FIELDS, {})})
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record


class _Listener(QueueListener):
    def stop(self) -> None:
        if self._thread is not None:  # once: when configured again, and at exit
            super().stop()


_listener: _Listener | None = None


def configure_logging(settings: Settings) -> None:
    global _listener
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.uses_json_logs else TextFormatter())
    if _listener is not None:  # configured again (taskql serve, then its one worker in the same process)
        _listener.stop()
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = _Listener(records, handler)
    _listener.start()
    atexit.register(_listener.stop)  # writes what is still queued
    root = logging.getLogger()
    root.handlers[:] = [_LogQueue(records)]
    root.setLevel(settings.log_level)
    # saq logs each job three times at INFO (queued, processing, finished); jobs/worker.py logs it once.
    logging.getLogger("saq").setLevel(max(logging.WARNING, root.level))
    # Uvicorn's own access lines would repeat ours without the request id or the user.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def note_operation(state: Any, name: str | None, kind: str, user_id: str | None) -> None:
    """Called by the GraphQL layer for each operation an HTTP request runs."""
    operations = getattr(state, OPERATIONS_KEY, None)
    if operations is None:
        operations = []
        setattr(state, OPERATIONS_KEY, operations)
    operations.append({"name": name, "type": kind, "user_id": user_id})


def note_error_codes(state: Any, codes: list[str]) -> None:
    setattr(state, ERROR_CODES_KEY, [*getattr(state, ERROR_CODES_KEY, []), *codes])
