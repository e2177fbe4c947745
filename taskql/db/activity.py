from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from taskql.db.client import Database
from taskql.db.pagination import Page, PageRequest, SortKey, count_children, paginate_children


@dataclass(frozen=True)
class ActivityRecord:
    id: ObjectId
    project_id: ObjectId
    task_id: ObjectId | None
    actor_id: ObjectId
    kind: str
    changed_fields: tuple[str, ...]
    at: datetime

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> ActivityRecord:
        return cls(
            id=doc["_id"],
            project_id=doc["project_id"],
            task_id=doc.get("task_id"),
            actor_id=doc["actor_id"],
            kind=doc["kind"],
            changed_fields=tuple(doc["changed_fields"]),
            at=doc["at"],
        )


OLDEST_FIRST = SortKey(name="activity.at", field="at", direction=1)


async def append_event(
    db: Database,
    *,
    project_id: ObjectId,
    task_id: ObjectId | None,
    actor_id: ObjectId,
    kind: str,
    changed_fields: Sequence[str],
    at: datetime,
    session: AsyncClientSession | None = None,
) -> ActivityRecord:
    doc = {
        "_id": ObjectId(),
        "project_id": project_id,
        "task_id": task_id,
        "actor_id": actor_id,
        "kind": kind,
        "changed_fields": list(changed_fields),
        "at": at,
    }
    await db.activity.insert_one(doc, session=session)
    return ActivityRecord.from_doc(doc)


async def page_activity_by_task(
    db: Database, *, task_ids: Sequence[ObjectId], page: PageRequest
) -> dict[ObjectId, Page[ActivityRecord]]:
    """The same page of each task's trail, in one command."""
    return await paginate_children(
        db.tasks,
        db.activity,
        parent_ids=task_ids,
        foreign_field="task_id",
        match={},
        sort=OLDEST_FIRST,
        page=page,
        parse=ActivityRecord.from_doc,
    )


async def count_activity_by_task(db: Database, *, task_ids: Sequence[ObjectId]) -> dict[ObjectId, int]:
    return await count_children(db.activity, parent_ids=task_ids, foreign_field="task_id", match={})
