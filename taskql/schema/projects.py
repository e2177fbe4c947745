from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry

from taskql.db.projects import MemberRecord, ProjectRecord
from taskql.schema.errors import UserError
from taskql.schema.extensions.shared_events import PER_VIEWER
from taskql.schema.relay import Connection, Node, encode_id
from taskql.schema.users import User, load_user

if TYPE_CHECKING:
    from taskql.schema.tasks import ProjectStats, Task, TaskFilter, TaskOrder
    from taskql.schema.webhooks import Webhook

_TASKS = "taskql.schema.tasks"
_WEBHOOKS = "taskql.schema.webhooks"


@strawberry.enum
class ProjectRole(Enum):
    OWNER = "OWNER"
    EDITOR = "EDITOR"
    VIEWER = "VIEWER"


@strawberry.type
class ProjectMember:
    member: strawberry.Private[MemberRecord]
    role: ProjectRole
    added_at: datetime

    @strawberry.field
    async def user(self, info: strawberry.Info) -> User:
        return await load_user(info, self.member.user_id)


@strawberry.type
class Project(Node):
    record: strawberry.Private[ProjectRecord]
    id: strawberry.ID
    name: str
    description: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_record(cls, project: ProjectRecord) -> Project:
        return cls(
            record=project,
            id=encode_id("Project", project.id),
            name=project.name,
            description=project.description,
            created_at=project.created_at,
            updated_at=project.updated_at,
        )

    @strawberry.field
    async def owner(self, info: strawberry.Info) -> User:
        return await load_user(info, self.record.owner_id)

    @strawberry.field
    def members(self) -> list[ProjectMember]:
        return [ProjectMember(member=m, role=ProjectRole(m.role), added_at=m.added_at) for m in self.record.members]

    @strawberry.field(
        description="The viewer's role in this project; null for admins who are not members.",
        metadata={PER_VIEWER: True},
    )
    def viewer_role(self, info: strawberry.Info) -> ProjectRole | None:
        role = self.record.role_of(info.context.deps.require_viewer().id)
        return ProjectRole(role) if role else None

    @strawberry.field
    async def tasks(
        self,
        info: strawberry.Info,
        filter: Annotated[TaskFilter, strawberry.lazy(_TASKS)] | None = None,
        order_by: Annotated[TaskOrder, strawberry.lazy(_TASKS)] | None = None,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Annotated[Task, strawberry.lazy(_TASKS)]]:
        from taskql.schema.tasks import project_tasks

        return await project_tasks(info, self.record.id, filter, order_by, first, after, last, before)

    @strawberry.field(description="Where its task events are posted. Only for its owners (and admins).")
    async def webhooks(self, info: strawberry.Info) -> list[Annotated[Webhook, strawberry.lazy(_WEBHOOKS)]]:
        from taskql.schema.webhooks import Webhook

        return [Webhook.from_record(record) for record in await info.context.webhooks.list(self.record.id)]

    @strawberry.field
    async def stats(self, info: strawberry.Info) -> Annotated[ProjectStats, strawberry.lazy(_TASKS)]:
        from taskql.schema.tasks import ProjectStats

        return ProjectStats.from_record(await info.context.projects.stats(self.record))


@strawberry.input
class CreateProjectInput:
    name: str
    description: str = ""


@strawberry.input
class UpdateProjectInput:
    id: strawberry.ID
    name: str | None = None
    description: str | None = None


@strawberry.input
class DeleteProjectInput:
    id: strawberry.ID


@strawberry.input
class AddProjectMemberInput:
    project_id: strawberry.ID
    email: str
    role: ProjectRole = ProjectRole.EDITOR


@strawberry.input
class UpdateProjectMemberInput:
    project_id: strawberry.ID
    user_id: strawberry.ID
    role: ProjectRole


@strawberry.input
class RemoveProjectMemberInput:
    project_id: strawberry.ID
    user_id: strawberry.ID


@strawberry.type
class ProjectPayload:
    project: Project | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class DeleteProjectPayload:
    deleted_project_id: strawberry.ID | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)
