"""In-app notifications: one per user and cause, listed newest first."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from taskql.db.client import Database
from taskql.db.pagination import Page, PageRequest, SortKey, count, paginate

NEWEST_FIRST = SortKey(name="notifications.created", field="created_at", direction=-1)


@dataclass(frozen=True)
class NotificationRecord:
    id: ObjectId
    user_id: ObjectId
    kind: str  # TASK_ASSIGNED | TASK_DUE_SOON | TASK_OVERDUE | ADDED_TO_PROJECT | WEBHOOK_DISABLED
    project_id: ObjectId
    task_id: ObjectId | None
    actor_id: ObjectId | None  # None: the system (reminders)
    created_at: datetime
    read_at: datetime | None

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> NotificationRecord:
        return cls(
            id=doc["_id"],
            user_id=doc["user_id"],
            kind=doc["kind"],
            project_id=doc["project_id"],
            task_id=doc.get("task_id"),
            actor_id=doc.get("actor_id"),
            created_at=doc["created_at"],
            read_at=doc.get("read_at"),
        )

    def to_doc(self) -> dict[str, Any]:
        return {
            "_id": self.id,
            "user_id": self.user_id,
            "kind": self.kind,
            "project_id": self.project_id,
            "task_id": self.task_id,
            "actor_id": self.actor_id,
            "created_at": self.created_at,
            "read_at": self.read_at,
        }


async def insert_notification(db: Database, *, cause: str, record: NotificationRecord) -> NotificationRecord:
    """Stores the notification of `cause` once: a second insert for the same cause (a retried job,
    a second worker) returns the one stored first."""
    try:
        await db.notifications.insert_one({**record.to_doc(), "cause": cause})
    except DuplicateKeyError:
        stored = await db.notifications.find_one({"cause": cause})
        if stored is None:  # deleted since (read and past retention): nothing to notify again
            return record
        return NotificationRecord.from_doc(stored)
    return record


def _visible(user_id: ObjectId, project_ids: Sequence[ObjectId] | None, unread_only: bool) -> dict[str, Any]:
    """The user's notifications about the projects they can read (None: all, for admins)."""
    query: dict[str, Any] = {"user_id": user_id}
    if project_ids is not None:
        query["project_id"] = {"$in": list(project_ids)}
    if unread_only:
        query["read_at"] = None
    return query


async def page_notifications(
    db: Database, *, user_id: ObjectId, project_ids: Sequence[ObjectId] | None, unread_only: bool, page: PageRequest
) -> Page[NotificationRecord]:
    return await paginate(
        db.notifications,
        match=_visible(user_id, project_ids, unread_only),
        prefilter={"user_id": user_id},
        sort=NEWEST_FIRST,
        page=page,
        parse=NotificationRecord.from_doc,
    )


async def count_notifications(
    db: Database, *, user_id: ObjectId, project_ids: Sequence[ObjectId] | None, unread_only: bool
) -> int:
    return await count(
        db.notifications, match=_visible(user_id, project_ids, unread_only), prefilter={"user_id": user_id}
    )


async def set_stream_id(db: Database, *, notification_id: ObjectId, stream_id: str) -> None:
    """Where the notification is in its user's live stream: subscribing `after` it resumes there."""
    await db.notifications.update_one({"_id": notification_id}, {"$set": {"stream_id": stream_id}})


async def find_stream_position(
    db: Database, *, notification_id: ObjectId, user_id: ObjectId
) -> tuple[datetime, str | None] | None:
    """(created_at, stream_id) of one of the user's notifications; None if it is not theirs."""
    doc = await db.notifications.find_one(
        {"_id": notification_id, "user_id": user_id}, projection={"created_at": 1, "stream_id": 1}
    )
    return None if doc is None else (doc["created_at"], doc.get("stream_id"))


async def find_notifications_by_ids(db: Database, *, ids: Sequence[ObjectId]) -> list[NotificationRecord]:
    return [NotificationRecord.from_doc(doc) async for doc in db.notifications.find({"_id": {"$in": list(ids)}})]


async def mark_read(db: Database, *, user_id: ObjectId, ids: Sequence[ObjectId] | None, now: datetime) -> int:
    """Marks the user's unread notifications read: those in `ids`, or all of them (None); returns how many."""
    query: dict[str, Any] = {"user_id": user_id, "read_at": None}
    if ids is not None:
        query["_id"] = {"$in": list(ids)}
    return (await db.notifications.update_many(query, {"$set": {"read_at": now}})).modified_count


async def delete_read_before(db: Database, *, before: datetime, limit: int) -> int:
    """Deletes up to `limit` notifications read before `before`; returns how many."""
    ids = [
        doc["_id"]
        async for doc in db.notifications.find({"read_at": {"$lt": before}}, projection={"_id": 1}).limit(limit)
    ]
    if not ids:
        return 0
    return (await db.notifications.delete_many({"_id": {"$in": ids}, "read_at": {"$lt": before}})).deleted_count
