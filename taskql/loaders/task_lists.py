"""Pages of a project's task list in Redis, valid until the project's next task write.

Every committed write to a project's tasks bumps the project's generation (an INCR) after the
commit and before the write answers. A page is stored under the generation read *before* its
database read: a reader that raced a write stores its page under the old generation, where no
one reads again, so a read that starts after an acknowledged write never gets a page without it.
A read is one round trip (a script returns each project's generation and the page under it).

When Redis is unreachable, pages come from MongoDB and the outage is logged once. Bumps that
failed meanwhile are kept by this process and replayed before it uses the cache again, so its
own later reads never see a page from before those writes (as the entity cache does with its
markers, other instances can, between Redis's return and that replay).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from bson import ObjectId
from redis.asyncio import Redis

from taskql.codec import as_text, decode_document, encode_document
from taskql.db.pagination import Edge, Page
from taskql.db.tasks import TaskRecord
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
    def page_name(shape: Any) -> str:
        """The page's name within its project: the filter, order and page request (frozen dataclasses)."""
        return hashlib.sha256(repr(shape).encode()).hexdigest()[:32]

    async def get(
        self, project_ids: Sequence[ObjectId], shape: Any
    ) -> tuple[dict[ObjectId, Page[TaskRecord]], dict[ObjectId, str]]:
        """Cached pages, and the generation of every project (none when the cache cannot be used)."""
        if not self._enabled:
            return {}, {}
        name = self.page_name(shape)
        ok, reply = await self._attempt(
            lambda: self._read(keys=[self._generation_key(p) for p in project_ids], args=[name])
        )
        if not ok or reply is None:
            return {}, {}
        pages, generations = {}, {}
        for index, project_id in enumerate(project_ids):
            generation, payload = reply[2 * index], reply[2 * index + 1]
            generations[project_id] = as_text(generation)
            if payload:
                pages[project_id] = _decode(as_text(payload))
        self._stats.record_lookups("task_page", hits=len(pages), misses=len(project_ids) - len(pages))
        return pages, generations

    async def put(self, pages: dict[ObjectId, Page[TaskRecord]], shape: Any, generations: dict[ObjectId, str]) -> None:
        """Stores pages read from the database under the generations read before that read."""
        stored = [project_id for project_id in pages if project_id in generations]
        if not stored:
            return
        name = self.page_name(shape)

        async def write() -> None:
            async with self._client.pipeline(transaction=False) as pipe:
                for project_id in stored:
                    key = f"{self._generation_key(project_id)}:{generations[project_id]}:{name}"
                    pipe.set(key, _encode(pages[project_id]), ex=self._ttl)
                await pipe.execute()

        await self._attempt(write)

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


def _encode(page: Page[TaskRecord]) -> str:
    return encode_document(
        {
            "edges": [[edge.cursor, edge.node.to_doc()] for edge in page.edges],
            "next": page.has_next_page,
            "previous": page.has_previous_page,
        }
    )


def _decode(payload: str) -> Page[TaskRecord]:
    doc = decode_document(payload)
    return Page(
        edges=[Edge(cursor, TaskRecord.from_doc(node)) for cursor, node in doc["edges"]],
        has_next_page=doc["next"],
        has_previous_page=doc["previous"],
    )
