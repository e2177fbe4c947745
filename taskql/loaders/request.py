"""The DataLoaders of one request, created fresh in get_context (never shared between requests)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from opentelemetry.trace import Tracer

from taskql.db.client import Database
from taskql.loaders.cache import EntityCache
from taskql.loaders.children import (
    ActivityCountByTaskLoader,
    ActivityPageByTaskLoader,
    TaskCountByProjectLoader,
    TaskPageByProjectLoader,
)
from taskql.loaders.entities import ProjectByIdLoader, TaskByIdLoader, UserByIdLoader
from taskql.loaders.task_lists import TaskListCache
from taskql.tracing import trace_batches


@dataclass(frozen=True)
class Loaders:
    users: UserByIdLoader
    projects: ProjectByIdLoader
    tasks: TaskByIdLoader
    task_pages: TaskPageByProjectLoader
    task_counts: TaskCountByProjectLoader
    activity_pages: ActivityPageByTaskLoader
    activity_counts: ActivityCountByTaskLoader

    @classmethod
    def create(
        cls,
        db: Database,
        cache: EntityCache,
        task_lists: TaskListCache,
        *,
        max_batch_size: int,
        tracer: Tracer | None = None,
    ) -> Loaders:
        stats = cache.stats
        loaders = cls(
            users=UserByIdLoader(db, cache, max_batch_size=max_batch_size),
            projects=ProjectByIdLoader(db, cache, max_batch_size=max_batch_size),
            tasks=TaskByIdLoader(db, cache, max_batch_size=max_batch_size),
            task_pages=TaskPageByProjectLoader(db, stats, task_lists, max_batch_size=max_batch_size),
            task_counts=TaskCountByProjectLoader(db, stats, max_batch_size=max_batch_size),
            activity_pages=ActivityPageByTaskLoader(db, stats, max_batch_size=max_batch_size),
            activity_counts=ActivityCountByTaskLoader(db, stats, max_batch_size=max_batch_size),
        )
        if tracer is not None:
            for field in dataclasses.fields(loaders):
                trace_batches(getattr(loaders, field.name), tracer)
        return loaders
