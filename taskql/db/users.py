from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError

from taskql.db.client import Database
from taskql.errors import Conflict


@dataclass(frozen=True)
class UserRecord:
    id: ObjectId
    email: str
    name: str
    password_hash: str
    role: str  # USER | ADMIN
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> UserRecord:
        return cls(
            id=doc["_id"],
            email=doc["email"],
            name=doc["name"],
            password_hash=doc["password_hash"],
            role=doc["role"],
            created_at=doc["created_at"],
            updated_at=doc["updated_at"],
        )


EMAIL_TAKEN = "An account with this email already exists."


async def insert_user(
    db: Database, *, email: str, name: str, password_hash: str, role: str, now: datetime
) -> UserRecord:
    doc = {
        "_id": ObjectId(),
        "email": email,
        "name": name,
        "password_hash": password_hash,
        "role": role,
        "created_at": now,
        "updated_at": now,
    }
    try:
        await db.users.insert_one(doc)
    except DuplicateKeyError as exc:
        raise Conflict(EMAIL_TAKEN, field=("input", "email")) from exc
    return UserRecord.from_doc(doc)


async def find_user_by_email(db: Database, *, email: str) -> UserRecord | None:
    doc = await db.users.find_one({"email": email})
    return UserRecord.from_doc(doc) if doc else None


async def find_users_by_ids(db: Database, *, ids: Sequence[ObjectId]) -> list[UserRecord]:
    return [UserRecord.from_doc(doc) async for doc in db.users.find({"_id": {"$in": list(ids)}})]


async def update_user(
    db: Database,
    *,
    user_id: ObjectId,
    changes: dict[str, Any],
    now: datetime,
    session: AsyncClientSession | None = None,
) -> UserRecord | None:
    try:
        doc = await db.users.find_one_and_update(
            {"_id": user_id},
            {"$set": {**changes, "updated_at": now}},
            return_document=True,
            session=session,
        )
    except DuplicateKeyError as exc:
        raise Conflict(EMAIL_TAKEN, field=("input", "email")) from exc
    return UserRecord.from_doc(doc) if doc else None


async def set_password_hash_if_unchanged(db: Database, *, user_id: ObjectId, old_hash: str, new_hash: str) -> None:
    """Rehash on login: only replaces the hash that was verified, never a password changed meanwhile."""
    await db.users.update_one({"_id": user_id, "password_hash": old_hash}, {"$set": {"password_hash": new_hash}})
