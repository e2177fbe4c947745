from __future__ import annotations

from datetime import datetime

import strawberry
from bson import ObjectId

from taskql.schema.activity import ActivityKind
from taskql.schema.relay import encode_id
from taskql.schema.tasks import Task
from taskql.schema.users import User, load_user
from taskql.services.events import TaskEventRecord


@strawberry.type(description="A change to a task, as it happened.")
class TaskEvent:
    # Fields resolve from the record only when selected: every subscriber gets its own TaskEvent per
    # event, but only one of them executes it (shared_events).
    record: strawberry.Private[TaskEventRecord]

    @classmethod
    def from_record(cls, event: TaskEventRecord) -> TaskEvent:
        return cls(record=event)

    @property
    def event_key(self) -> tuple[ObjectId, str]:
        """The same for every subscriber's copy of this event: its result is computed once (shared_events)."""
        return self.record.project_id, self.record.cursor

    @strawberry.field(description="Pass as `after` to resume right after this event.")
    def cursor(self) -> str:
        return self.record.cursor

    @strawberry.field
    def kind(self) -> ActivityKind:
        return ActivityKind(self.record.kind)

    @strawberry.field
    def changed_fields(self) -> list[str]:
        return list(self.record.changed_fields)

    @strawberry.field
    def at(self) -> datetime:
        return self.record.at

    @strawberry.field(description="The task as of this event; null once deleted.")
    def task(self) -> Task | None:
        return Task.from_record(self.record.task) if self.record.task else None

    @strawberry.field
    def task_id(self) -> strawberry.ID:
        return encode_id("Task", self.record.task_id)

    @strawberry.field
    def project_id(self) -> strawberry.ID:
        return encode_id("Project", self.record.project_id)

    @strawberry.field
    async def actor(self, info: strawberry.Info) -> User:
        return await load_user(info, self.record.actor_id)
