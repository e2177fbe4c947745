"""Announcing committed writes to subscribers and queueing the jobs they cause, losing none and
repeating none.

A write stages its events in the outbox collection inside its own transaction, so an event is
stored exactly when its change is committed. After the commit, the writer publishes them to the
project's event log and queues their jobs; they are deleted from the outbox soon after, in
batches. When publishing cannot happen (Redis away, the process stopped, or the commit's outcome
unknown to the writer), the Outbox that every instance and worker runs publishes whatever has
waited longer than RELAY_GRACE, oldest first. The log refuses an event ID it already holds, so a
writer and a relay, or two relays, never publish an event twice; the queue holds one job per cause
while it waits, and every job is idempotent per cause (jobs/). An event the relay recovers arrives
after the events published meanwhile; its `task.version` shows which state is newer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any, Protocol

from bson import ObjectId
from opentelemetry.instrumentation.utils import suppress_instrumentation
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import PyMongoError

from taskql.cancellation import raise_if_cancelled
from taskql.clock import utcnow
from taskql.db.client import Database
from taskql.db.outbox import JobRequest, OutboxEvent, delete_events, find_events_created_before, insert_events
from taskql.db.tasks import TaskRecord
from taskql.events.broker import EventBroker
from taskql.outage import RedisOutage

logger = logging.getLogger("taskql.events")
RELAY_GRACE = timedelta(seconds=5)  # how long a writer has to publish its own events
RELAY_INTERVAL_SECONDS = 1.0
RELAY_BATCH = 100


class JobSink(Protocol):
    """Where the jobs of committed writes are queued (jobs/queue.py)."""

    async def enqueue(self, request: JobRequest, *, cause: str) -> None: ...


def jobs_only(*jobs: JobRequest) -> OutboxEvent:
    """An outbox entry that publishes nothing and queues `jobs` once its write is committed."""
    return OutboxEvent(id=ObjectId(), channel=None, payload={}, jobs=jobs)


def project_event(actor_id: ObjectId, project_id: ObjectId, kind: str, **fields: Any) -> OutboxEvent:
    payload = {"kind": kind, "project_id": project_id, "actor_id": actor_id, "at": utcnow(), **fields}
    return OutboxEvent(id=ObjectId(), channel=str(project_id), payload=payload)


def task_event(actor_id: ObjectId, kind: str, task: TaskRecord, changed_fields: list[str]) -> OutboxEvent:
    return project_event(
        actor_id,
        task.project_id,
        kind,
        task_id=task.id,
        changed_fields=changed_fields,
        task=None if kind == "TASK_DELETED" else task.to_doc(),
    )


async def stage(db: Database, session: AsyncClientSession | None, events: list[OutboxEvent]) -> list[OutboxEvent]:
    """Stores events with the write they announce (call inside its transaction); publish them after it."""
    await insert_events(db, events, now=utcnow(), session=session)
    return events


class Outbox:
    """Publishes events after their commit. In the background it deletes what was published from the
    outbox (in batches, after the writer has answered) and relays what was not."""

    def __init__(
        self,
        db: Database,
        broker: EventBroker,
        jobs: JobSink,
        redis_outage: RedisOutage,
        *,
        grace: timedelta = RELAY_GRACE,
    ) -> None:
        self._db = db
        self._broker = broker
        self._jobs = jobs
        self._redis_outage = redis_outage
        self._grace = grace
        self._published: list[ObjectId] = []
        self._task: asyncio.Task[None] | None = None

    async def publish(self, events: list[OutboxEvent]) -> int:
        """Publishes committed events in order and queues their jobs; returns how many events. While
        Redis fails (for at most REDIS_TIMEOUT_SECONDS, then not tried for a while: outage.py) the
        event and the ones after it (to keep their order) stay in the outbox for the relay."""
        for published, event in enumerate(events):
            ok, _ = await self._redis_outage.attempt(lambda event=event: self._announce(event), part="events")
            if not ok:
                return published
            self._published.append(event.id)
        return len(events)

    async def _announce(self, event: OutboxEvent) -> None:
        if event.channel is not None:
            await self._broker.publish(event.channel, event.payload, event_id=str(event.id))
        for number, job in enumerate(event.jobs):
            await self._jobs.enqueue(job, cause=job.cause or f"{event.id}:{number}")

    async def clear_published(self) -> None:
        published, self._published = self._published, []
        try:
            await delete_events(self._db, published)
        except PyMongoError:
            self._published += published  # next time; meanwhile a relay may publish them again: ignored
            raise

    async def relay_once(self) -> int:
        """Publishes up to RELAY_BATCH events older than the grace period; returns how many it published."""
        await self.clear_published()
        events = await find_events_created_before(self._db, utcnow() - self._grace, limit=RELAY_BATCH)
        if not events:
            return 0
        logger.info("relaying %d event(s) their writers did not publish", len(events))
        published = await self.publish(events)
        await self.clear_published()
        return published

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(PyMongoError):  # what stays is relayed (and ignored) by another instance
            await self.clear_published()

    async def _run(self) -> None:
        # Untraced: a trace per poll, every second on every instance, would bury the requests' traces.
        failing = False  # logged once per outage, not once a second
        with suppress_instrumentation():
            while True:
                raise_if_cancelled()  # stop() cancelled a relay whose MongoDB call swallowed it
                await asyncio.sleep(RELAY_INTERVAL_SECONDS)
                try:
                    while await self.relay_once() == RELAY_BATCH:
                        pass
                except PyMongoError as exc:
                    if not failing:
                        logger.warning("outbox unreachable, retrying every %.0f s: %s", RELAY_INTERVAL_SECONDS, exc)
                    failing = True
                else:
                    failing = False
