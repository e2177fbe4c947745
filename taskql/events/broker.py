"""Task events: published to a per-project log, fanned out to this process's subscribers.

One reader task per process per active project follows the project's log (a blocking stream read)
and hands each entry to the local subscribers' bounded buffers. A subscriber that falls behind by
more than its buffer is dropped with an error instead of slowing the others down. A subscription
that resumes from a cursor first replays the log after it, then continues live; entries are
de-duplicated at the seam by their (increasing) IDs.

A subscriber that has caught up can be served by the reader itself (a `Delivery`): while its
task waits with nothing buffered, the reader renders each entry once for all the waiting
subscribers with the same `Delivery.key` and writes it to each of them, and no subscriber's task
wakes. Waking a task per subscriber per event (and the generators and hooks it runs through) was
most of what a delivery cost. Whatever the reader cannot write that way (an entry the subscriber
must act on, a result that cannot be shared, a socket that is not keeping up) goes to the
subscriber's buffer as before, and its task takes over until it has caught up again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Hashable
from typing import Any, Protocol

from opentelemetry.instrumentation.utils import suppress_instrumentation
from redis.exceptions import RedisError

from taskql import metrics
from taskql.cancellation import raise_if_cancelled
from taskql.errors import BadUserInput, DomainError
from taskql.events.store import READ_BLOCK_SECONDS, ZERO_ID, Entry, EventStore, parse_id

logger = logging.getLogger("taskql.events")
REPLAY_BATCH = 500
CLOCK_SKEW_MS = 60_000  # between this server's clock and Redis's, which stamps the cursors
_SENT_DIRECTLY = metrics.EVENTS_SENT.labels("direct")
RECONNECT_DELAY_SECONDS = 0.5


class CursorExpired(DomainError):
    code = "CURSOR_EXPIRED"


class SubscriberTooSlow(DomainError):
    code = "SUBSCRIBER_TOO_SLOW"


class Delivery(Protocol):
    """How the reader serves a subscriber whose task is waiting, without waking it."""

    @property
    def key(self) -> Hashable:
        """Deliveries with equal keys render every entry to the same bytes."""

    def wants(self, entry: Entry) -> bool | None:
        """True: render and send it; False: nothing to send (skip it); None: the subscriber's task must see it."""

    async def render(self, entry: Entry) -> bytes | None:
        """What to send for the entry, or None when it cannot be shared (each task then handles it)."""

    def send(self, rendered: bytes) -> bool:
        """Writes without waiting; False when it could not (the entry then goes to the task)."""


class _Buffer:
    """A subscriber's bounded inbox, filled by the project's reader; `direct` while its task waits."""

    def __init__(self, size: int, last: tuple[int, int]) -> None:
        self.entries: deque[Entry] = deque()
        self.size = size
        self.overflowed = False
        self.waiter: asyncio.Future[None] | None = None  # while its task waits (a Future, not an Event: 760 bytes less)
        self.last = last  # the ID of the last entry handed over (by the task or directly): none twice
        self.direct: Delivery | None = None

    def deliver(self, entry: Entry) -> None:
        self.direct = None  # the task takes over until it has caught up
        if len(self.entries) >= self.size:
            self.overflowed = True
        else:
            self.entries.append(entry)
        self.wake()

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class _ProjectReader:
    """Follows one project's log from `start` and delivers every entry to the local buffers."""

    def __init__(self, store: EventStore, channel: str, start: str) -> None:
        self.buffers: set[_Buffer] = set()
        self.position = start
        self._store = store
        self._channel = channel
        self._stopped = False
        self._task = asyncio.create_task(self._run(), name=f"events:{channel}")

    async def _run(self) -> None:
        # Untraced: its blocking reads would sit, for as long as the reader lives, in the trace of the
        # subscription that happened to start it.
        with suppress_instrumentation():
            while not self._stopped:
                try:
                    entries = await self._store.wait_after(self._channel, self.position, READ_BLOCK_SECONDS)
                except RedisError as exc:
                    # Redis restarting: retry from the same position, so nothing written to the log is lost.
                    logger.warning("event log of %s unreachable, retrying: %s", self._channel, exc)
                    await asyncio.sleep(RECONNECT_DELAY_SECONDS)
                    continue
                for entry in entries:
                    self.position = entry.id
                    await self._hand_over(entry)

    async def _hand_over(self, entry: Entry) -> None:
        entry_id = parse_id(entry.id)
        groups: dict[Hashable, list[_Buffer]] = {}
        for buffer in list(self.buffers):
            delivery = buffer.direct
            if delivery is None:
                buffer.deliver(entry)
            elif entry_id > buffer.last:  # else already handed over, by a replay
                wanted = delivery.wants(entry)
                if wanted is None:
                    buffer.deliver(entry)
                elif wanted:
                    groups.setdefault(delivery.key, []).append(buffer)
                else:
                    buffer.last = entry_id
        for group in groups.values():
            await self._send_directly(entry, entry_id, group)

    @staticmethod
    async def _send_directly(entry: Entry, entry_id: tuple[int, int], group: list[_Buffer]) -> None:
        delivery = group[0].direct
        rendered = None
        if delivery is not None:
            try:
                rendered = await delivery.render(entry)
            except Exception:  # each task executes it itself and reports what went wrong
                logger.exception("rendering an event for %d subscribers failed", len(group))
        sent = 0
        for buffer in group:
            # A subscriber may have ended or left while the entry rendered: its delivery is gone.
            delivery = buffer.direct
            if rendered is not None and delivery is not None and delivery.send(rendered):
                buffer.last = entry_id
                sent += 1
            else:
                buffer.deliver(entry)
        _SENT_DIRECTLY.inc(sent)

    async def stop(self) -> None:
        # A blocking read being cancelled may surface as a connection error: the flag ends the loop anyway.
        self._stopped = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(self._task, READ_BLOCK_SECONDS)


class Subscription:
    """What one subscriber receives: the replay after its cursor, then live entries, in order, once each."""

    def __init__(self, store: EventStore, channel: str, buffer: _Buffer) -> None:
        self._store = store
        self._channel = channel
        self._buffer = buffer
        self._replay: deque[Entry] | None = None  # only while resuming: a deque is 760 bytes
        self._ended = False
        self.end_reason: str | None = None
        self._end_timer: asyncio.TimerHandle | None = None
        self._delivery: Delivery | None = None

    def deliver_directly(self, delivery: Delivery) -> None:
        """While next() waits with nothing buffered, the reader sends the entries `delivery` wants itself."""
        self._delivery = delivery

    def end_after(self, seconds: float, reason: str) -> None:
        """After `seconds`, next() returns None (one timer, rather than a timeout on every wait)."""
        self._end_timer = asyncio.get_running_loop().call_later(seconds, self.end, reason)

    def end(self, reason: str) -> None:
        """From now on next() returns None; `end_reason` says why."""
        if not self._ended:
            self._ended, self.end_reason = True, reason
            self._buffer.direct = None
            self._buffer.wake()

    def close(self) -> None:
        if self._end_timer is not None:
            self._end_timer.cancel()

    async def replay_after(self, cursor: str) -> None:
        try:
            after = parse_id(cursor)
        except ValueError as exc:
            raise BadUserInput("`after` is not a cursor of this subscription.", field=("after",)) from exc
        trimmed_through, newest = await self._store.window(self._channel)
        if after > parse_id(newest) and after[0] > time.time() * 1000 + CLOCK_SKEW_MS:
            # No event can have had it (IDs are Redis's clock in ms): waiting for what follows it
            # would swallow every live event until then.
            raise BadUserInput(
                "`after` is ahead of this project's events: pass a cursor you received.", field=("after",)
            )
        # Ahead of the newest event, yet past: the log lost what followed it (Redis emptied); so did
        # retention, for a cursor older than what it dropped. Either way: refetch.
        if after > parse_id(newest) or parse_id(trimmed_through) > after:
            raise CursorExpired(
                "Events after this cursor are no longer kept: refetch the data, then subscribe without `after`."
            )
        self._buffer.last = after
        self._replay = replay = deque()
        while True:
            batch = await self._store.read_after(self._channel, cursor, REPLAY_BATCH)
            replay.extend(batch)
            if len(batch) < REPLAY_BATCH:
                return
            cursor = batch[-1].id

    async def next(self) -> Entry | None:
        """The next entry, waiting for it; None once the subscription has ended (end, end_after)."""
        buffer = self._buffer
        while not self._ended:
            if self._replay:
                source = self._replay
            else:
                self._replay = None  # replayed (or not resuming at all)
                source = buffer.entries
            if source:
                entry = source.popleft()
                entry_id = parse_id(entry.id)
                if entry_id > buffer.last:
                    buffer.last = entry_id
                    return entry
                continue
            if buffer.overflowed:
                raise SubscriberTooSlow("Too many events were waiting for this subscriber: resume with `after`.")
            raise_if_cancelled()  # a subscriber that left while its subscription started
            buffer.waiter = asyncio.get_running_loop().create_future()
            buffer.direct = self._delivery  # caught up: the reader serves it until it hands something over
            try:
                await buffer.waiter
            finally:
                buffer.direct = buffer.waiter = None
        return None


class EventBroker:
    def __init__(self, store: EventStore, *, buffer_size: int) -> None:
        self._store = store
        self._buffer_size = buffer_size
        self._readers: dict[str, _ProjectReader] = {}
        self._starting: dict[str, asyncio.Lock] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    async def publish(self, channel: str, payload: dict[str, Any], *, event_id: str) -> str | None:
        """Appends to the channel's log; an event ID already appended is ignored (None)."""
        return await self._store.append(channel, payload, event_id=event_id)

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        """A subscription to `channel`, live from now; call replay_after() on it to resume from a cursor."""
        reader = await self._reader(channel)
        # Registered as of the reader's position, with no await between: every entry after it
        # reaches the buffer; the replay (if any) covers the rest.
        buffer = _Buffer(self._buffer_size, last=parse_id(reader.position))
        reader.buffers.add(buffer)
        subscription = Subscription(self._store, channel, buffer)
        try:
            yield subscription
        finally:
            subscription.close()
            reader.buffers.discard(buffer)
            if not reader.buffers and self._readers.get(channel) is reader:
                del self._readers[channel]
                # In the background: a blocked stream read can take a while to give up, and the
                # subscriber's error or completion must not wait for it.
                stopping = asyncio.create_task(reader.stop())
                self._stopping.add(stopping)
                stopping.add_done_callback(self._stopping.discard)

    async def _reader(self, channel: str) -> _ProjectReader:
        async with self._starting.setdefault(channel, asyncio.Lock()):
            reader = self._readers.get(channel)
            if reader is None:
                start = await self._store.last_id(channel)
                reader = self._readers[channel] = _ProjectReader(self._store, channel, start or ZERO_ID)
            return reader

    async def close(self) -> None:
        await asyncio.gather(*(reader.stop() for reader in self._readers.values()), *self._stopping)
        self._readers.clear()
        await self._store.close()
