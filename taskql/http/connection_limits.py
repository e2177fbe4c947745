"""Limits on how a client may hold a connection before its request reaches the app: uvicorn's
httptools protocol with a deadline for reading a request and a bound on the size of its headers.

uvicorn has neither: a connection that never sends a byte, or sends its headers a byte at a time
(slowloris), is held for as long as the client likes, and httptools accepts headers of any size (10
MB were read into memory). The ASGI app cannot help, since it is called once the headers are
complete. So:

- A request's headers and body must arrive within `read_timeout` seconds, counted from the
  connection's opening (or, on a kept-alive connection, from the request's first byte). Past it the
  connection is closed, with 408 if the headers were not complete yet. The time the app takes to
  answer does not count, and nor does a WebSocket once upgraded (its own limits are elsewhere:
  message size, pings, the connection_init deadline).
- The request line and headers together may hold `max_header_bytes` bytes; past it: 431.

And a WebSocket whose client stops reading is dropped. Its messages would otherwise pile up in the
kernel's send buffer (megabytes on a fast link: a socket that never read held ~1,000 events for 40 s)
and then in the server's, while the subscription waits to send. The socket may hold
`ws_send_buffer_bytes` unsent (half in the kernel, half in the server's buffer); once both are full
and stay full for `ws_stalled_seconds`, the connection is aborted: nothing more can reach that
client anyway, so no close frame is sent (the client sees 1006, and may reconnect and resume with
`after`). A client that reads, only too slowly, is told SUBSCRIBER_TOO_SLOW by its subscription
(events/broker.py) before it gets there.

The WebSocket protocol also offers the app `write_now` (scope extension `WRITE_NOW`): a text
message written at once, or refused (False) while the socket is closing or its buffer is full, for
live events written to many sockets in a row (http/subscription_outlet.py). ASGI's `send` waits
while the buffer is full, which would hold every other subscriber back behind the slowest.

`taskql serve` hands uvicorn `limited_http_protocol(settings)` instead of its "httptools", and
`limited_websocket_protocol(settings)` instead of its "websockets-sansio".
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

from taskql import metrics
from taskql.http.subscription_outlet import WRITE_NOW
from taskql.settings import Settings

logger = logging.getLogger("taskql.server")

# Answered before there is a request to route, still as GraphQL-shaped errors with a code.
_REFUSALS = {
    408: (b"Request Timeout", "REQUEST_TIMEOUT", "The request did not arrive in time."),
    431: (b"Request Header Fields Too Large", "HEADERS_TOO_LARGE", "The request's headers are too large."),
}


class _HeadersTooLarge(Exception):
    """Raised inside the parser's callback: httptools stops parsing and uvicorn answers 400."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, read_timeout: float, max_header_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timeout = read_timeout
        self._max_header_bytes = max_header_bytes
        self._read_deadline: asyncio.TimerHandle | None = None
        self._header_bytes: int | None = None  # while a request's head is being read
        self._headers_too_large = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_read_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        if self._read_deadline is None:  # the next request on a kept-alive connection
            self._start_read_deadline()

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._header_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._stop_read_deadline()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._stop_read_deadline()
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to any error raised while parsing, _HeadersTooLarge included.
        if self._headers_too_large:
            self._refuse(431)
        else:
            super().send_400_response(msg)

    def _count_header_bytes(self, size: int) -> None:
        assert self._header_bytes is not None
        self._header_bytes += size
        if self._header_bytes > self._max_header_bytes:
            self._headers_too_large = True
            raise _HeadersTooLarge

    def _start_read_deadline(self) -> None:
        self._read_deadline = self.loop.call_later(self._read_timeout, self._read_timed_out)

    def _stop_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        if self._header_bytes is not None:
            self._refuse(408)
        else:
            # Nothing yet (an idle connection), or a body still trickling in to a running request:
            # the app sees the disconnection.
            self.transport.close()

    def _refuse(self, status: int) -> None:
        reason, code, message = _REFUSALS[status]
        body = orjson.dumps({"errors": [{"message": message, "extensions": {"code": code}}]})
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason, len(body), body)
        )
        self.transport.close()


def limited_http_protocol(settings: Settings) -> functools.partial[LimitedHttpToolsProtocol]:
    """What uvicorn's `http` option takes: a factory of the protocol, one per connection."""
    return functools.partial(
        LimitedHttpToolsProtocol,
        read_timeout=settings.http_read_timeout_seconds,
        max_header_bytes=settings.max_header_bytes,
    )


class LimitedWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, send_buffer_bytes: int, stalled_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._send_buffer_bytes = send_buffer_bytes
        self._stalled_seconds = stalled_seconds
        self._stalled: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        half = self._send_buffer_bytes // 2
        connection = transport.get_extra_info("socket")
        if connection is not None:  # the kernel's share; Linux reserves twice what is asked for, for itself too
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, half)
        self.transport.set_write_buffer_limits(high=half)  # past it, sends wait: pause_writing

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_stall_timer()
        super().connection_lost(exc)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # none when the handshake was refused
        if scope is not None:
            scope["extensions"][WRITE_NOW] = {"write": self.write_now}

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept":
            # The handshake is answered: uvicorn has no more use for it, and every open socket would
            # keep its request's and its response's headers (~3.5 KiB; more with a browser's cookies).
            # The app keeps what it needs in its scope.
            self.request = self.response = None  # type: ignore[assignment]

    def write_now(self, text: bytes) -> bool:
        """Sends one text message (UTF-8) at once; False, sending nothing, when it cannot go now."""
        if self.close_sent or self.disconnected or not self.writable.is_set() or self.conn.state is not State.OPEN:
            return False
        self.conn.send_text(text)  # framed (and compressed, if negotiated) by the sans-I/O connection
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stalled is None:
            self._stalled = self.loop.call_later(self._stalled_seconds, self._drop)

    def resume_writing(self) -> None:
        self._stop_stall_timer()
        super().resume_writing()

    def _stop_stall_timer(self) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _drop(self) -> None:
        self._stalled = None
        logger.info(
            "dropped a WebSocket whose client read nothing for %.0f s (%d bytes waiting)",
            self._stalled_seconds,
            self.transport.get_write_buffer_size(),
        )
        metrics.WEBSOCKET_DROPPED.inc()
        self.transport.abort()


def limited_websocket_protocol(settings: Settings) -> functools.partial[LimitedWebSocketProtocol]:
    """What uvicorn's `ws` option takes."""
    return functools.partial(
        LimitedWebSocketProtocol,
        send_buffer_bytes=settings.ws_send_buffer_bytes,
        stalled_seconds=settings.ws_stalled_seconds,
    )
