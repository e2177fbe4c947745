"""Ended logins, checked on every request without a database read.

MongoDB's sessions stay the record (db/sessions.py). A revocation (logout, logoutAll, a refresh
token used twice, a password change) also writes a marker per ended login (token family) into
Redis before the mutation answers, kept as long as an access token of that login can still be
valid. Each request then asks Redis whether its login has a marker: one round trip, the same
answer on every instance.

When Redis cannot answer, the check reads MongoDB instead (and keeps to it for `retry_seconds`
before asking Redis again), so a revocation made during an outage holds as well. A marker that
could not be written is retried in the background until it is; until then this process checks
MongoDB for every request. Left open: while Redis answers the other instances but failed the
writer's one write, those instances accept the ended login's access tokens until the retry lands
(every `retry_seconds`) or the tokens expire.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from datetime import datetime

from bson import ObjectId
from redis.asyncio import Redis

from taskql.db import sessions as sessions_db
from taskql.db.client import Database
from taskql.outage import RedisOutage

CLOCK_SKEW_SECONDS = 60  # markers outlive the tokens they end by this much
SESSION_ENDED = "The session has ended; sign in again."


class Revocations:
    def __init__(
        self, redis: Redis, db: Database, *, access_ttl_seconds: int, outage: RedisOutage, retry_seconds: float
    ) -> None:
        self._redis = redis
        self._db = db
        self._ttl = access_ttl_seconds + CLOCK_SKEW_SECONDS
        self._retry_seconds = retry_seconds
        self._unwritten: set[ObjectId] = set()
        self._retrying: asyncio.Task[None] | None = None
        self._outage = outage

    @staticmethod
    def key(family_id: ObjectId) -> str:
        return f"taskql:revoked:{family_id}"

    async def revoke(self, family_ids: Iterable[ObjectId]) -> None:
        """Marks logins as ended (call after MongoDB records it, before answering)."""
        self._unwritten.update(family_ids)
        await self._write_unwritten()
        if self._unwritten and (self._retrying is None or self._retrying.done()):
            self._retrying = asyncio.create_task(self._retry(), name="revocations")

    async def is_active(self, *, family_id: ObjectId, user_id: ObjectId, now: datetime) -> bool:
        """Whether the login may still be used: from Redis, or MongoDB when Redis cannot be trusted."""
        if not self._unwritten:
            ok, revoked = await self._outage.attempt(
                lambda: self._redis.exists(self.key(family_id)), part="session_checks"
            )
            if ok:
                return not revoked
        return await sessions_db.is_family_active(self._db, family_id=family_id, user_id=user_id, now=now)

    async def close(self) -> None:
        if self._retrying is not None:
            self._retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrying

    async def _write_unwritten(self) -> None:
        pending = list(self._unwritten)
        if not pending:
            return

        async def write() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                for family_id in pending:
                    pipe.set(self.key(family_id), 1, ex=self._ttl)
                await pipe.execute()

        ok, _ = await self._outage.attempt(write, part="session_checks")
        if ok:  # otherwise retried (and the outage logged once, by RedisOutage)
            self._unwritten.difference_update(pending)

    async def _retry(self) -> None:
        while self._unwritten:
            await asyncio.sleep(self._retry_seconds)
            await self._write_unwritten()
