"""Events written by the project's reader straight to every caught-up subscriber's socket, on a real
server: the graphql-transport-ws protocol stays exact (ids, order, `complete`), and what cannot be
written that way goes through the subscription's own task."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from tests.live import LiveServer, Subscriber, User
from tests.test_metrics import Scrape, live_scrape
from tests.test_subscriptions import create_project, create_task

SENT = "taskql_subscription_events_sent_total"
EVENTS = """
subscription($p: ID!, $a: String) {
  taskEvents(projectId: $p, after: $a) { cursor kind task { title } actor { name } }
}
"""


@pytest.fixture
def server(mongodb_uri: str, redis_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(
        mongodb_uri=mongodb_uri, redis_url=redis_url, database=f"test_{uuid.uuid4().hex[:12]}", data_dir=tmp_path
    )
    server.start()
    yield server
    server.stop()


class RawSocket:
    """One graphql-transport-ws connection, speaking the protocol message by message."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.received: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(message))

    async def subscribe(self, operation_id: str, project_id: str) -> None:
        payload = {"query": EVENTS, "variables": {"p": project_id, "a": "0-0"}}  # replayed from the start: no race
        await self.send({"id": operation_id, "type": "subscribe", "payload": payload})

    async def until(self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 15) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while not done(self.received):
                message = json.loads(await self.connection.recv())
                if message["type"] != "ping":
                    self.received.append(message)
        return self.received

    async def everything_sent_so_far(self) -> list[dict[str, Any]]:
        """Every message up to a `pong` to a ping sent now: the server wrote them all before the pong."""
        await self.send({"type": "ping"})
        return (await self.until(lambda received: bool(received) and received[-1]["type"] == "pong"))[:-1]

    def titles(self, operation_id: str) -> list[str]:
        return [
            m["payload"]["data"]["taskEvents"]["task"]["title"]
            for m in self.received
            if m.get("id") == operation_id and m["type"] == "next"
        ]


@contextlib.asynccontextmanager
async def raw_socket(server: LiveServer, token: str) -> AsyncIterator[RawSocket]:
    async with websockets.connect(server.ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]) as connection:
        socket = RawSocket(connection)
        await socket.send({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        assert json.loads(await connection.recv())["type"] == "connection_ack"
        yield socket


def moved(before: Scrape, after: Scrape, path: str) -> float:
    return after.value(SENT, path=path) - before.value(SENT, path=path)


async def test_caught_up_subscribers_are_written_to_by_the_reader_and_legacy_ones_by_their_task(
    server: LiveServer,
) -> None:
    owner = await User.register(server, "Owner")
    project_id = await create_project(owner)
    titles = [f"t{n}" for n in range(5)]

    async with (
        raw_socket(server, owner.token) as socket,
        Subscriber(server, owner.token, project_id, after="0-0", protocol="graphql-ws") as legacy,
    ):
        await socket.subscribe("a", project_id)
        await socket.subscribe("b", project_id)
        await create_task(owner, project_id, "probe")  # reaches all three: they are running and caught up
        await socket.until(lambda _: socket.titles("a") == socket.titles("b") == ["probe"])
        await legacy.wait_for(1)
        before = await live_scrape(server)
        for title in titles:
            await create_task(owner, project_id, title)
        await socket.until(lambda _: len(socket.titles("a")) == len(socket.titles("b")) == 6)
        legacy_events = await legacy.wait_for(6)
        after = await live_scrape(server)

    assert socket.titles("a") == socket.titles("b") == ["probe", *titles]
    nexts = [m for m in socket.received if m["type"] == "next"]
    assert {m["payload"]["data"]["taskEvents"]["actor"]["name"] for m in nexts} == {"Owner"}
    assert set(nexts[-1]) == {"id", "type", "payload"} and set(nexts[-1]["payload"]) == {"data"}
    assert [e["task"]["title"] for e in legacy_events] == ["probe", *titles]
    assert moved(before, after, "direct") == 2 * len(titles)  # the two graphql-transport-ws subscriptions
    assert moved(before, after, "task") == len(titles)  # the legacy protocol keeps Strawberry's path


async def test_after_complete_no_message_of_that_operation_is_written(server: LiveServer) -> None:
    owner = await User.register(server, "Owner")
    project_id = await create_project(owner)

    async with raw_socket(server, owner.token) as socket:
        await socket.subscribe("stopped", project_id)
        await socket.subscribe("running", project_id)
        await create_task(owner, project_id, "before")
        await socket.until(lambda _: socket.titles("stopped") == socket.titles("running") == ["before"])
        await socket.send({"id": "stopped", "type": "complete"})
        for title in ("after 1", "after 2", "after 3"):
            await create_task(owner, project_id, title)
        await socket.until(lambda _: len(socket.titles("running")) == 4)
        await socket.everything_sent_so_far()
        # The id is free again at once: a new subscription under it starts from its own cursor.
        await socket.subscribe("stopped", project_id)
        await socket.until(lambda _: len(socket.titles("stopped")) == 5)

    assert socket.titles("running") == ["before", "after 1", "after 2", "after 3"]
    # No `next` for "stopped" between its `complete` and its new subscription (which replays all 4).
    assert socket.titles("stopped") == ["before", "before", "after 1", "after 2", "after 3"]
    assert not [m for m in socket.received if m["type"] in ("complete", "error")]


async def test_a_subscriber_that_resumes_catches_up_through_its_task_then_joins_the_others(
    server: LiveServer,
) -> None:
    owner = await User.register(server, "Owner")
    project_id = await create_project(owner)
    for n in range(3):
        await create_task(owner, project_id, f"old {n}")

    async with raw_socket(server, owner.token) as socket:
        before = await live_scrape(server)
        await socket.subscribe("late", project_id)  # replays the 3 old events
        await socket.until(lambda _: len(socket.titles("late")) == 3)
        await create_task(owner, project_id, "new")
        await socket.until(lambda _: len(socket.titles("late")) == 4)
        after = await live_scrape(server)

    assert socket.titles("late") == ["old 0", "old 1", "old 2", "new"]
    assert (moved(before, after, "task"), moved(before, after, "direct")) == (3, 1)
