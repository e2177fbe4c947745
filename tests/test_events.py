"""The event broker and its store (Redis Streams), in process: ordering, resume, retention and slow subscribers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Hashable

import pytest
from redis.asyncio import Redis

from taskql.errors import BadUserInput
from taskql.events.broker import CursorExpired, EventBroker, SubscriberTooSlow, Subscription
from taskql.events.store import Entry, EventStore, parse_id
from tests.conftest import next_within

pytestmark = pytest.mark.redis  # also run against Redis itself (Makefile)


@pytest.fixture
async def stores(redis_url: str) -> AsyncIterator[Callable[..., EventStore]]:
    """Makes stores on the test's Redis database, keeping `max_length` events per channel."""
    made: list[EventStore] = []

    def make(max_length: int = 1_000) -> EventStore:
        client = Redis.from_url(redis_url, socket_timeout=10)
        made.append(EventStore(client, client, max_length=max_length, max_age_seconds=3_600))
        return made[-1]

    yield make
    for store in made:
        await store.close()


@pytest.fixture
def store(stores: Callable[..., EventStore]) -> EventStore:
    return stores()


def channel(request: pytest.FixtureRequest) -> str:
    return f"test-{request.node.name}-{id(request)}"


async def publish(broker: EventBroker, name: str, n: int) -> str:
    entry_id = await broker.publish(name, {"n": n}, event_id=f"event-{n}")
    assert entry_id is not None
    return entry_id


async def drain(subscription: Subscription, count: int) -> list[int]:
    numbers = []
    for _ in range(count):
        entry = await next_within(subscription, 5)
        assert entry is not None, f"only {len(numbers)} of {count} arrived"
        numbers.append(entry.payload["n"])
    return numbers


async def test_resuming_replays_then_continues_live_without_gap_or_duplicate(
    store: EventStore, request: pytest.FixtureRequest
) -> None:
    broker = EventBroker(store, buffer_size=100)
    name = channel(request)
    ids = [await publish(broker, name, n) for n in range(5)]

    async with broker.subscribe(name) as subscription:

        async def publish_more() -> None:
            for n in range(5, 10):
                await publish(broker, name, n)

        publishing = asyncio.create_task(publish_more())
        await subscription.replay_after(ids[0])  # races the publications: the seam
        await publishing
        received = await drain(subscription, 9)

    assert received == list(range(1, 10))
    assert await next_within(subscription, 0.2) is None


async def test_an_ended_subscription_delivers_nothing_more(store: EventStore, request: pytest.FixtureRequest) -> None:
    broker = EventBroker(store, buffer_size=100)
    name = channel(request)
    async with broker.subscribe(name) as subscription:
        subscription.end_after(0.1, reason="expired")
        await publish(broker, name, 0)
        assert await drain(subscription, 1) == [0]
        waiting = asyncio.create_task(subscription.next())  # no timeout of its own: the end wakes it
        assert await asyncio.wait_for(waiting, 5) is None
        await publish(broker, name, 1)
        assert await subscription.next() is None


async def test_an_event_appended_twice_is_kept_once(store: EventStore, request: pytest.FixtureRequest) -> None:
    name = channel(request)
    first = await store.append(name, {"n": 0}, event_id="same")
    second = await store.append(name, {"n": 0}, event_id="same")
    other = await store.append(name, {"n": 1}, event_id="other")

    assert first is not None and other is not None
    assert second is None
    assert [entry.payload["n"] for entry in await store.read_after(name, "0-0", 10)] == [0, 1]


async def test_cursors_increase(store: EventStore, request: pytest.FixtureRequest) -> None:
    ids = [await store.append(channel(request), {"n": n}, event_id=str(n)) for n in range(50)]

    assert [parse_id(i) for i in ids] == sorted(parse_id(i) for i in ids)
    assert len(set(ids)) == 50


async def test_a_slow_subscriber_is_dropped_without_delaying_the_others(
    store: EventStore, request: pytest.FixtureRequest
) -> None:
    broker = EventBroker(store, buffer_size=3)
    name = channel(request)

    async with broker.subscribe(name) as slow, broker.subscribe(name) as fast:
        received = []
        for n in range(10):
            await publish(broker, name, n)
            received += await drain(fast, 1)

        assert received == list(range(10))
        assert await drain(slow, 3) == [0, 1, 2]
        with pytest.raises(SubscriberTooSlow):
            await next_within(slow, 1)


async def test_a_cursor_older_than_the_retained_events_is_refused(
    stores: Callable[..., EventStore], request: pytest.FixtureRequest
) -> None:
    # Redis trims a stream by whole nodes of 100 entries (MAXLEN ~): 300 events over a limit of 100 drop some.
    store = stores(max_length=100)
    broker = EventBroker(store, buffer_size=10)
    name = channel(request)
    ids = [await publish(broker, name, n) for n in range(300)]
    trimmed_through, _ = await store.window(name)
    dropped = sum(parse_id(i) <= parse_id(trimmed_through) for i in ids)

    async with broker.subscribe(name) as subscription:
        with pytest.raises(CursorExpired):
            await subscription.replay_after(ids[0])
        await subscription.replay_after(trimmed_through)  # nothing after it is missing
        assert await drain(subscription, 300 - dropped) == list(range(dropped, 300))
    assert 100 <= dropped <= 200


async def test_a_cursor_ahead_of_the_log_is_refused_and_one_the_log_lost_must_refetch(
    store: EventStore, request: pytest.FixtureRequest
) -> None:
    broker = EventBroker(store, buffer_size=10)
    name = channel(request)
    newest = parse_id(await publish(broker, name, 0))
    lost = f"{newest[0]}-{newest[1] + 5}"  # issued before Redis lost the log's end: events may be missing

    async with broker.subscribe(name) as subscription:
        with pytest.raises(BadUserInput) as ahead:
            await subscription.replay_after("99999999999999-0")  # no event can have had it
        with pytest.raises(CursorExpired):
            await subscription.replay_after(lost)
        await subscription.replay_after(f"{newest[0]}-{newest[1]}")  # the newest itself: nothing missed
        await publish(broker, name, 1)
        assert await drain(subscription, 1) == [1]  # and live events still arrive

    assert ahead.value.code == "BAD_USER_INPUT" and "ahead" in ahead.value.message


@pytest.mark.parametrize("cursor", ["", "abc", "12", "1-x", "-1-0"])
async def test_a_malformed_cursor_is_bad_user_input(
    cursor: str, store: EventStore, request: pytest.FixtureRequest
) -> None:
    broker = EventBroker(store, buffer_size=10)

    async with broker.subscribe(channel(request)) as subscription:
        with pytest.raises(BadUserInput):
            await subscription.replay_after(cursor)


async def test_a_subscriber_whose_cancellation_was_swallowed_does_not_wait_for_events(
    store: EventStore, request: pytest.FixtureRequest
) -> None:
    # On Python 3.11 asyncio.wait_for, which the MongoDB driver awaits while a subscription starts,
    # returns its result instead of raising when the cancel arrives as the result does.
    broker = EventBroker(store, buffer_size=10)
    async with broker.subscribe(channel(request)) as subscription:

        async def subscriber() -> None:
            asyncio.current_task().cancel()  # type: ignore[union-attr]
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0)  # swallowed, as wait_for does
            await subscription.next()

        task = asyncio.create_task(subscriber())
        done, _ = await asyncio.wait([task], timeout=5)

    assert task in done and task.cancelled()


async def consume(subscription: Subscription, log: list[tuple[str, int]]) -> None:
    """What a subscriber's task does: takes each entry the reader handed to it instead of sending it."""
    while (entry := await subscription.next()) is not None:
        log.append(("task", entry.payload["n"]))


class RecordingDelivery:
    """A subscriber served by the reader (the broker's Delivery), recording what reaches it and how."""

    renders: dict[Hashable, list[int]]  # per key: the entries rendered, shared by every delivery of that key

    def __init__(
        self, key: Hashable, renders: dict[Hashable, list[int]], received: list[tuple[str, int]], **rules: set[int]
    ) -> None:
        self.key = key
        self.renders = renders
        self.received = received
        self.rules = rules  # entries it must see in its task, skips, cannot render, refuses to send

    def wants(self, entry: Entry) -> bool | None:
        n = entry.payload["n"]
        return None if n in self.rules.get("task", ()) else n not in self.rules.get("skip", ())

    async def render(self, entry: Entry) -> bytes | None:
        n = entry.payload["n"]
        self.renders.setdefault(self.key, []).append(n)
        await asyncio.sleep(0)  # rendering may wait (a field that loads something)
        return None if n in self.rules.get("unrenderable", ()) else str(n).encode()

    def send(self, rendered: bytes) -> bool:
        if int(rendered) in self.rules.get("refuse", ()):
            return False
        self.received.append(("direct", int(rendered)))
        return True


async def test_caught_up_subscribers_are_served_by_the_reader_once_per_key_and_the_rest_by_their_tasks(
    store: EventStore, request: pytest.FixtureRequest
) -> None:
    broker = EventBroker(store, buffer_size=10)
    name = channel(request)
    renders: dict[Hashable, list[int]] = {}
    received: dict[str, list[tuple[str, int]]] = {"a": [], "b": [], "c": []}
    deliveries = {
        "a": RecordingDelivery("shared", renders, received["a"], refuse={2}, unrenderable={4}),
        "b": RecordingDelivery("shared", renders, received["b"], skip={6}, unrenderable={4}),
        "c": RecordingDelivery("own", renders, received["c"], task={3}, unrenderable={4}),
    }

    async with contextlib.AsyncExitStack() as stack:
        consumers = []
        for who, delivery in deliveries.items():
            subscription = await stack.enter_async_context(broker.subscribe(name))
            subscription.deliver_directly(delivery)
            consumers.append(asyncio.create_task(consume(subscription, received[who])))
        for n in range(7):
            await publish(broker, name, n)
            expected = {"a": n + 1, "b": min(n + 1, 6), "c": n + 1}
            async with asyncio.timeout(5):  # each consumer is waiting again before the next entry
                while any(len(received[who]) < count for who, count in expected.items()):
                    await asyncio.sleep(0.01)
        for consumer in consumers:
            consumer.cancel()

    direct, task = "direct", "task"
    assert received["a"] == [(direct, 0), (direct, 1), (task, 2), (direct, 3), (task, 4), (direct, 5), (direct, 6)]
    assert received["b"] == [(direct, 0), (direct, 1), (direct, 2), (direct, 3), (task, 4), (direct, 5)]
    assert received["c"] == [(direct, 0), (direct, 1), (direct, 2), (task, 3), (task, 4), (direct, 5), (direct, 6)]
    # One render per entry per key, whatever the number of subscribers; none for an entry nobody is sent.
    assert renders == {"shared": [0, 1, 2, 3, 4, 5, 6], "own": [0, 1, 2, 4, 5, 6]}


async def test_a_subscriber_served_by_the_reader_gets_nothing_twice_across_its_replay(
    store: EventStore, request: pytest.FixtureRequest
) -> None:
    broker = EventBroker(store, buffer_size=100)
    name = channel(request)
    first = await publish(broker, name, 0)
    received: list[tuple[str, int]] = []

    async with broker.subscribe(name) as subscription:
        subscription.deliver_directly(RecordingDelivery("k", {}, received))
        for n in range(1, 4):  # reach its buffer from the reader, and its replay from the log
            await publish(broker, name, n)
        await subscription.replay_after(first)
        consumer = asyncio.create_task(consume(subscription, received))
        for n in range(4, 6):
            await publish(broker, name, n)
        async with asyncio.timeout(5):
            while len(received) < 5:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # anything twice would have come by now
        consumer.cancel()

    assert received == [("task", 1), ("task", 2), ("task", 3), ("direct", 4), ("direct", 5)]
