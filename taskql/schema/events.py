from __future__ import annotations

from datetime import datetime

import strawberry

from taskql.schema.activity import ActivityKind
from taskql.schema.relay import encode_id
from taskql.schema.tasks import Task
from taskql.schema.users import User, load_user
from taskql.services.events import TaskEventRecord


@strawberry.type(description="A change to a task, as it happened.")
class TaskEvent:
    record: strawberry.Private[TaskEventRecord]
    cursor: str = strawberry.field(description="Pass as `after` to resume right after this event.")
    kind: ActivityKind
    changed_fields: list[str]
    at: datetime
    task: Task | None = strawberry.field(description="The task as of this event; null once deleted.")

    @classmethod
    def from_record(cls, event: TaskEventRecord) -> TaskEvent:
        return cls(
            record=event,
            cursor=event.cursor,
            kind=ActivityKind(event.kind),
            changed_fields=list(event.changed_fields),
            at=event.at,
            task=Task.from_record(event.task) if event.task else None,
        )

    @strawberry.field
    def task_id(self) -> strawberry.ID:
        return encode_id("Task", self.record.task_id)

    @strawberry.field
    def project_id(self) -> strawberry.ID:
        return encode_id("Project", self.record.project_id)

    @strawberry.field
    async def actor(self, info: strawberry.Info) -> User:
        return await load_user(info, self.record.actor_id)
