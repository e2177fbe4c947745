from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry
from bson import ObjectId

from taskql.db.notifications import NotificationRecord
from taskql.db.pagination import PageRequest
from taskql.schema.errors import UserError
from taskql.schema.relay import Connection, Node, encode_id, to_connection
from taskql.schema.users import User, load_user

if TYPE_CHECKING:
    from taskql.schema.projects import Project
    from taskql.schema.tasks import Task

_PROJECTS = "taskql.schema.projects"
_TASKS = "taskql.schema.tasks"


@strawberry.enum
class NotificationKind(Enum):
    TASK_ASSIGNED = "TASK_ASSIGNED"
    TASK_DUE_SOON = "TASK_DUE_SOON"
    TASK_OVERDUE = "TASK_OVERDUE"
    ADDED_TO_PROJECT = "ADDED_TO_PROJECT"
    WEBHOOK_DISABLED = "WEBHOOK_DISABLED"
    EXPORT_READY = "EXPORT_READY"


@strawberry.type(description="Something the viewer should know about: shown only to them.")
class Notification(Node):
    record: strawberry.Private[NotificationRecord]
    id: strawberry.ID
    kind: NotificationKind
    created_at: datetime
    read_at: datetime | None = strawberry.field(description="When it was marked read; null while unread.")

    @classmethod
    def from_record(cls, record: NotificationRecord) -> Notification:
        return cls(
            record=record,
            id=encode_id("Notification", record.id),
            kind=NotificationKind(record.kind),
            created_at=record.created_at,
            read_at=record.read_at,
        )

    @strawberry.field(description="The task it is about; null for ADDED_TO_PROJECT, or once the task is deleted.")
    async def task(self, info: strawberry.Info) -> Annotated[Task, strawberry.lazy(_TASKS)] | None:
        from taskql.schema.tasks import Task

        if self.record.task_id is None:
            return None
        task = await info.context.deps.loaders.tasks.load(self.record.task_id)
        return Task.from_record(task) if task is not None else None

    @strawberry.field
    async def project(self, info: strawberry.Info) -> Annotated[Project, strawberry.lazy(_PROJECTS)] | None:
        from taskql.schema.projects import Project

        project = await info.context.deps.loaders.projects.load(self.record.project_id)
        return Project.from_record(project) if project is not None else None

    @strawberry.field(description="Who caused it; null when TaskQL did (reminders).")
    async def actor(self, info: strawberry.Info) -> User | None:
        return None if self.record.actor_id is None else await load_user(info, self.record.actor_id)


async def user_notifications(
    info: strawberry.Info, user_id: ObjectId, first: int | None, after: str | None, unread_only: bool
) -> Connection[Notification]:
    service = info.context.notifications
    page = await service.page(user_id, unread_only=unread_only, page=PageRequest(first=first, after=after))
    return to_connection(page, Notification.from_record, lambda: service.count(user_id, unread_only=unread_only))


@strawberry.input
class MarkNotificationsReadInput:
    ids: list[strawberry.ID] | None = strawberry.field(default=None, description="These notifications (at most 100).")
    all: bool = strawberry.field(default=False, description="Every notification of the viewer.")


@strawberry.type
class MarkNotificationsReadPayload:
    marked_count: int = strawberry.field(default=0, description="How many were unread and are now read.")
    viewer: User | None = strawberry.field(default=None, description="To read the new `unreadNotificationCount`.")
    user_errors: list[UserError] = strawberry.field(default_factory=list)
