"""Webhooks of a project, and their deliveries: one per event and webhook, in commit order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession

from taskql.db.client import Database
from taskql.db.pagination import Page, PageRequest, SortKey, count, paginate

NEWEST_FIRST = SortKey(name="webhook_deliveries.created", field="created_at", direction=-1)
PENDING, SUCCEEDED, FAILED = "PENDING", "SUCCEEDED", "FAILED"


@dataclass(frozen=True)
class WebhookRecord:
    id: ObjectId
    project_id: ObjectId
    url: str
    events: tuple[str, ...]
    description: str
    active: bool
    secret_nonce: str  # the secret is derived from it (auth/webhook_signatures.py)
    consecutive_failures: int
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> WebhookRecord:
        return cls(
            id=doc["_id"],
            project_id=doc["project_id"],
            url=doc["url"],
            events=tuple(doc["events"]),
            description=doc.get("description", ""),
            active=doc["active"],
            secret_nonce=doc["secret_nonce"],
            consecutive_failures=doc.get("consecutive_failures", 0),
            disabled_reason=doc.get("disabled_reason"),
            created_at=doc["created_at"],
            updated_at=doc["updated_at"],
        )


@dataclass(frozen=True)
class DeliveryRecord:
    id: ObjectId
    webhook_id: ObjectId
    project_id: ObjectId
    event_id: ObjectId
    event: str  # TASK_CREATED | TASK_UPDATED | TASK_DELETED
    body: bytes  # exactly what is posted, every attempt
    status: str  # PENDING | SUCCEEDED | FAILED
    attempts: int
    response_status: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> DeliveryRecord:
        return cls(
            id=doc["_id"],
            webhook_id=doc["webhook_id"],
            project_id=doc["project_id"],
            event_id=doc["event_id"],
            event=doc["event"],
            body=bytes(doc["body"]),
            status=doc["status"],
            attempts=doc.get("attempts", 0),
            response_status=doc.get("response_status"),
            last_error=doc.get("last_error"),
            next_attempt_at=doc.get("next_attempt_at"),
            delivered_at=doc.get("delivered_at"),
            created_at=doc["created_at"],
        )


async def insert_webhook(db: Database, *, values: dict[str, Any], now: datetime) -> WebhookRecord:
    doc = {"_id": ObjectId(), **values, "consecutive_failures": 0, "created_at": now, "updated_at": now}
    await db.webhooks.insert_one(doc)
    return WebhookRecord.from_doc(doc)


async def find_webhook(db: Database, *, webhook_id: ObjectId) -> WebhookRecord | None:
    doc = await db.webhooks.find_one({"_id": webhook_id})
    return WebhookRecord.from_doc(doc) if doc else None


async def project_webhooks(db: Database, *, project_id: ObjectId) -> list[WebhookRecord]:
    cursor = db.webhooks.find({"project_id": project_id}).sort([("created_at", 1), ("_id", 1)])
    return [WebhookRecord.from_doc(doc) async for doc in cursor]


async def subscribed_webhooks(
    db: Database, *, project_id: ObjectId, event: str, session: AsyncClientSession | None
) -> list[WebhookRecord]:
    """The project's active webhooks that want `event` (read in the writing transaction)."""
    cursor = db.webhooks.find({"project_id": project_id, "active": True, "events": event}, session=session)
    return [WebhookRecord.from_doc(doc) async for doc in cursor]


async def update_webhook(
    db: Database, *, webhook_id: ObjectId, changes: dict[str, Any], now: datetime
) -> WebhookRecord | None:
    doc = await db.webhooks.find_one_and_update(
        {"_id": webhook_id}, {"$set": {**changes, "updated_at": now}}, return_document=ReturnDocument.AFTER
    )
    return WebhookRecord.from_doc(doc) if doc else None


async def delete_webhook(db: Database, *, webhook_id: ObjectId) -> bool:
    deleted = (await db.webhooks.delete_one({"_id": webhook_id})).deleted_count == 1
    await db.webhook_deliveries.delete_many({"webhook_id": webhook_id})
    return deleted


async def delete_project_webhooks(
    db: Database, *, project_id: ObjectId, session: AsyncClientSession | None = None
) -> None:
    await db.webhooks.delete_many({"project_id": project_id}, session=session)
    await db.webhook_deliveries.delete_many({"project_id": project_id}, session=session)


async def record_outcome(
    db: Database, *, webhook_id: ObjectId, succeeded: bool, disable_after: int, now: datetime
) -> WebhookRecord | None:
    """Counts consecutive failed deliveries; the one that reaches `disable_after` disables the
    webhook (returned then, to tell its owners; None otherwise)."""
    if succeeded:  # (usually nothing to write)
        await db.webhooks.update_one(
            {"_id": webhook_id, "consecutive_failures": {"$gt": 0}}, {"$set": {"consecutive_failures": 0}}
        )
        return None
    doc = await db.webhooks.find_one_and_update(
        {"_id": webhook_id}, {"$inc": {"consecutive_failures": 1}}, return_document=ReturnDocument.AFTER
    )
    if doc is None or not doc["active"] or doc["consecutive_failures"] < disable_after:
        return None
    return await disable_webhook(
        db, webhook_id=webhook_id, reason=f"{disable_after} deliveries in a row failed", now=now
    )


async def disable_webhook(db: Database, *, webhook_id: ObjectId, reason: str, now: datetime) -> WebhookRecord | None:
    """Disables an active webhook; the record if this call did it."""
    doc = await db.webhooks.find_one_and_update(
        {"_id": webhook_id, "active": True},
        {"$set": {"active": False, "disabled_reason": reason, "updated_at": now}},
        return_document=ReturnDocument.AFTER,
    )
    return WebhookRecord.from_doc(doc) if doc else None


async def insert_deliveries(
    db: Database, deliveries: Sequence[dict[str, Any]], *, session: AsyncClientSession | None
) -> None:
    if deliveries:
        await db.webhook_deliveries.insert_many(list(deliveries), ordered=True, session=session)


def new_delivery(
    webhook_id: ObjectId, project_id: ObjectId, event_id: ObjectId, event: str, body: bytes, now: datetime
) -> dict[str, Any]:
    return {
        "_id": ObjectId(),
        "webhook_id": webhook_id,
        "project_id": project_id,
        "event_id": event_id,
        "event": event,
        "body": body,
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


async def pending_deliveries(db: Database, *, webhook_id: ObjectId, limit: int) -> list[DeliveryRecord]:
    """The deliveries that go next, in order: the webhook's deliveries go out one at a time, oldest
    first. Read a batch at once: SecantusDB sorts all of a webhook's pending deliveries per query."""
    cursor = db.webhook_deliveries.find({"webhook_id": webhook_id, "status": PENDING}).sort(
        [("created_at", 1), ("_id", 1)]
    )
    return [DeliveryRecord.from_doc(doc) async for doc in cursor.limit(limit)]


async def older_pending_exists(db: Database, *, delivery: DeliveryRecord) -> bool:
    """Whether a delivery of the webhook older than this one is pending: another write's, committed
    after the batch it is in was read. An index range that usually holds nothing: cheap even where
    sorting the backlog is not (`$lt` alone: with an `$ne` on _id beside it SecantusDB scans them all)."""
    doc = await db.webhook_deliveries.find_one(
        {"webhook_id": delivery.webhook_id, "status": PENDING, "created_at": {"$lt": delivery.created_at}},
        projection={"_id": 1},
    )
    return doc is not None


async def start_attempt(db: Database, *, delivery: DeliveryRecord, lease_until: datetime) -> bool:
    """Counts an attempt before it is made (a worker that dies mid-request has used it), pushing its
    next try past the lease; False if another worker started one meanwhile."""
    result = await db.webhook_deliveries.update_one(
        {"_id": delivery.id, "status": PENDING, "attempts": delivery.attempts},
        {"$inc": {"attempts": 1}, "$set": {"next_attempt_at": lease_until}},
    )
    return result.modified_count == 1


async def finish_attempt(
    db: Database,
    *,
    delivery_id: ObjectId,
    status: str,
    response_status: int | None,
    error: str | None,
    next_attempt_at: datetime | None,
    now: datetime,
) -> None:
    changes: dict[str, Any] = {
        "status": status,
        "response_status": response_status,
        "last_error": error,
        "next_attempt_at": next_attempt_at,
    }
    if status == SUCCEEDED:
        changes["delivered_at"] = now
    await db.webhook_deliveries.update_one({"_id": delivery_id}, {"$set": changes})


async def webhooks_due(db: Database, *, now: datetime, limit: int) -> list[ObjectId]:
    """Webhooks with a delivery due now (a retry's time has come, or its drain was missed)."""
    rows = await (
        await db.webhook_deliveries.aggregate(
            [
                {"$match": {"status": PENDING, "next_attempt_at": {"$lte": now}}},
                {"$group": {"_id": "$webhook_id"}},
                {"$limit": limit},
            ]
        )
    ).to_list()
    return [row["_id"] for row in rows]


async def page_deliveries(db: Database, *, webhook_id: ObjectId, page: PageRequest) -> Page[DeliveryRecord]:
    return await paginate(
        db.webhook_deliveries,
        match={"webhook_id": webhook_id},
        prefilter={"webhook_id": webhook_id},
        sort=NEWEST_FIRST,
        page=page,
        parse=DeliveryRecord.from_doc,
    )


async def count_deliveries(db: Database, *, webhook_id: ObjectId) -> int:
    return await count(db.webhook_deliveries, match={"webhook_id": webhook_id})


async def find_delivery(db: Database, *, delivery_id: ObjectId) -> DeliveryRecord | None:
    doc = await db.webhook_deliveries.find_one({"_id": delivery_id})
    return DeliveryRecord.from_doc(doc) if doc else None


async def delete_finished_before(db: Database, *, before: datetime, limit: int) -> int:
    """Forgets up to `limit` deliveries made (or failed for good) before `before`; returns how many."""
    query = {"created_at": {"$lt": before}, "status": {"$in": [SUCCEEDED, FAILED]}}
    ids = [doc["_id"] async for doc in db.webhook_deliveries.find(query, projection={"_id": 1}).limit(limit)]
    if not ids:
        return 0
    return (await db.webhook_deliveries.delete_many({"_id": {"$in": ids}})).deleted_count
