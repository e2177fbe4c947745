from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError

from taskql.db.client import Database
from taskql.errors import Conflict

# The password hash never leaves this module inside a record: records are cached and passed
# around freely, the hash is read only by the two code paths that verify passwords.
_NO_HASH = {"password_hash": 0}


@dataclass(frozen=True)
class UserRecord:
    id: ObjectId
    email: str
    name: str
    role: str  # USER | ADMIN
    created_at: datetime
    updated_at: datetime
    version: int  # +1 on every change; orders cache writes
    email_notifications: bool = True  # emails about tasks (account emails are always sent)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> UserRecord:
        return cls(
            id=doc["_id"],
            email=doc["email"],
            name=doc["name"],
            role=doc["role"],
            created_at=doc["created_at"],
            updated_at=doc["updated_at"],
            version=doc.get("version", 0),
            email_notifications=doc.get("email_notifications", True),
        )

    def to_doc(self) -> dict[str, Any]:
        return {
            "_id": self.id,
            "email": self.email,
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "version": self.version,
            "email_notifications": self.email_notifications,
        }


@dataclass(frozen=True)
class Credentials:
    user: UserRecord
    password_hash: str


EMAIL_TAKEN = "An account with this email already exists."


async def insert_user(
    db: Database,
    *,
    email: str,
    name: str,
    password_hash: str,
    role: str,
    now: datetime,
    session: AsyncClientSession | None = None,
) -> UserRecord:
    doc = {
        "_id": ObjectId(),
        "email": email,
        "name": name,
        "password_hash": password_hash,
        "role": role,
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }
    try:
        await db.users.insert_one(doc, session=session)
    except DuplicateKeyError as exc:
        raise Conflict(EMAIL_TAKEN, field=("input", "email")) from exc
    return UserRecord.from_doc(doc)


async def find_credentials(
    db: Database, *, email: str | None = None, user_id: ObjectId | None = None
) -> Credentials | None:
    doc = await db.users.find_one({"email": email} if email is not None else {"_id": user_id})
    return Credentials(UserRecord.from_doc(doc), doc["password_hash"]) if doc else None


async def find_user_by_email(db: Database, *, email: str) -> UserRecord | None:
    doc = await db.users.find_one({"email": email}, projection=_NO_HASH)
    return UserRecord.from_doc(doc) if doc else None


async def find_user(db: Database, *, user_id: ObjectId) -> UserRecord | None:
    doc = await db.users.find_one({"_id": user_id}, projection=_NO_HASH)
    return UserRecord.from_doc(doc) if doc else None


async def find_users_by_ids(db: Database, *, ids: Sequence[ObjectId]) -> list[UserRecord]:
    return [UserRecord.from_doc(doc) async for doc in db.users.find({"_id": {"$in": list(ids)}}, projection=_NO_HASH)]


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
            {"$set": {**changes, "updated_at": now}, "$inc": {"version": 1}},
            projection=_NO_HASH,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
    except DuplicateKeyError as exc:
        raise Conflict(EMAIL_TAKEN, field=("input", "email")) from exc
    return UserRecord.from_doc(doc) if doc else None


async def set_password_hash_if_unchanged(db: Database, *, user_id: ObjectId, old_hash: str, new_hash: str) -> None:
    """Rehash on login: only replaces the hash that was verified, never a password changed meanwhile."""
    await db.users.update_one({"_id": user_id, "password_hash": old_hash}, {"$set": {"password_hash": new_hash}})
