"""Per-request DataLoaders for entities read by id, reading through the shared cache.

A batch costs one MGET, then one `$in` query for the misses only, whose results are written back.
Results come in key order, None for missing keys. Writes go through `store`/`evict`, which update
both the request's memo and the shared cache (see loaders/cache.py for the ordering rules).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from bson import ObjectId
from strawberry.dataloader import DataLoader

from taskql.db.client import Database
from taskql.db.projects import ProjectRecord, find_projects_by_ids
from taskql.db.tasks import TaskRecord, find_tasks_by_ids
from taskql.db.users import UserRecord, find_users_by_ids
from taskql.loaders.cache import EntityCache


class _Record(Protocol):
    @property
    def id(self) -> ObjectId: ...

    def to_doc(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=_Record)


class ByIdLoader(DataLoader[ObjectId, "R | None"], Generic[R]):
    kind: ClassVar[str]
    fetch: ClassVar[Callable[..., Awaitable[list[Any]]]]
    parse: ClassVar[Callable[[dict[str, Any]], Any]]

    def __init__(self, db: Database, cache: EntityCache, *, max_batch_size: int) -> None:
        self._db = db
        self._cache = cache
        super().__init__(load_fn=self._load, max_batch_size=max_batch_size)

    async def _load(self, ids: Sequence[ObjectId]) -> list[R | None]:
        self._cache.stats.record_batch(type(self).__name__, len(ids))
        cached = await self._cache.get_many(self.kind, ids)
        found: dict[ObjectId, R | None] = {
            object_id: type(self).parse(doc) if doc else None for object_id, doc in cached.items()
        }
        misses = [object_id for object_id in ids if object_id not in cached]
        if misses:
            records = await self._fetch(misses)
            found.update((record.id, record) for record in records)
        return [found.get(object_id) for object_id in ids]

    async def _fetch(self, ids: Sequence[ObjectId]) -> list[R]:
        records: list[R] = await type(self).fetch(self._db, ids=ids)
        await self._cache.put_many(self.kind, [record.to_doc() for record in records])
        return records

    def _memo(self, object_id: ObjectId, record: R | None) -> None:
        with contextlib.suppress(KeyError):  # clear() raises for a key never loaded
            self.clear(object_id)
        self.prime(object_id, record)

    async def store(self, record: R) -> R:
        """After a committed write: this request and every later one read `record` (or newer)."""
        self._memo(record.id, record)
        await self._cache.put_many(self.kind, [record.to_doc()])
        return record

    def remember(self, records: Sequence[R]) -> None:
        """Records a list query just read, for the rest of this request. No cache write: a list is read
        far more often than it changes, and a by-id miss writes its own record back."""
        for record in records:
            self._memo(record.id, record)

    async def evict(self, object_id: ObjectId) -> None:
        """After a committed delete."""
        self._memo(object_id, None)
        await self._cache.delete(self.kind, object_id)

    async def refresh(self, ids: Sequence[ObjectId]) -> list[R]:
        """After a bulk write: re-read `ids` from the database into the memo and the cache."""
        batch = self.max_batch_size or len(ids) or 1
        records: list[R] = []
        for start in range(0, len(ids), batch):
            records += await self._fetch(ids[start : start + batch])
        for record in records:
            self._memo(record.id, record)
        return records


class UserByIdLoader(ByIdLoader[UserRecord]):
    kind = "user"
    fetch = staticmethod(find_users_by_ids)
    parse = staticmethod(UserRecord.from_doc)


class ProjectByIdLoader(ByIdLoader[ProjectRecord]):
    kind = "project"
    fetch = staticmethod(find_projects_by_ids)
    parse = staticmethod(ProjectRecord.from_doc)


class TaskByIdLoader(ByIdLoader[TaskRecord]):
    kind = "task"
    fetch = staticmethod(find_tasks_by_ids)
    parse = staticmethod(TaskRecord.from_doc)
