"""Per-request DataLoaders for entities read by id: one `$in` query per batch, results in key order."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from bson import ObjectId
from strawberry.dataloader import DataLoader

from taskql.db.client import Database
from taskql.db.projects import ProjectRecord, find_projects_by_ids
from taskql.db.tasks import TaskRecord, find_tasks_by_ids
from taskql.db.users import UserRecord, find_users_by_ids

MAX_BATCH_SIZE = 100  # SecantusDB's `$in` slows down sharply past ~100 ids


class _HasId(Protocol):
    @property
    def id(self) -> ObjectId: ...


R = TypeVar("R", bound=_HasId)


class _ByIdLoader(DataLoader[ObjectId, "R | None"], Generic[R]):
    fetch: ClassVar[Callable[..., Awaitable[list[Any]]]]

    def __init__(self, db: Database) -> None:
        async def load(ids: Sequence[ObjectId]) -> list[R | None]:
            found = {record.id: record for record in await type(self).fetch(db, ids=ids)}
            return [found.get(object_id) for object_id in ids]

        super().__init__(load_fn=load, max_batch_size=MAX_BATCH_SIZE)

    def forget(self, key: ObjectId) -> None:
        """Drop a cached entry after a write (clear() raises on a key never loaded)."""
        with contextlib.suppress(KeyError):
            self.clear(key)

    def remember(self, record: R) -> R:
        """Cache the value a write just returned, so later reads in the request see it."""
        self.forget(record.id)
        self.prime(record.id, record)
        return record


class UserByIdLoader(_ByIdLoader[UserRecord]):
    fetch = staticmethod(find_users_by_ids)


class ProjectByIdLoader(_ByIdLoader[ProjectRecord]):
    fetch = staticmethod(find_projects_by_ids)


class TaskByIdLoader(_ByIdLoader[TaskRecord]):
    fetch = staticmethod(find_tasks_by_ids)


@dataclass(frozen=True)
class Loaders:
    users: UserByIdLoader
    projects: ProjectByIdLoader
    tasks: TaskByIdLoader

    @classmethod
    def create(cls, db: Database) -> Loaders:
        return cls(users=UserByIdLoader(db), projects=ProjectByIdLoader(db), tasks=TaskByIdLoader(db))
