"""Events waiting to be published, and jobs waiting to be queued, written in the same transaction as
the change that causes them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from taskql.db.client import Database


@dataclass(frozen=True)
class JobRequest:
    """A job to queue once the change is committed: the job's name, its arguments (JSON values) and
    its cause, what it is done once for (the job is idempotent per cause); by default the event that
    queues it."""

    function: str
    kwargs: dict[str, Any]
    cause: str | None = None


@dataclass(frozen=True)
class OutboxEvent:
    id: ObjectId
    channel: str | None  # the event log it is published to; None: it only queues jobs
    payload: dict[str, Any]
    jobs: tuple[JobRequest, ...] = field(default=())


async def insert_events(
    db: Database, events: Sequence[OutboxEvent], *, now: datetime, session: AsyncClientSession | None
) -> None:
    documents = [
        {
            "_id": e.id,
            "channel": e.channel,
            "payload": e.payload,
            "jobs": [{"function": job.function, "kwargs": job.kwargs, "cause": job.cause} for job in e.jobs],
            "created_at": now,
        }
        for e in events
    ]
    if documents:
        await db.outbox.insert_many(documents, ordered=True, session=session)


async def delete_events(db: Database, event_ids: Sequence[ObjectId]) -> None:
    if event_ids:
        await db.outbox.delete_many({"_id": {"$in": list(event_ids)}})


async def find_events_created_before(db: Database, before: datetime, *, limit: int) -> list[OutboxEvent]:
    cursor = db.outbox.find({"created_at": {"$lt": before}}).sort([("created_at", 1), ("_id", 1)]).limit(limit)
    return [
        OutboxEvent(
            id=doc["_id"],
            channel=doc["channel"],
            payload=doc["payload"],
            jobs=tuple(JobRequest(job["function"], job["kwargs"], job["cause"]) for job in doc.get("jobs", ())),
        )
        async for doc in cursor
    ]
