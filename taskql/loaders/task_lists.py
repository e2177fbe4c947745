"""What is read from a project's task list, in Redis, valid until the project's next task write:
its pages (`page`), their `totalCount`s (`count`) and the project's `stats`.

Every committed write to a project's tasks bumps the project's generation (an INCR) after the
commit and before the write answers. An entry is stored under the generation read *before* its
database read: a reader that raced a write stores its entry under the old generation, where no
one reads again, so a read that starts after an acknowledged write never gets an entry without it.
A read is one round trip (a script returns each project's generation and the entry under it).

When Redis is unreachable, pages come from MongoDB and the outage is logged once. Bumps that
failed meanwhile are kept by this process and replayed before it uses the cache again, so its
own later reads never see a page from before those writes (as the entity cache does with its
markers, other instances can, between Redis's return and that replay).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from bson import ObjectId
from redis.asyncio import Redis

from taskql.codec import as_text, decode_document, encode_document
from taskql.db.pagination import Edge, Page
from taskql.db.tasks import TaskRecord, TaskStatsRecord
from taskql.loaders.cache import CacheStats
from taskql.outage import RedisOutage

logger = logging.getLogger("taskql.task_lists")
T = TypeVar("T")
FORMAT_VERSION = 1  # bump when a cached page's shape changes
GENERATION_TTL_SECONDS = 7 * 86_400  # far beyond any page's: a generation never restarts under live pages

# KEYS: generation keys; ARGV[1]: the page's name. Per key: the generation, and the page under it.
_READ = """
local result = {}
for i, key in ipairs(KEYS) do
  local generation = redis.call('GET', key) or '0'
  result[2 * i - 1] = generation
  result[2 * i] = redis.call('GET', key .. ':' .. generation .. ':' .. ARGV[1]) or false
end
return result
"""


class TaskListCache:
    def __init__(
        self, client: Redis, *, enabled: bool, ttl_seconds: int, retry_seconds: float, stats: CacheStats
    ) -> None:
        self._client = client
        self._read = client.register_script(_READ)
        self._enabled = enabled
        self._ttl = ttl_seconds
        self._stats = stats
        self._outage = RedisOutage(
            logger, what="task list cache", meanwhile="reading lists from the database", retry_seconds=retry_seconds
        )
        self._unbumped: set[ObjectId] = set()

    @staticmethod
    def _generation_key(project_id: ObjectId) -> str:
        return f"taskql:tasklist:v{FORMAT_VERSION}:{project_id}"

    @staticmethod
    def entry_name(kind: str, shape: Any) -> str:
        """An entry's name within its project: its kind and what it depends on (frozen dataclasses)."""
        return f"{kind}:{hashlib.sha256(repr(shape).encode()).hexdigest()[:32]}"

    async def _get(
        self, kind: str, project_ids: Sequence[ObjectId], shape: Any
    ) -> tuple[dict[ObjectId, str], dict[ObjectId, str]]:
        """Cached entries (as stored), and the generation of every project (none when the cache cannot be used)."""
        if not self._enabled:
            return {}, {}
        name = self.entry_name(kind, shape)
        ok, reply = await self._attempt(
            lambda: self._read(keys=[self._generation_key(p) for p in project_ids], args=[name])
        )
        if not ok or reply is None:
            return {}, {}
        entries, generations = {}, {}
        for index, project_id in enumerate(project_ids):
            generation, payload = reply[2 * index], reply[2 * index + 1]
            generations[project_id] = as_text(generation)
            if payload:
                entries[project_id] = as_text(payload)
        self._stats.record_lookups(f"task_{kind}", hits=len(entries), misses=len(project_ids) - len(entries))
        return entries, generations

    async def _put(
        self, kind: str, entries: dict[ObjectId, tuple[str, int | None]], shape: Any, generations: dict[ObjectId, str]
    ) -> None:
        """Stores entries read from the database, each with its time to live in seconds (None: the
        cache's), under the generations read before that read."""
        stored = [project_id for project_id in entries if project_id in generations]
        if not stored:
            return
        name = self.entry_name(kind, shape)

        async def write() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                for project_id in stored:
                    payload, ttl = entries[project_id]
                    key = f"{self._generation_key(project_id)}:{generations[project_id]}:{name}"
                    pipe.set(key, payload, ex=self._ttl if ttl is None else min(ttl, self._ttl))
                await pipe.execute()

        await self._attempt(write)

    async def read_through(
        self,
        kind: str,
        project_ids: Sequence[ObjectId],
        shape: Any,
        *,
        decode: Callable[[str], T | None],
        read: Callable[[list[ObjectId]], Awaitable[dict[ObjectId, T]]],
        encode: Callable[[T], tuple[str, int | None]],
    ) -> dict[ObjectId, T]:
        """Each project's entry: from the cache, or by `read` from the database and stored. `decode`
        answers None for an entry no longer valid; `encode` gives a payload and its time to live
        (None: the cache's)."""
        cached, generations = await self._get(kind, project_ids, shape)
        found: dict[ObjectId, T] = {}
        for project_id, payload in cached.items():
            value = decode(payload)
            if value is not None:
                found[project_id] = value
        missing = [project_id for project_id in project_ids if project_id not in found]
        if missing:
            fresh = await read(missing)
            await self._put(kind, {p: encode(value) for p, value in fresh.items()}, shape, generations)
            found.update(fresh)
        return found

    async def bump(self, project_ids: Iterable[ObjectId]) -> None:
        """After a committed write to these projects' tasks, before it answers: their pages are old."""
        if not self._enabled:
            return
        self._unbumped.update(project_ids)
        await self._attempt(_nothing)  # the bumps are owed: made first thing

    async def _attempt(self, operation: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        """(True, result) of a Redis call, after the bumps still owed; (False, None) while Redis fails."""
        return await self._outage.attempt(operation, owed=self._bump_unbumped)

    async def _bump_unbumped(self) -> None:
        if not self._unbumped:
            return
        pending = list(self._unbumped)
        async with self._client.pipeline(transaction=False) as pipe:
            for project_id in pending:
                pipe.incr(self._generation_key(project_id))
                pipe.expire(self._generation_key(project_id), GENERATION_TTL_SECONDS)
            await pipe.execute()
        self._unbumped.difference_update(pending)


async def _nothing() -> None:
    return None


def encode_page(page: Page[TaskRecord]) -> str:
    return encode_document(
        {
            "edges": [[edge.cursor, edge.node.to_doc()] for edge in page.edges],
            "next": page.has_next_page,
            "previous": page.has_previous_page,
        }
    )


def decode_page(payload: str) -> Page[TaskRecord]:
    doc = decode_document(payload)
    return Page(
        edges=[Edge(cursor, TaskRecord.from_doc(node)) for cursor, node in doc["edges"]],
        has_next_page=doc["next"],
        has_previous_page=doc["previous"],
    )


def encode_stats(record: TaskStatsRecord) -> str:
    return encode_document(dataclasses.asdict(record))


def decode_stats(payload: str) -> TaskStatsRecord:
    return TaskStatsRecord(**decode_document(payload))
