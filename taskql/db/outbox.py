"""Events waiting to be published, written in the same transaction as the change they announce."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from taskql.db.client import Database


@dataclass(frozen=True)
class OutboxEvent:
    id: ObjectId
    channel: str
    payload: dict[str, Any]


async def insert_events(
    db: Database, events: Sequence[OutboxEvent], *, now: datetime, session: AsyncClientSession | None
) -> None:
    documents = [{"_id": e.id, "channel": e.channel, "payload": e.payload, "created_at": now} for e in events]
    if documents:
        await db.outbox.insert_many(documents, ordered=True, session=session)


async def delete_events(db: Database, event_ids: Sequence[ObjectId]) -> None:
    if event_ids:
        await db.outbox.delete_many({"_id": {"$in": list(event_ids)}})


async def find_events_created_before(db: Database, before: datetime, *, limit: int) -> list[OutboxEvent]:
    cursor = db.outbox.find({"created_at": {"$lt": before}}).sort([("created_at", 1), ("_id", 1)]).limit(limit)
    return [OutboxEvent(id=doc["_id"], channel=doc["channel"], payload=doc["payload"]) async for doc in cursor]
