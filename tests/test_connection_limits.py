"""How long and how much a client may hold a connection of `taskql serve` before its request reaches
the app (taskql/http/connection_limits.py): slowloris, idle sockets, trickled bodies, huge headers,
and WebSockets that never initialise. Raw sockets, since HTTP clients would not misbehave."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from tests.conftest import RedisServer
from tests.live import LiveServer, Subscriber, User

READ_TIMEOUT = 1.0
MAX_HEADER_BYTES = 4_096
# How late a deadline may fire on a busy machine and still count as kept. (It may also seem 0.1 s
# early: the server starts counting when it accepts, a little before the client knows it is connected.)
SLACK = 3.0
WS_SEND_BUFFER_BYTES = 16_384
WS_STALLED_SECONDS = 1.0


@pytest.fixture(scope="module")
def server(
    mongodb_uri: str, shared_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    live = LiveServer(
        mongodb_uri=mongodb_uri,
        redis_url=shared_redis.new_database(),
        database=f"test_{uuid.uuid4().hex[:12]}",
        data_dir=tmp_path_factory.mktemp("limits"),
        http_read_timeout_seconds=READ_TIMEOUT,
        max_header_bytes=MAX_HEADER_BYTES,
        ws_connection_init_timeout_seconds=READ_TIMEOUT,
        ws_send_buffer_bytes=WS_SEND_BUFFER_BYTES,
        ws_stalled_seconds=WS_STALLED_SECONDS,
    )
    live.start()
    yield live
    live.stop()


async def connect(server: LiveServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def answer(reader: asyncio.StreamReader) -> tuple[int | None, bytes, float]:
    """The status line's code and the body of what the server sends before closing (None: nothing),
    and when the connection ended."""
    data = await asyncio.wait_for(reader.read(), READ_TIMEOUT + SLACK + 5)
    ended = time.monotonic()
    if not data:
        return None, b"", ended
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body, ended


async def answer_to_trickle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, *, pause: float
) -> tuple[int | None, bytes, float]:
    """What `answer` returns while `data` goes out a byte every `pause` seconds; the connection is closed after."""

    async def trickle() -> None:
        for byte in data:
            writer.write(bytes([byte]))
            await asyncio.sleep(pause)

    trickling = asyncio.create_task(trickle())
    try:
        return await answer(reader)
    finally:
        trickling.cancel()
        writer.close()


def healthz(headers: bytes = b"") -> bytes:
    return b"GET /healthz HTTP/1.1\r\nhost: test\r\n" + headers + b"\r\n"


async def test_headers_sent_a_byte_at_a_time_are_cut_off_with_408(server: LiveServer) -> None:
    # Slowloris: 20 connections each keep a request's headers coming, one byte every 0.2 s.
    async def slowloris() -> tuple[int | None, bytes, float]:
        reader, writer = await connect(server)
        opened = time.monotonic()
        status, body, ended = await answer_to_trickle(
            reader, writer, healthz(b"x-padding: " + b"a" * 100 + b"\r\n"), pause=0.2
        )
        return status, body, ended - opened

    attackers = [asyncio.create_task(slowloris()) for _ in range(20)]
    await asyncio.sleep(0.3)
    reader, writer = await connect(server)  # a bystander meanwhile
    writer.write(healthz(b"connection: close\r\n"))
    bystander, _, _ = await answer(reader)
    writer.close()
    cut_off = await asyncio.gather(*attackers)

    assert bystander == 200
    for status, body, held in cut_off:
        assert status == 408
        assert json.loads(body)["errors"][0]["extensions"]["code"] == "REQUEST_TIMEOUT"
        assert READ_TIMEOUT - 0.1 <= held < READ_TIMEOUT + SLACK


async def test_a_connection_that_sends_nothing_is_closed(server: LiveServer) -> None:
    reader, writer = await connect(server)
    opened = time.monotonic()
    status, _, ended = await answer(reader)
    writer.close()

    assert status is None  # closed without a word: there was no request to answer
    assert READ_TIMEOUT - 0.1 <= ended - opened < READ_TIMEOUT + SLACK


async def test_a_body_that_trickles_in_is_cut_off(server: LiveServer) -> None:
    reader, writer = await connect(server)
    opened = time.monotonic()
    writer.write(
        b"POST /graphql HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    )
    _, _, ended = await answer_to_trickle(reader, writer, b" " * 1000, pause=0.1)

    assert READ_TIMEOUT - 0.1 <= ended - opened < READ_TIMEOUT + SLACK


async def test_headers_over_the_limit_get_431_and_under_it_are_served(server: LiveServer) -> None:
    async def send(padding: int) -> tuple[int | None, bytes, float]:
        reader, writer = await connect(server)
        writer.write(healthz(b"x-padding: " + b"a" * padding + b"\r\nconnection: close\r\n"))
        try:
            return await answer(reader)
        finally:
            writer.close()

    under, _, _ = await send(MAX_HEADER_BYTES - 200)
    over, body, _ = await send(10 * MAX_HEADER_BYTES)

    assert under == 200
    assert over == 431
    assert json.loads(body)["errors"][0]["extensions"]["code"] == "HEADERS_TOO_LARGE"


async def test_the_deadline_is_per_request_on_a_kept_alive_connection(server: LiveServer) -> None:
    reader, writer = await connect(server)
    statuses = []
    for _ in range(3):  # 3 requests 0.7 s apart: longer than the deadline in all, each within it
        writer.write(healthz())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(next(line for line in head.split(b"\r\n") if line.startswith(b"content-length")).split(b":")[1])
        await reader.readexactly(length)
        statuses.append(int(head.split(b" ", 2)[1]))
        await asyncio.sleep(0.7)
    writer.close()

    assert statuses == [200, 200, 200]


async def test_a_websocket_outlives_the_read_deadline(server: LiveServer) -> None:
    owner = await User.register(server, "Owner")
    project = await owner.execute('mutation { createProject(input: {name: "P"}) { project { id } } }')
    project_id = project["createProject"]["project"]["id"]

    async with Subscriber(server, owner.token, project_id, after="0-0") as subscriber:
        await asyncio.sleep(READ_TIMEOUT * 2)
        await owner.execute(
            'mutation($p: ID!) { createTask(input: {projectId: $p, title: "late"}) { task { id } } }',
            {"p": project_id},
        )
        events = await subscriber.wait_for(1)

    assert [event["task"]["title"] for event in events] == ["late"]


async def test_a_websocket_that_never_initialises_is_closed_with_4408(server: LiveServer) -> None:
    async with websockets.connect(server.ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]) as socket:
        opened = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), READ_TIMEOUT + SLACK + 5)
        held = time.monotonic() - opened

    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408
    assert held < READ_TIMEOUT + SLACK


class StalledClient:
    """A graphql-transport-ws client on a plain socket (websockets' sans-I/O protocol), which stops
    reading when told to, with a small receive buffer: what a frozen browser tab looks like."""

    def __init__(self, server: LiveServer) -> None:
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4_096)
        self.socket.settimeout(10)
        self.socket.connect(("127.0.0.1", server.port))
        self.protocol = ClientProtocol(parse_uri(server.ws_url), subprotocols=[Subprotocol("graphql-transport-ws")])
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        while self.protocol.state is State.CONNECTING:  # the handshake's response
            self.protocol.receive_data(self.socket.recv(65_536))
        self.protocol.events_received()

    def _flush(self) -> None:
        self.socket.sendall(b"".join(self.protocol.data_to_send()))

    def send(self, message: dict[str, Any]) -> None:
        self.protocol.send_text(json.dumps(message).encode())
        self._flush()

    def receive(self) -> dict[str, Any]:
        while True:
            for event in self.protocol.events_received():
                if isinstance(event, Frame):
                    return json.loads(event.data)
            self.protocol.receive_data(self.socket.recv(65_536))

    def read_to_the_end(self) -> tuple[int, bool]:
        """Reads what the server sent until the connection ends: (messages, whether it sent a close frame)."""
        messages = 0
        while True:
            try:
                data = self.socket.recv(65_536)
            except ConnectionResetError:
                data = b""
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            messages += sum(1 for event in self.protocol.events_received() if event.opcode == Opcode.TEXT)
            if not data:
                return messages, self.protocol.close_rcvd is not None


async def test_a_websocket_whose_client_stops_reading_is_dropped_and_the_others_get_everything(
    server: LiveServer,
) -> None:
    # A socket that never read held ~1,000 events for 40-45 s, in the kernel's buffers and then the
    # server's, until a keep-alive timed out.
    owner = await User.register(server, "Owner")
    project = await owner.execute('mutation { createProject(input: {name: "P"}) { project { id } } }')
    project_id = project["createProject"]["project"]["id"]
    descriptions = "subscription($p: ID!) { taskEvents(projectId: $p) { task { description } } }"
    create = """
    mutation($p: ID!, $t: String!, $d: String) {
      createTask(input: {projectId: $p, title: $t, description: $d}) { task { id } }
    }
    """

    async with Subscriber(server, owner.token, project_id) as reader:
        stalled = StalledClient(server)
        stalled.send({"type": "connection_init", "payload": {"authorization": f"Bearer {owner.token}"}})
        assert stalled.receive()["type"] == "connection_ack"
        stalled.send(
            {"id": "1", "type": "subscribe", "payload": {"query": descriptions, "variables": {"p": project_id}}}
        )
        await asyncio.sleep(0.5)  # both subscriptions live; from now on the stalled client reads nothing
        for n in range(40):
            await owner.execute(create, {"p": project_id, "t": f"t{n}", "d": "x" * 9_000})
        events = await reader.wait_for(40, timeout=30)
        await asyncio.sleep(WS_STALLED_SECONDS + SLACK)
        received, closed_cleanly = await asyncio.to_thread(stalled.read_to_the_end)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            scrape = (await http.get("/metrics")).text

    assert len(events) == 40  # the others got every event
    assert received < 40  # what fitted in the buffers before the client stopped reading, then the end
    assert not closed_cleanly  # aborted: no close frame could reach a client that did not read
    assert "taskql_websocket_slow_clients_dropped_total 1.0" in scrape
