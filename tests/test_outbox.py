"""Events are stored with the write they announce, so one Redis could not take is published later, once."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

import pytest

from taskql.clock import utcnow
from taskql.db.outbox import OutboxEvent, find_events_created_before, insert_events
from taskql.events.broker import EventBroker
from taskql.schema.relay import decode_id
from taskql.services.common import Runtime
from taskql.services.outbox import Outbox
from taskql.settings import Settings
from tests.conftest import GraphQLClient, RedisServer, create_task, next_within

pytestmark = pytest.mark.redis  # also run against Redis itself (Makefile)


@pytest.fixture
def settings(settings: Settings, private_redis: RedisServer) -> Settings:
    return settings.model_copy(update={"redis_url": private_redis.url})


async def outbox(runtime: Runtime) -> list[OutboxEvent]:
    return await find_events_created_before(runtime.db, utcnow() + timedelta(days=1), limit=100)


async def logged_events(broker: EventBroker, project_id: str) -> list[dict[str, Any]]:
    async with broker.subscribe(str(decode_id(project_id, "Project"))) as subscription:
        await subscription.replay_after("0-0")
        payloads = []
        while (entry := await next_within(subscription, 0.2)) is not None:
            payloads.append(entry.payload)
    return payloads


async def test_an_event_redis_could_not_take_is_relayed_once_it_is_back(
    app: Any, owner_client: GraphQLClient, project_id: str, private_redis: RedisServer
) -> None:
    runtime: Runtime = app.state.runtime
    await create_task(owner_client, project_id, title="published at once")
    await runtime.outbox.clear_published()  # what the instance does every second
    assert await outbox(runtime) == []

    private_redis.stop()  # a restart: what the log held is gone too
    task = await create_task(owner_client, project_id, title="written while Redis is down")
    [waiting] = await outbox(runtime)
    private_redis.start()
    while runtime.redis_outage.waiting:  # after a failure Redis is left alone for CACHE_RETRY_SECONDS
        await asyncio.sleep(0.05)
    # grace 0: the instance's own relay waits 5 s
    relay = Outbox(runtime.db, runtime.events, runtime.jobs, runtime.redis_outage, grace=timedelta(0))

    assert await relay.relay_once() == 1
    assert await outbox(runtime) == []
    [event] = await logged_events(runtime.events, project_id)
    assert (event["kind"], event["task"]["title"]) == ("TASK_CREATED", "written while Redis is down")
    assert event["task_id"] == decode_id(task["id"], "Task")

    # Published, but not cleared (the writer stopped in between): relaying it again adds nothing.
    await insert_events(runtime.db, [waiting], now=utcnow(), session=None)
    assert await relay.relay_once() == 1
    assert await outbox(runtime) == []
    assert len(await logged_events(runtime.events, project_id)) == 1


async def test_the_relay_stops_even_when_a_database_call_swallowed_its_cancellation(app: Any) -> None:
    # Python 3.11's asyncio.wait_for, which the MongoDB driver awaits, can return its result instead
    # of raising when the cancel arrives as the command completes: here that happens once, at will.
    runtime: Runtime = app.state.runtime
    relay = Outbox(runtime.db, runtime.events, runtime.jobs, runtime.redis_outage)
    swallowing = asyncio.Event()
    relay_once = relay.relay_once

    async def relay_once_swallowing_a_cancel() -> int:
        swallowing.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(5)
        return await relay_once()

    relay.relay_once = relay_once_swallowing_a_cancel  # type: ignore[method-assign]
    relay.start()
    await asyncio.wait_for(swallowing.wait(), 5)
    stopped = asyncio.create_task(relay.stop())
    done, _ = await asyncio.wait([stopped], timeout=5)

    assert stopped in done
