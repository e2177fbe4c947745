"""Mode (c)'s baseline: resolvers that query the database once per field, as if there were no DataLoaders.

Only the bench server process installs it. The loaders stay the application's own classes, so the
services and resolvers run unchanged, but every batch holds one key (one query per `load`) and
nothing is memoised within the request (the same user or project is fetched again each time).
"""

from __future__ import annotations

from opentelemetry.trace import Tracer

from taskql.db.client import Database
from taskql.loaders.cache import EntityCache
from taskql.loaders.request import L, Loaders
from taskql.loaders.task_lists import TaskListCache


class PerFieldLoaders(Loaders):
    def prepared(self, loader: L) -> L:
        # DataLoader checks this flag on every load, prime and clear: off, it keeps no per-request memo.
        loader.cache = False
        return super().prepared(loader)


def create_per_field_loaders(
    db: Database, cache: EntityCache, task_lists: TaskListCache, *, max_batch_size: int, tracer: Tracer | None = None
) -> Loaders:
    """Same signature as Loaders.create; `max_batch_size` is ignored, every batch is a single key."""
    return PerFieldLoaders(db, cache, task_lists, max_batch_size=1, tracer=tracer)


def install() -> None:
    """Every request of this process gets per-field loaders (build_context calls Loaders.create)."""
    Loaders.create = staticmethod(create_per_field_loaders)  # type: ignore[method-assign,assignment]
