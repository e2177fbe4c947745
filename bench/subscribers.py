"""A subscriber load generator for `bench.subscriptions`: `python -m bench.subscribers SPEC_FILE`.

One WebSocket per subscriber, speaking graphql-transport-ws directly (gql's client costs too much per
socket for a thousand of them), each subscribed to the `taskEvents` of one project. Every `next`
message is stamped with time.time() before it is parsed: the parent compares it with the time each
mutation was acknowledged, in another process on the same clock.

The parent drives it over stdin/stdout, one JSON object a line:

    (once every socket is open and subscribed)  -> {"open": n, "failed": ["why", ...]}
    "status N" -> {"received": events so far, "reached": subscribers that have the event of mutation N,
                   "ended": subscriptions that ended or never started}
    "stop"    -> {"stopped": true}, once the sockets are closed and the events written to the spec's output
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

# No `actor`: it would add an entity-cache read per subscriber per event; this measures the fan-out itself.
TASK_EVENTS = "subscription($p: ID!) { taskEvents(projectId: $p) { cursor kind taskId task { id title version } } }"
SUBSCRIPTION_ID = "1"
PROTOCOL = Subprotocol("graphql-transport-ws")
CONNECT_CONCURRENCY = 50  # handshakes in flight: each authenticates against the database
OPEN_TIMEOUT = 30.0  # per socket: handshake, connection_init and its ack
CLOSE_TIMEOUT = 10.0  # for all sockets together
TITLE_PREFIX = "m"  # mutation n sets a task's title to f"m{n}": the event names its mutation


@dataclass(frozen=True)
class Assignment:
    index: int  # the subscriber's number across all generator processes
    server: int  # index into ClientSpec.urls
    token: int  # index into ClientSpec.tokens


@dataclass(frozen=True)
class ClientSpec:
    urls: list[str]
    tokens: list[str]
    project_id: str
    subscribers: list[Assignment]
    compression: str | None  # "deflate" (what browsers negotiate) or None
    output: str

    def dump(self, path: Path) -> None:
        path.write_bytes(orjson.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> ClientSpec:
        raw = orjson.loads(path.read_bytes())
        return cls(**{**raw, "subscribers": [Assignment(**item) for item in raw["subscribers"]]})


@dataclass
class Subscriber:
    assignment: Assignment
    # (mutation number, receive time, cursor) of each event, in arrival order; -1 for a title not sent by the driver.
    events: list[tuple[int, float, str]] = field(default_factory=list)
    numbers: set[int] = field(default_factory=set)  # the mutation numbers among the events
    error: str | None = None  # why the subscription ended early or never started
    connection: ClientConnection | None = None
    stopping: bool = False

    def report(self) -> dict[str, Any]:
        return {
            "index": self.assignment.index,
            "server": self.assignment.server,
            "events": self.events,
            "error": self.error,
        }


async def _open(subscriber: Subscriber, spec: ClientSpec) -> ClientConnection:
    """A connected socket with the subscription sent; raises if the server refuses it."""
    url, token = spec.urls[subscriber.assignment.server], spec.tokens[subscriber.assignment.token]
    # proxy=None: loopback only, whatever the environment says.
    connection = await connect(url, subprotocols=[PROTOCOL], compression=spec.compression, proxy=None)
    try:
        await connection.send(
            orjson.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}).decode()
        )
        ack = orjson.loads(await connection.recv())
        if ack.get("type") != "connection_ack":
            raise RuntimeError(f"expected connection_ack, got {ack}")
        subscribe = {
            "id": SUBSCRIPTION_ID,
            "type": "subscribe",
            "payload": {"query": TASK_EVENTS, "variables": {"p": spec.project_id}},
        }
        await connection.send(orjson.dumps(subscribe).decode())
    except BaseException:
        await connection.close()
        raise
    return connection


def _mutation_number(title: str) -> int:
    number = title.removeprefix(TITLE_PREFIX)
    return int(number) if title.startswith(TITLE_PREFIX) and number.isdigit() else -1


async def _consume(subscriber: Subscriber) -> None:
    connection = subscriber.connection
    assert connection is not None
    try:
        async for raw in connection:
            received = time.time()  # before parsing: the parsing is the client's cost, not the delivery's
            message = orjson.loads(raw)
            kind = message.get("type")
            if kind == "next" and not message["payload"].get("errors"):
                event = message["payload"]["data"]["taskEvents"]
                number = _mutation_number(event["task"]["title"])
                subscriber.events.append((number, received, event["cursor"]))
                subscriber.numbers.add(number)
            elif kind == "ping":  # graphql-transport-ws keep-alive: answer as the protocol asks
                await connection.send('{"type":"pong"}')
            elif kind in ("next", "error", "complete"):
                subscriber.error = f"subscription ended by the server: {raw[:300]!r}"
                return
    except ConnectionClosed as exc:
        reason = f"connection closed: {exc}"
    else:
        reason = "connection closed by the server"
    if not subscriber.stopping:
        subscriber.error = reason


async def _open_all(subscribers: list[Subscriber], spec: ClientSpec) -> None:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def open_one(subscriber: Subscriber) -> None:
        async with gate:
            try:
                subscriber.connection = await asyncio.wait_for(_open(subscriber, spec), OPEN_TIMEOUT)
            except (OSError, TimeoutError, ConnectionClosed, RuntimeError) as exc:
                subscriber.error = f"could not subscribe: {exc!r}"

    await asyncio.gather(*(open_one(subscriber) for subscriber in subscribers))


async def _close_all(subscribers: list[Subscriber], consumers: list[asyncio.Task[None]]) -> None:
    for subscriber in subscribers:
        subscriber.stopping = True
    open_connections = [s.connection for s in subscribers if s.connection is not None]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.close() for c in open_connections)), CLOSE_TIMEOUT)
    for consumer in consumers:
        consumer.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(message).decode() + "\n")
    sys.stdout.flush()


async def _commands() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def run(spec: ClientSpec) -> None:
    subscribers = [Subscriber(assignment) for assignment in spec.subscribers]
    await _open_all(subscribers, spec)
    consumers = [asyncio.create_task(_consume(s)) for s in subscribers if s.connection is not None]
    _reply({"open": len(consumers), "failed": [s.error for s in subscribers if s.error]})
    commands = await _commands()
    # Until the parent says stop, or goes away (EOF): either way the sockets are closed and the events written.
    while (command := (await commands.readline()).decode().split())[:1] == ["status"]:
        number = int(command[1])
        _reply(
            {
                "received": sum(len(s.events) for s in subscribers),
                "reached": sum(1 for s in subscribers if number in s.numbers),
                "ended": sum(1 for s in subscribers if s.error),
            }
        )
    await _close_all(subscribers, consumers)
    Path(spec.output).write_bytes(orjson.dumps([s.report() for s in subscribers]))
    if command == ["stop"]:
        _reply({"stopped": True})


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m bench.subscribers SPEC_FILE (written by bench.subscriptions)")
    spec = ClientSpec.load(Path(sys.argv[1]))
    # A socket per subscriber: make sure the descriptors are there (the soft limit is often 1,024).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = len(spec.subscribers) + 100
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"{needed} file descriptors needed, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # uvloop (installed with uvicorn[standard]) for the same reason the server uses it: a cheaper event loop.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run(spec))


if __name__ == "__main__":
    main()
