"""Per-request DataLoaders for lists nested under a parent (a project's tasks, a task's activity).

Keys are (parent id, shape), where the shape is everything else the list depends on (filter,
order, page). A batch runs one command per distinct shape, for all parents at once, so a page of
projects with their task lists costs the same whatever the page sizes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

from bson import ObjectId
from strawberry.dataloader import DataLoader

from taskql.db.activity import ActivityRecord, count_activity_by_task, page_activity_by_task
from taskql.db.client import Database
from taskql.db.pagination import Page, PageRequest
from taskql.db.tasks import (
    TaskFilterSpec,
    TaskOrderSpec,
    TaskRecord,
    count_tasks_by_project,
    page_tasks_by_project,
)
from taskql.loaders.cache import CacheStats
from taskql.loaders.task_lists import TaskListCache

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
            pages, generations = await task_lists.get(project_ids, shape)
            missing = [project_id for project_id in project_ids if project_id not in pages]
            if missing:
                task_filter, order, page = shape
                read = await page_tasks_by_project(
                    db, project_ids=missing, task_filter=task_filter, order=order, page=page
                )
                await task_lists.put(read, shape, generations)
                pages.update(read)
            return pages

        super().__init__(fetch, stats, max_batch_size=max_batch_size)


class TaskCountByProjectLoader(ByParentLoader[TaskFilterSpec, int]):
    def __init__(self, db: Database, stats: CacheStats, *, max_batch_size: int) -> None:
        async def fetch(project_ids: Sequence[ObjectId], task_filter: TaskFilterSpec) -> dict[ObjectId, int]:
            return await count_tasks_by_project(db, project_ids=project_ids, task_filter=task_filter)

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
