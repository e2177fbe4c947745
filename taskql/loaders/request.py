"""The DataLoaders of one request, created fresh in get_context (never shared between requests)."""

from __future__ import annotations

from functools import cached_property
from typing import Any, TypeVar

from opentelemetry.trace import Tracer
from strawberry.dataloader import DataLoader

from taskql.db.client import Database
from taskql.loaders.cache import EntityCache
from taskql.loaders.children import (
    ActivityCountByTaskLoader,
    ActivityPageByTaskLoader,
    ProjectStatsLoader,
    TaskCountByProjectLoader,
    TaskPageByProjectLoader,
)
from taskql.loaders.entities import ProjectByIdLoader, TaskByIdLoader, UserByIdLoader
from taskql.loaders.task_lists import TaskListCache
from taskql.tracing import trace_batches

L = TypeVar("L", bound=DataLoader[Any, Any])


class Loaders:
    """Each loader is made on first use: a request needs two or three of them, and making all seven
    for every request was a measurable share of a small query's time."""

    def __init__(
        self,
        db: Database,
        cache: EntityCache,
        task_lists: TaskListCache,
        *,
        max_batch_size: int,
        tracer: Tracer | None = None,
    ) -> None:
        self._db = db
        self._cache = cache
        self._task_lists = task_lists
        self._max_batch_size = max_batch_size
        self._tracer = tracer

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
        """What each request calls (bench/per_field.py swaps it for loaders that do not batch)."""
        return cls(db, cache, task_lists, max_batch_size=max_batch_size, tracer=tracer)

    def prepared(self, loader: L) -> L:
        """Every loader passes here once, when it is made."""
        if self._tracer is not None:
            trace_batches(loader, self._tracer)
        return loader

    @cached_property
    def users(self) -> UserByIdLoader:
        return self.prepared(UserByIdLoader(self._db, self._cache, max_batch_size=self._max_batch_size))

    @cached_property
    def projects(self) -> ProjectByIdLoader:
        return self.prepared(ProjectByIdLoader(self._db, self._cache, max_batch_size=self._max_batch_size))

    @cached_property
    def tasks(self) -> TaskByIdLoader:
        return self.prepared(TaskByIdLoader(self._db, self._cache, max_batch_size=self._max_batch_size))

    @cached_property
    def task_pages(self) -> TaskPageByProjectLoader:
        loader = TaskPageByProjectLoader(
            self._db, self._cache.stats, self._task_lists, max_batch_size=self._max_batch_size
        )
        return self.prepared(loader)

    @cached_property
    def task_counts(self) -> TaskCountByProjectLoader:
        return self.prepared(
            TaskCountByProjectLoader(self._db, self._cache.stats, self._task_lists, max_batch_size=self._max_batch_size)
        )

    @cached_property
    def project_stats(self) -> ProjectStatsLoader:
        return self.prepared(
            ProjectStatsLoader(self._db, self._cache.stats, self._task_lists, max_batch_size=self._max_batch_size)
        )

    @cached_property
    def activity_pages(self) -> ActivityPageByTaskLoader:
        return self.prepared(ActivityPageByTaskLoader(self._db, self._cache.stats, max_batch_size=self._max_batch_size))

    @cached_property
    def activity_counts(self) -> ActivityCountByTaskLoader:
        return self.prepared(
            ActivityCountByTaskLoader(self._db, self._cache.stats, max_batch_size=self._max_batch_size)
        )
