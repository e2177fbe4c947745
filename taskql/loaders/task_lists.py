"""What is read from a task list, in Redis, valid until the next write to a task of that list: a
project's pages (`page`), their `totalCount`s (`count`) and its `stats`; a user's `myTasks` pages
and counts (`mine_page`, `mine_count`).

A list belongs to a project or to an assignee, and each has a generation. Every committed write to
a task bumps its project's generation and its assignee's (before and after the write: a task
handed from one user to another leaves the first one's list) after the commit and before the
write answers; so does removing a member (their tasks are unassigned) or deleting a project.
An entry is stored under the generation read *before* its database read: a reader that raced a
write stores its entry under the old generation, where no one reads again, so a read that starts
after an acknowledged write never gets an entry without it. A read is one round trip (a script
returns each list's generation and the entry under it).

When Redis is unreachable, entries come from MongoDB and the outage is logged once (outage.py).
Bumps that failed meanwhile are kept by this process and made before it uses the cache again, so
its own later reads never see an entry from before those writes (as the entity cache does with
its markers, other instances can, between Redis's return and that replay).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal, TypeVar

from bson import ObjectId
from redis.asyncio import Redis

from taskql.codec import as_text, decode_document, encode_document
from taskql.db.pagination import Edge, Page
from taskql.db.tasks import TaskRecord, TaskStatsRecord
from taskql.loaders.cache import CacheStats
from taskql.outage import RedisOutage

Owner = Literal["project", "assignee"]  # whose list: a project's tasks, or the tasks assigned to a user
T = TypeVar("T")
FORMAT_VERSION = 2  # bump when a cached entry's shape (or a key's) changes
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
        self, client: Redis, *, enabled: bool, ttl_seconds: int, outage: RedisOutage, stats: CacheStats
    ) -> None:
        self._client = client
        self._read = client.register_script(_READ)
        self._enabled = enabled
        self._ttl = ttl_seconds
        self._stats = stats
        self._outage = outage
        self._unbumped: set[str] = set()  # generation keys

    @staticmethod
    def _generation_key(owner: Owner, owner_id: ObjectId) -> str:
        return f"taskql:tasklist:v{FORMAT_VERSION}:{owner}:{owner_id}"

    @staticmethod
    def _entry_name(kind: str, shape: Any) -> str:
        """An entry's name within its list: its kind and what it depends on (frozen dataclasses)."""
        return f"{kind}:{hashlib.sha256(repr(shape).encode()).hexdigest()[:32]}"

    async def _get(
        self, owner: Owner, kind: str, owner_ids: Sequence[ObjectId], shape: Any
    ) -> tuple[dict[ObjectId, str], dict[ObjectId, str]]:
        """Cached entries (as stored), and the generation of every list (none when the cache cannot be used)."""
        if not self._enabled:
            return {}, {}
        name = self._entry_name(kind, shape)
        ok, reply = await self._attempt(
            lambda: self._read(keys=[self._generation_key(owner, o) for o in owner_ids], args=[name])
        )
        if not ok or reply is None:
            return {}, {}
        entries, generations = {}, {}
        for index, owner_id in enumerate(owner_ids):
            generation, payload = reply[2 * index], reply[2 * index + 1]
            generations[owner_id] = as_text(generation)
            if payload:
                entries[owner_id] = as_text(payload)
        self._stats.record_lookups(f"task_{kind}", hits=len(entries), misses=len(owner_ids) - len(entries))
        return entries, generations

    async def _put(
        self,
        owner: Owner,
        kind: str,
        entries: dict[ObjectId, tuple[str, int | None]],
        shape: Any,
        generations: dict[ObjectId, str],
    ) -> None:
        """Stores entries read from the database, each with its time to live in seconds (None: the
        cache's), under the generations read before that read."""
        stored = [owner_id for owner_id in entries if owner_id in generations]
        if not stored:
            return
        name = self._entry_name(kind, shape)

        async def write() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                for owner_id in stored:
                    payload, ttl = entries[owner_id]
                    key = f"{self._generation_key(owner, owner_id)}:{generations[owner_id]}:{name}"
                    pipe.set(key, payload, ex=self._ttl if ttl is None else min(ttl, self._ttl))
                await pipe.execute()

        await self._attempt(write)

    async def read_through(
        self,
        owner: Owner,
        kind: str,
        owner_ids: Sequence[ObjectId],
        shape: Any,
        *,
        read: Callable[[list[ObjectId]], Awaitable[dict[ObjectId, T]]],
        encode: Callable[[T], str],
        decode: Callable[[str], T | None],
        expires_in: Callable[[T], int | None] = lambda _: None,
    ) -> dict[ObjectId, T]:
        """Each list's entry: from the cache, or by `read` from the database and stored. `decode`
        answers None for an entry no longer valid; `expires_in` the seconds an entry may be kept
        (None: the cache's time to live)."""
        cached, generations = await self._get(owner, kind, owner_ids, shape)
        found: dict[ObjectId, T] = {}
        for owner_id, payload in cached.items():
            value = decode(payload)
            if value is not None:
                found[owner_id] = value
        missing = [owner_id for owner_id in owner_ids if owner_id not in found]
        if missing:
            fresh = await read(missing)
            entries = {owner_id: (encode(value), expires_in(value)) for owner_id, value in fresh.items()}
            await self._put(owner, kind, entries, shape, generations)
            found.update(fresh)
        return found

    async def bump(self, *, projects: Iterable[ObjectId] = (), assignees: Iterable[ObjectId | None] = ()) -> None:
        """After a committed write to tasks of these projects and these assignees, before it answers:
        what was cached of their lists is old."""
        if not self._enabled:
            return
        self._unbumped.update(self._generation_key("project", project_id) for project_id in projects)
        self._unbumped.update(self._generation_key("assignee", user_id) for user_id in assignees if user_id)
        await self._attempt(_nothing)  # the bumps are owed: made first thing

    async def _attempt(self, operation: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        """(True, result) of a Redis call, after the bumps still owed; (False, None) while Redis fails."""
        return await self._outage.attempt(operation, part="task_lists", owed=self._bump_unbumped)

    async def _bump_unbumped(self) -> None:
        if not self._unbumped:
            return
        pending = list(self._unbumped)
        async with self._client.pipeline(transaction=False) as pipe:
            for key in pending:
                pipe.incr(key)
                pipe.expire(key, GENERATION_TTL_SECONDS)
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
