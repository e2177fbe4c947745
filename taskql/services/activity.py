"""The activity trail of tasks, readable by whoever can read the task."""

from __future__ import annotations

from taskql.db.activity import ActivityRecord
from taskql.db.pagination import Page, PageRequest
from taskql.db.tasks import TaskRecord
from taskql.services.common import Deps


class ActivityService:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    # `task` was obtained through TaskService, which already checked the viewer may read it.
    async def page_for_task(self, task: TaskRecord, page: PageRequest) -> Page[ActivityRecord]:
        return await self._deps.loaders.activity_pages.load((task.id, page))

    async def count_for_task(self, task: TaskRecord) -> int:
        return await self._deps.loaders.activity_counts.load((task.id, None))
