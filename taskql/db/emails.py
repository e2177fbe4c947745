"""Emails by cause: what keeps a retried job, or a second worker, from sending an email twice.

An attempt claims the cause's email before sending it and records it sent after; a failed send
releases the claim. A claim whose worker died mid-send lapses after its lease, and the job's next
attempt sends again, under the same Message-ID (jobs/messages.py), so that a mail system which did
take the first copy can drop the second.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from taskql.db.client import Database


class Claim(Enum):
    CLAIMED = "claimed"  # send it now
    SENT = "sent"  # sent before: nothing to do
    BUSY = "busy"  # another attempt is sending it: try again after its lease


async def claim_email(db: Database, *, cause: str, user_id: ObjectId, now: datetime, lease: timedelta) -> Claim:
    try:
        await db.emails.insert_one(
            {"_id": cause, "user_id": user_id, "state": "sending", "lease_until": now + lease, "created_at": now}
        )
        return Claim.CLAIMED
    except DuplicateKeyError:
        pass
    lapsed = await db.emails.find_one_and_update(
        {"_id": cause, "state": "sending", "lease_until": {"$lte": now}}, {"$set": {"lease_until": now + lease}}
    )
    if lapsed is not None:
        return Claim.CLAIMED
    stored = await db.emails.find_one({"_id": cause}, projection={"state": 1})
    if stored is None:  # released meanwhile
        return await claim_email(db, cause=cause, user_id=user_id, now=now, lease=lease)
    return Claim.SENT if stored["state"] == "sent" else Claim.BUSY


async def release_email(db: Database, *, cause: str) -> None:
    """The send failed: the next attempt claims it afresh."""
    await db.emails.delete_one({"_id": cause, "state": "sending"})


async def mark_sent(db: Database, *, cause: str, now: datetime) -> None:
    await db.emails.update_one(
        {"_id": cause}, {"$set": {"state": "sent", "sent_at": now}, "$unset": {"lease_until": 1}}
    )


async def delete_sent_before(db: Database, *, before: datetime, limit: int) -> int:
    """Forgets up to `limit` emails sent before `before` (their jobs are long finished); returns how many."""
    ids = [doc["_id"] async for doc in db.emails.find({"sent_at": {"$lt": before}}, projection={"_id": 1}).limit(limit)]
    if not ids:
        return 0
    return (await db.emails.delete_many({"_id": {"$in": ids}})).deleted_count
