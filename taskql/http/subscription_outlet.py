"""Where a subscription's `next` messages can be written straight to its socket.

Strawberry sends each result of a subscription through the operation's own task: an async
generator per subscription, the schema's per-result hooks, a message dict encoded to JSON, an ASGI
send. For live events that was most of what a delivery cost, paid once per subscriber per event
(bench/README.md). So the graphql-transport-ws handler offers each operation an `Outlet`: given the
payload's JSON once, it writes `{"id":…,"type":"next","payload":…}` for this operation's id with one
synchronous call into the server's WebSocket protocol (`taskql.http.connection_limits`), which
frames it. The events broker uses it for subscribers that have caught up (events/broker.py).

The protocol stays exact: a message is written only while Strawberry still has the operation
registered (a client's `complete` unregisters it at once, before its task is even cancelled),
never after the `complete` or `error` that ends it, and only on an open socket that is keeping up;
otherwise the caller hands the event to the operation's task, which sends it as Strawberry does.
The legacy graphql-ws protocol keeps Strawberry's path.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import orjson
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)

# The ASGI scope extension through which the server's WebSocket protocol offers `write_now`: it
# writes one text message (UTF-8 JSON bytes) without waiting and answers whether it did.
WRITE_NOW = "taskql.websocket.write_now"

# The outlet of the operation whose task is running (set per operation task, read by resolvers).
current_outlet: ContextVar[Outlet | None] = ContextVar("taskql_subscription_outlet", default=None)


class Outlet:
    __slots__ = ("_handler", "_operation", "_prefix", "_write")

    def __init__(
        self,
        handler: BaseGraphQLTransportWSHandler[Any, Any],
        operation: Operation[Any, Any],
        write: Callable[[bytes], bool],
    ) -> None:
        self._handler = handler
        self._operation = operation
        self._write = write
        self._prefix = b'{"id":' + orjson.dumps(operation.id) + b',"type":"next","payload":'

    def send_next(self, payload: bytes) -> bool:
        """Writes a `next` message with this payload (`{"data": …}` as JSON) now; False when it may not."""
        operation = self._operation
        if operation.completed or self._handler.operations.get(operation.id) is not operation:
            return False
        return self._write(self._prefix + payload + b"}")


class OutletTransportWSHandler(BaseGraphQLTransportWSHandler[Any, Any]):
    """Strawberry's graphql-transport-ws handler, offering each operation an Outlet where the server can write now."""

    async def run_operation(self, operation: Operation[Any, Any]) -> None:
        extension = self.websocket.ws.scope.get("extensions", {}).get(WRITE_NOW)  # type: ignore[attr-defined]
        if extension is not None:
            current_outlet.set(Outlet(self, operation, extension["write"]))
        await super().run_operation(operation)
