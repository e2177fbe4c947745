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


@dataclass(frozen=True)
class MemberRecord:
    user_id: ObjectId
    role: str  # OWNER | EDITOR | VIEWER
    added_at: datetime


@dataclass(frozen=True)
class ProjectRecord:
    id: ObjectId
    name: str
    description: str
    owner_id: ObjectId
    members: tuple[MemberRecord, ...]
    created_at: datetime
    updated_at: datetime
    version: int  # +1 on every change; orders cache writes
    # The events some active webhook of the project wants (kept by services/webhooks.py): a task
    # write looks for webhooks only when its event is among them.
    webhook_events: tuple[str, ...] = ()

    def role_of(self, user_id: ObjectId) -> str | None:
        return next((m.role for m in self.members if m.user_id == user_id), None)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> ProjectRecord:
        return cls(
            id=doc["_id"],
            name=doc["name"],
            description=doc["description"],
            owner_id=doc["owner_id"],
            members=tuple(MemberRecord(m["user_id"], m["role"], m["added_at"]) for m in doc["members"]),
            created_at=doc["created_at"],
            updated_at=doc["updated_at"],
            version=doc.get("version", 0),
            webhook_events=tuple(doc.get("webhook_events", ())),
        )

    def to_doc(self) -> dict[str, Any]:
        return {
            "_id": self.id,
            "name": self.name,
            "description": self.description,
            "owner_id": self.owner_id,
            "members": [{"user_id": m.user_id, "role": m.role, "added_at": m.added_at} for m in self.members],
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "version": self.version,
            "webhook_events": list(self.webhook_events),
        }


PROJECTS_NEWEST_FIRST = SortKey(name="projects.created", field="created_at", direction=-1)


def _member_doc(user_id: ObjectId, role: str, now: datetime) -> dict[str, Any]:
    return {"user_id": user_id, "role": role, "added_at": now}


async def insert_project(
    db: Database,
    *,
    name: str,
    description: str,
    owner_id: ObjectId,
    now: datetime,
    session: AsyncClientSession | None = None,
) -> ProjectRecord:
    doc = {
        "_id": ObjectId(),
        "name": name,
        "description": description,
        "owner_id": owner_id,
        "members": [_member_doc(owner_id, "OWNER", now)],
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }
    await db.projects.insert_one(doc, session=session)
    return ProjectRecord.from_doc(doc)


async def find_projects_by_ids(db: Database, *, ids: Sequence[ObjectId]) -> list[ProjectRecord]:
    return [ProjectRecord.from_doc(doc) async for doc in db.projects.find({"_id": {"$in": list(ids)}})]


def _visible_to(member_id: ObjectId | None) -> dict[str, Any]:
    return {} if member_id is None else {"members.user_id": member_id}


async def page_projects(db: Database, *, member_id: ObjectId | None, page: PageRequest) -> Page[ProjectRecord]:
    """Projects with `member_id` as a member, or every project when it is None (admins)."""
    return await paginate(
        db.projects, match=_visible_to(member_id), sort=PROJECTS_NEWEST_FIRST, page=page, parse=ProjectRecord.from_doc
    )


async def count_projects(db: Database, *, member_id: ObjectId | None) -> int:
    return await count(db.projects, match=_visible_to(member_id))


async def project_ids_of_member(db: Database, *, user_id: ObjectId) -> list[ObjectId]:
    return [doc["_id"] async for doc in db.projects.find({"members.user_id": user_id}, projection={"_id": 1})]


async def share_a_project(db: Database, *, user_ids: Sequence[ObjectId]) -> bool:
    """Whether one project has all these users as members. One equality per user on the array's
    path, not `$all` (which SecantusDB answers with nothing for two or more ids)."""
    query = {"$and": [{"members.user_id": user_id} for user_id in user_ids]}
    return await db.projects.find_one(query, projection={"_id": 1}) is not None


async def update_project(
    db: Database,
    *,
    project_id: ObjectId,
    changes: dict[str, Any],
    now: datetime,
    session: AsyncClientSession | None = None,
) -> ProjectRecord | None:
    doc = await db.projects.find_one_and_update(
        {"_id": project_id},
        {"$set": {**changes, "updated_at": now}, "$inc": {"version": 1}},
        return_document=ReturnDocument.AFTER,
        session=session,
    )
    return ProjectRecord.from_doc(doc) if doc else None


async def set_webhook_events(db: Database, *, project_id: ObjectId, events: Sequence[str]) -> ProjectRecord | None:
    """Not a change of the project that its users see: updated_at stays."""
    doc = await db.projects.find_one_and_update(
        {"_id": project_id},
        {"$set": {"webhook_events": sorted(events)}, "$inc": {"version": 1}},
        return_document=ReturnDocument.AFTER,
    )
    return ProjectRecord.from_doc(doc) if doc else None


async def add_member(
    db: Database,
    *,
    project_id: ObjectId,
    user_id: ObjectId,
    role: str,
    now: datetime,
    session: AsyncClientSession | None = None,
) -> ProjectRecord | None:
    """Adds the member unless already present (checked in the same atomic update); None if not added."""
    doc = await db.projects.find_one_and_update(
        {"_id": project_id, "members.user_id": {"$ne": user_id}},
        {"$push": {"members": _member_doc(user_id, role, now)}, "$set": {"updated_at": now}, "$inc": {"version": 1}},
        return_document=ReturnDocument.AFTER,
        session=session,
    )
    return ProjectRecord.from_doc(doc) if doc else None


async def set_member_role(
    db: Database,
    *,
    project_id: ObjectId,
    user_id: ObjectId,
    role: str,
    now: datetime,
    session: AsyncClientSession | None = None,
) -> ProjectRecord | None:
    doc = await db.projects.find_one_and_update(
        {"_id": project_id, "members.user_id": user_id},
        # An array filter, not the positional `$`: SecantusDB's findAndModify rejects `$` (MongoDB takes both).
        {"$set": {"members.$[member].role": role, "updated_at": now}, "$inc": {"version": 1}},
        array_filters=[{"member.user_id": user_id}],
        return_document=ReturnDocument.AFTER,
        session=session,
    )
    return ProjectRecord.from_doc(doc) if doc else None


async def remove_member(
    db: Database, *, project_id: ObjectId, user_id: ObjectId, now: datetime, session: AsyncClientSession | None = None
) -> ProjectRecord | None:
    doc = await db.projects.find_one_and_update(
        {"_id": project_id, "members.user_id": user_id},
        {"$pull": {"members": {"user_id": user_id}}, "$set": {"updated_at": now}, "$inc": {"version": 1}},
        return_document=ReturnDocument.AFTER,
        session=session,
    )
    return ProjectRecord.from_doc(doc) if doc else None


async def delete_project(db: Database, *, project_id: ObjectId, session: AsyncClientSession | None = None) -> bool:
    result = await db.projects.delete_one({"_id": project_id}, session=session)
    return result.deleted_count == 1
