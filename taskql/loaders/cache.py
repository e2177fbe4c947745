"""The shared read-through cache of entities read by id (users, projects, tasks).

Consistency scheme: every cached entry is stored as ``"<version>|<json>"``, where version is the
document's own ``version`` field (+1 on every write). Every write to the cache, whether a write-back
after a miss or a write-through after an update, goes through one atomic compare-and-set (a Lua
script in Redis) that only replaces an entry with a *newer* version. So a reader that fetched v1
from MongoDB just before a writer committed v2 cannot overwrite the v2 the writer cached: its late
write-back is refused. Writers update the cache after the database commit and before they answer,
so any read that starts after an acknowledged write finds that version or a newer one. Deletions
leave a tombstone with an unbeatable version until the TTL expires.

When Redis is unreachable the cache steps aside (reads go to MongoDB, the outage is logged once)
and retries after a short pause. Writes made meanwhile could not update Redis, so each process keeps
the keys and versions it failed to write and, before using the cache again, stores "at least this
version" markers for them: a marker is a miss for readers and only a newer document replaces it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bson import ObjectId
from redis.asyncio import Redis
from redis.exceptions import RedisError

from taskql import metrics
from taskql.codec import as_text, decode_document, encode_document
from taskql.outage import RedisOutage
from taskql.settings import Settings

T = TypeVar("T")

CACHE_FORMAT_VERSION = 1  # bump when a cached document's shape changes: old entries are then ignored
TOMBSTONE_VERSION = 2**53  # beats every real version: nothing re-populates a deleted entity
_DELETED = "-"
_UNKNOWN = ""  # marker payload: "at least this version exists", value not cached

# KEYS: entry keys; ARGV: (ttl, version, value) per key. Replaces an entry only with a newer version,
# or a marker of the same version with its value.
_PUT_IF_NEWER = """
for i, key in ipairs(KEYS) do
  local ttl, version, value = ARGV[3 * i - 2], tonumber(ARGV[3 * i - 1]), ARGV[3 * i]
  local current = redis.call('GET', key)
  local replace = true
  if current then
    local sep = string.find(current, '|', 1, true)
    local current_version = tonumber(string.sub(current, 1, sep - 1))
    local current_known = sep < #current
    replace = version > current_version or (version == current_version and not current_known)
  end
  if replace then redis.call('SET', key, value, 'EX', ttl) end
end
return 0
"""


@dataclass(frozen=True)
class PutEntry:
    key: str
    version: int
    value: str
    ttl: int


class RedisBackend:
    """Shared by every instance: MGET for reads, one Lua compare-and-set for writes."""

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._put = client.register_script(_PUT_IF_NEWER)

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        values = await self._client.mget(list(keys))
        return [None if value is None else as_text(value) for value in values]

    async def put_many(self, entries: Sequence[PutEntry]) -> None:
        args: list[str | int] = []
        for entry in entries:
            args += [entry.ttl, entry.version, entry.value]
        await self._put(keys=[entry.key for entry in entries], args=args)


@dataclass
class CacheStats:
    """Counters of one cache (the tests read them); the process's Prometheus metrics move with them."""

    hits: int = 0
    misses: int = 0
    errors: int = 0
    batches: int = 0
    batched_keys: int = 0
    largest_batch: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)

    def record_lookups(self, kind: str, hits: int, misses: int) -> None:
        self.hits += hits
        self.misses += misses
        metrics.CACHE_REQUESTS.labels(kind, "hit").inc(hits)
        metrics.CACHE_REQUESTS.labels(kind, "miss").inc(misses)

    def record_batch(self, loader: str, size: int) -> None:
        metrics.LOADER_BATCH_SIZE.labels(loader).observe(size)
        self.batches += 1
        self.batched_keys += size
        self.largest_batch = max(self.largest_batch, size)
        self.batch_sizes[size] = self.batch_sizes.get(size, 0) + 1


class EntityCache:
    """Documents by (kind, id), with version-ordered writes and graceful degradation."""

    def __init__(
        self,
        backend: RedisBackend | None,
        *,
        ttl_seconds: Mapping[str, int],
        outage: RedisOutage,
        stats: CacheStats | None = None,
    ) -> None:
        self._backend = backend  # None: caching disabled
        self._ttl = dict(ttl_seconds)
        self._outage = outage
        self.stats = stats or CacheStats()
        self._unwritten: dict[str, tuple[int, int]] = {}  # key -> (version, ttl) not written during an outage

    @staticmethod
    def key(kind: str, object_id: ObjectId) -> str:
        return f"taskql:cache:v{CACHE_FORMAT_VERSION}:{kind}:{object_id}"

    async def get_many(self, kind: str, ids: Sequence[ObjectId]) -> dict[ObjectId, dict[str, Any] | None]:
        """Cached documents by id (None for a deleted entity); ids that missed are absent."""
        ok, values = await self._attempt(lambda backend: backend.get_many([self.key(kind, i) for i in ids]))
        found: dict[ObjectId, dict[str, Any] | None] = {}
        for object_id, value in zip(ids, values if ok else [None] * len(ids), strict=True):
            payload = value.partition("|")[2] if value else _UNKNOWN
            if payload == _UNKNOWN:
                continue
            found[object_id] = None if payload == _DELETED else decode_document(payload)
        self.stats.record_lookups(kind, hits=len(found), misses=len(ids) - len(found))
        return found

    async def put_many(self, kind: str, docs: Sequence[Mapping[str, Any]]) -> None:
        entries = [
            PutEntry(
                self.key(kind, doc["_id"]), doc["version"], f"{doc['version']}|{encode_document(doc)}", self._ttl[kind]
            )
            for doc in docs
        ]
        await self._write(entries)

    async def delete(self, kind: str, object_id: ObjectId) -> None:
        await self._write(
            [PutEntry(self.key(kind, object_id), TOMBSTONE_VERSION, f"{TOMBSTONE_VERSION}|{_DELETED}", self._ttl[kind])]
        )

    async def _write(self, entries: list[PutEntry]) -> None:
        if not entries or self._backend is None:
            return
        ok, _ = await self._attempt(lambda backend: backend.put_many(entries))
        if not ok:
            for entry in entries:
                self._unwritten[entry.key] = (entry.version, entry.ttl)

    async def _attempt(self, operation: Callable[[RedisBackend], Awaitable[T]]) -> tuple[bool, T | None]:
        """(True, result) of a backend call; (False, None) when the cache is off, down or failing."""
        backend = self._backend
        if backend is None:
            return False, None

        async def counted() -> T:
            try:
                return await operation(backend)
            except RedisError:
                self.stats.errors += 1
                raise

        return await self._outage.attempt(counted, part="cache", owed=lambda: self._replay_unwritten(backend))

    async def _replay_unwritten(self, backend: RedisBackend) -> None:
        if not self._unwritten:
            return
        markers = [
            PutEntry(key, version, f"{version}|{_UNKNOWN}", ttl) for key, (version, ttl) in self._unwritten.items()
        ]
        await backend.put_many(markers)
        self._unwritten.clear()


def create_cache(settings: Settings, redis: Redis, outage: RedisOutage) -> EntityCache:
    """The cache on Redis; with no backend at all when disabled."""
    return EntityCache(
        RedisBackend(redis) if settings.cache_enabled else None,
        ttl_seconds={
            "user": settings.cache_user_ttl_seconds,
            "project": settings.cache_project_ttl_seconds,
            "task": settings.cache_task_ttl_seconds,
        },
        outage=outage,
    )
