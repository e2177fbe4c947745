"""The activity trail of tasks, readable by whoever can read the task."""

from __future__ import annotations

from taskql.db.activity import ActivityRecord, count_task_activity, page_task_activity
from taskql.db.pagination import Page, PageRequest
from taskql.db.tasks import TaskRecord
from taskql.services.common import Deps


class ActivityService:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def page_for_task(self, task: TaskRecord, page: PageRequest) -> Page[ActivityRecord]:
        # `task` was obtained through TaskService, which already checked the viewer may read it.
        return await page_task_activity(self._deps.db, task_id=task.id, page=page)

    async def count_for_task(self, task: TaskRecord) -> int:
        return await count_task_activity(self._deps.db, task_id=task.id)
