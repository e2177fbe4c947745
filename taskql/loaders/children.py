"""Per-request DataLoaders for lists nested under a parent (a project's tasks, a task's activity).

Keys are (parent id, shape), where the shape is everything else the list depends on (filter,
order, page). A batch runs one command per distinct shape, for all parents at once, so a page of
projects with their task lists costs the same whatever the page sizes.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

from bson import ObjectId
from strawberry.dataloader import DataLoader

from taskql.clock import utcnow
from taskql.db.activity import ActivityRecord, count_activity_by_task, page_activity_by_task
from taskql.db.client import Database
from taskql.db.pagination import Page, PageRequest
from taskql.db.tasks import (
    DUE_SOON,
    TaskFilterSpec,
    TaskOrderSpec,
    TaskRecord,
    TaskStatsRecord,
    count_tasks_by_project,
    page_tasks_by_project,
    project_stats,
)
from taskql.loaders.cache import CacheStats
from taskql.loaders.task_lists import TaskListCache, decode_page, decode_stats, encode_page, encode_stats

S = TypeVar("S", bound=Hashable)
V = TypeVar("V")


class ByParentLoader(DataLoader[tuple[ObjectId, S], V], Generic[S, V]):
    def __init__(
        self,
        fetch: Callable[[Sequence[ObjectId], S], Awaitable[dict[ObjectId, V]]],
        stats: CacheStats,
        *,
        max_batch_size: int,
    ) -> None:
        async def load(keys: Sequence[tuple[ObjectId, S]]) -> list[V]:
            stats.record_batch(type(self).__name__, len(keys))
            parents_by_shape: dict[S, list[ObjectId]] = defaultdict(list)
            for parent_id, shape in keys:
                parents_by_shape[shape].append(parent_id)
            results: dict[tuple[ObjectId, S], V] = {}
            for shape, parent_ids in parents_by_shape.items():
                for parent_id, value in (await fetch(parent_ids, shape)).items():
                    results[parent_id, shape] = value
            return [results[key] for key in keys]

        super().__init__(load_fn=load, max_batch_size=max_batch_size)


TaskListShape = tuple[TaskFilterSpec, TaskOrderSpec, PageRequest]


class TaskPageByProjectLoader(ByParentLoader[TaskListShape, Page[TaskRecord]]):
    """Pages from the task list cache (task_lists.py), the rest in one database command."""

    def __init__(self, db: Database, stats: CacheStats, task_lists: TaskListCache, *, max_batch_size: int) -> None:
        async def fetch(project_ids: Sequence[ObjectId], shape: TaskListShape) -> dict[ObjectId, Page[TaskRecord]]:
            task_filter, order, page = shape

            async def read(missing: list[ObjectId]) -> dict[ObjectId, Page[TaskRecord]]:
                return await page_tasks_by_project(
                    db, project_ids=missing, task_filter=task_filter, order=order, page=page
                )

            return await task_lists.read_through(
                "project",
                "page",
                project_ids,
                shape,
                read=read,
                encode=encode_page,
                decode=decode_page,
            )

        super().__init__(fetch, stats, max_batch_size=max_batch_size)


class TaskCountByProjectLoader(ByParentLoader[TaskFilterSpec, int]):
    """`totalCount`s from the task list cache, the rest in one database command."""

    def __init__(self, db: Database, stats: CacheStats, task_lists: TaskListCache, *, max_batch_size: int) -> None:
        async def fetch(project_ids: Sequence[ObjectId], task_filter: TaskFilterSpec) -> dict[ObjectId, int]:
            async def read(missing: list[ObjectId]) -> dict[ObjectId, int]:
                return await count_tasks_by_project(db, project_ids=missing, task_filter=task_filter)

            return await task_lists.read_through(
                "project",
                "count",
                project_ids,
                task_filter,
                read=read,
                encode=str,
                decode=int,
            )

        super().__init__(fetch, stats, max_batch_size=max_batch_size)


class ProjectStatsLoader(ByParentLoader[None, TaskStatsRecord]):
    """Project stats from the task list cache, each kept until a write or until the time comes when
    its overdue or due-soon count changes by itself; the rest from the database."""

    def __init__(self, db: Database, stats: CacheStats, task_lists: TaskListCache, *, max_batch_size: int) -> None:
        async def fetch(project_ids: Sequence[ObjectId], _: None) -> dict[ObjectId, TaskStatsRecord]:
            now = utcnow()

            def decode(payload: str) -> TaskStatsRecord | None:
                record = decode_stats(payload)
                return record if record.valid_until is None or now < record.valid_until else None

            def expires_in(record: TaskStatsRecord) -> int | None:
                if record.valid_until is None:
                    return None
                return max(1, math.ceil((record.valid_until - now).total_seconds()))

            async def read(missing: list[ObjectId]) -> dict[ObjectId, TaskStatsRecord]:
                records = await asyncio.gather(
                    *(project_stats(db, project_id=project_id, now=now, soon=DUE_SOON) for project_id in missing)
                )
                return dict(zip(missing, records, strict=True))

            return await task_lists.read_through(
                "project",
                "stats",
                project_ids,
                None,
                read=read,
                encode=encode_stats,
                decode=decode,
                expires_in=expires_in,
            )

        super().__init__(fetch, stats, max_batch_size=max_batch_size)


class ActivityPageByTaskLoader(ByParentLoader[PageRequest, Page[ActivityRecord]]):
    def __init__(self, db: Database, stats: CacheStats, *, max_batch_size: int) -> None:
        async def fetch(task_ids: Sequence[ObjectId], page: PageRequest) -> dict[ObjectId, Page[ActivityRecord]]:
            return await page_activity_by_task(db, task_ids=task_ids, page=page)

        super().__init__(fetch, stats, max_batch_size=max_batch_size)


class ActivityCountByTaskLoader(ByParentLoader[None, int]):
    def __init__(self, db: Database, stats: CacheStats, *, max_batch_size: int) -> None:
        async def fetch(task_ids: Sequence[ObjectId], _: None) -> dict[ObjectId, int]:
            return await count_activity_by_task(db, task_ids=task_ids)

        super().__init__(fetch, stats, max_batch_size=max_batch_size)
