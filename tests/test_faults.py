"""Faults as an operator meets them, on real server processes: Redis hung or gone while clients
write and subscribe. What must hold: writes answer within Redis's timeout and lose no event, and a
subscription refused for an outage says so with a code a client retries."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from gql.transport.exceptions import TransportQueryError

from tests.conftest import RedisServer
from tests.live import LiveServer, Subscriber, User
from tests.test_subscriptions import create_project, create_task

REDIS_TIMEOUT_SECONDS = 0.25  # the default


@pytest.fixture
def server(mongodb_uri: str, private_redis: RedisServer, tmp_path: Path) -> Iterator[LiveServer]:
    """A server process on Redis of its own, which the test hangs or stops."""
    live = LiveServer(
        mongodb_uri=mongodb_uri,
        redis_url=private_redis.url,
        database=f"test_{uuid.uuid4().hex[:12]}",
        data_dir=tmp_path,
    )
    live.start()
    yield live
    live.stop()


async def test_writes_answer_promptly_while_redis_hangs_and_their_events_arrive_once(
    server: LiveServer, private_redis: RedisServer
) -> None:
    # Redis hung (SIGSTOP): writes took 9-10 s, as publishing their events waited on a client with a
    # 10 s timeout. Now nothing on the write path waits for Redis longer than REDIS_TIMEOUT_SECONDS,
    # and an event Redis could not take is published by the outbox relay once Redis is back.
    owner = await User.register(server, "Owner")
    project_id = await create_project(owner)

    async with Subscriber(server, owner.token, project_id, after="0-0") as subscriber:
        await create_task(owner, project_id, "before")
        await subscriber.wait_for(1)
        private_redis.pause()
        took = []
        try:
            for n in range(6):
                started = time.monotonic()
                await create_task(owner, project_id, f"while hung {n}")
                took.append(time.monotonic() - started)
        finally:
            private_redis.resume()
        events = await subscriber.wait_for(7, timeout=30)

    assert max(took) < REDIS_TIMEOUT_SECONDS + 0.5, took
    titles = [event["task"]["title"] for event in events]
    assert titles[0] == "before"
    assert sorted(titles[1:]) == [f"while hung {n}" for n in range(6)]  # each once


async def test_subscribing_while_redis_is_down_is_refused_with_a_retryable_code(
    server: LiveServer, private_redis: RedisServer
) -> None:
    owner = await User.register(server, "Owner")
    project_id = await create_project(owner)

    private_redis.stop()
    try:
        async with Subscriber(server, owner.token, project_id) as refused:
            error = await refused.ended(timeout=10)
    finally:
        private_redis.start()
    async with Subscriber(server, owner.token, project_id, after="0-0") as resumed:
        await create_task(owner, project_id, "after the outage")
        events = await resumed.wait_for(1, timeout=20)

    assert isinstance(error, TransportQueryError)
    assert error.errors is not None
    assert error.errors[0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert error.errors[0]["extensions"]["retryAfter"] > 0
    assert [event["task"]["title"] for event in events] == ["after the outage"]
