"""Refresh-token sessions: one document per issued refresh token, chained in families by rotation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument

from taskql.db.client import Database


@dataclass(frozen=True)
class SessionRecord:
    id: ObjectId
    family_id: ObjectId  # the login this token descends from; access tokens carry it as `sid`
    user_id: ObjectId
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> SessionRecord:
        return cls(
            id=doc["_id"],
            family_id=doc["family_id"],
            user_id=doc["user_id"],
            expires_at=doc["expires_at"],
            used_at=doc.get("used_at"),
            revoked_at=doc.get("revoked_at"),
        )


async def save_session(
    db: Database, *, family_id: ObjectId, user_id: ObjectId, token_hash: str, now: datetime, expires_at: datetime
) -> None:
    """Stores a refresh token's session, once: a rotation computed twice (two tabs presenting the
    same token together) stores the successor once and both get it."""
    fields = {
        "family_id": family_id,
        "user_id": user_id,
        "created_at": now,
        "expires_at": expires_at,
        "used_at": None,
        "revoked_at": None,
    }
    await db.sessions.update_one({"token_hash": token_hash}, {"$setOnInsert": fields}, upsert=True)


async def claim_session(db: Database, *, token_hash: str, now: datetime) -> SessionRecord | None:
    """Atomically mark a live, unused token as used: of two concurrent refreshes only one wins."""
    doc = await db.sessions.find_one_and_update(
        {"token_hash": token_hash, "used_at": None, "revoked_at": None, "expires_at": {"$gt": now}},
        {"$set": {"used_at": now}},
        return_document=ReturnDocument.AFTER,
    )
    return SessionRecord.from_doc(doc) if doc else None


async def find_session_by_hash(db: Database, *, token_hash: str) -> SessionRecord | None:
    doc = await db.sessions.find_one({"token_hash": token_hash})
    return SessionRecord.from_doc(doc) if doc else None


async def is_family_active(db: Database, *, family_id: ObjectId, user_id: ObjectId, now: datetime) -> bool:
    """A login stays valid while its family has a token that is neither revoked nor expired."""
    doc = await db.sessions.find_one(
        {"family_id": family_id, "user_id": user_id, "revoked_at": None, "expires_at": {"$gt": now}},
        projection={"_id": 1},
    )
    return doc is not None


async def revoke_family(db: Database, *, family_id: ObjectId, now: datetime) -> None:
    await db.sessions.update_many({"family_id": family_id, "revoked_at": None}, {"$set": {"revoked_at": now}})


async def revoke_user_sessions(
    db: Database, *, user_id: ObjectId, now: datetime, keep_family: ObjectId | None = None
) -> list[ObjectId]:
    """Revokes the user's logins (but `keep_family`); returns the families this call revoked."""
    query: dict[str, Any] = {"user_id": user_id, "revoked_at": None}
    if keep_family is not None:
        query["family_id"] = {"$ne": keep_family}
    await db.sessions.update_many(query, {"$set": {"revoked_at": now}})
    # Read back by the revocation's own time: a login started meanwhile is either in both or in neither.
    return await db.sessions.distinct("family_id", {"user_id": user_id, "revoked_at": now})


async def delete_expired_sessions(db: Database, *, before: datetime, limit: int) -> int:
    """Deletes up to `limit` sessions that expired before `before`; returns how many. (MongoDB's TTL
    monitor also removes them, once a minute, where it runs: sharded clusters and some hosted
    services throttle or pause it.)"""
    ids = [
        doc["_id"]
        async for doc in db.sessions.find({"expires_at": {"$lt": before}}, projection={"_id": 1}).limit(limit)
    ]
    if not ids:
        return 0
    return (await db.sessions.delete_many({"_id": {"$in": ids}, "expires_at": {"$lt": before}})).deleted_count
