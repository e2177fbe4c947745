from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry

from taskql.db.activity import ActivityRecord
from taskql.schema.relay import encode_id
from taskql.schema.users import User, load_user


@strawberry.enum
class ActivityKind(Enum):
    TASK_CREATED = "TASK_CREATED"
    TASK_UPDATED = "TASK_UPDATED"
    TASK_DELETED = "TASK_DELETED"
    PROJECT_CREATED = "PROJECT_CREATED"
    PROJECT_UPDATED = "PROJECT_UPDATED"
    PROJECT_DELETED = "PROJECT_DELETED"
    MEMBER_ADDED = "MEMBER_ADDED"
    MEMBER_UPDATED = "MEMBER_UPDATED"
    MEMBER_REMOVED = "MEMBER_REMOVED"


@strawberry.type(description="One entry of the audit trail.")
class ActivityEvent:
    record: strawberry.Private[ActivityRecord]
    kind: ActivityKind
    changed_fields: list[str]
    at: datetime

    @classmethod
    def from_record(cls, event: ActivityRecord) -> ActivityEvent:
        return cls(record=event, kind=ActivityKind(event.kind), changed_fields=list(event.changed_fields), at=event.at)

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self.record.id))

    @strawberry.field
    def task_id(self) -> strawberry.ID | None:
        return encode_id("Task", self.record.task_id) if self.record.task_id else None

    @strawberry.field
    def project_id(self) -> strawberry.ID:
        return encode_id("Project", self.record.project_id)

    @strawberry.field
    async def actor(self, info: strawberry.Info) -> User:
        return await load_user(info, self.record.actor_id)
