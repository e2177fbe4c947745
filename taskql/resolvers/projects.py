"""Root fields for projects and members."""

from __future__ import annotations

from collections.abc import Awaitable

import strawberry

from taskql.db.pagination import PageRequest
from taskql.db.projects import ProjectRecord
from taskql.schema.errors import attempt
from taskql.schema.projects import (
    AddProjectMemberInput,
    CreateProjectInput,
    DeleteProjectInput,
    DeleteProjectPayload,
    Project,
    ProjectPayload,
    RemoveProjectMemberInput,
    UpdateProjectInput,
    UpdateProjectMemberInput,
)
from taskql.schema.relay import Connection, decode_id, to_connection


async def projects(
    info: strawberry.Info,
    first: int | None = None,
    after: str | None = None,
    last: int | None = None,
    before: str | None = None,
) -> Connection[Project]:
    """Projects the viewer is a member of (every project, for admins), newest first."""
    service = info.context.projects
    page = await service.page(PageRequest(first=first, after=after, last=last, before=before))
    return to_connection(page, Project.from_record, service.count)


async def project(info: strawberry.Info, id: strawberry.ID) -> Project | None:
    """A project the viewer can see, by ID."""
    return Project.from_record(await info.context.projects.get(decode_id(id, "Project")))


async def _payload(work: Awaitable[ProjectRecord]) -> ProjectPayload:
    record, errors = await attempt(work)
    return ProjectPayload(project=Project.from_record(record) if record else None, user_errors=errors)


async def create_project(info: strawberry.Info, input: CreateProjectInput) -> ProjectPayload:
    """Create a project; the viewer becomes its owner."""
    return await _payload(info.context.projects.create(name=input.name, description=input.description))


async def update_project(info: strawberry.Info, input: UpdateProjectInput) -> ProjectPayload:
    """Rename or re-describe a project (owners)."""
    project_id = decode_id(input.id, "Project", argument="input.id")
    return await _payload(info.context.projects.update(project_id, name=input.name, description=input.description))


async def delete_project(info: strawberry.Info, input: DeleteProjectInput) -> DeleteProjectPayload:
    """Delete a project and its tasks (owners); its activity trail is kept."""
    project_id = decode_id(input.id, "Project", argument="input.id")
    _, errors = await attempt(info.context.projects.delete(project_id))
    return DeleteProjectPayload(deleted_project_id=None if errors else input.id, user_errors=errors)


async def add_project_member(info: strawberry.Info, input: AddProjectMemberInput) -> ProjectPayload:
    """Add a registered user, by email, with a role (owners)."""
    project_id = decode_id(input.project_id, "Project", argument="input.projectId")
    return await _payload(info.context.projects.add_member(project_id, email=input.email, role=input.role.value))


async def update_project_member(info: strawberry.Info, input: UpdateProjectMemberInput) -> ProjectPayload:
    """Change a member's role (owners); the project's owner keeps OWNER."""
    project_id = decode_id(input.project_id, "Project", argument="input.projectId")
    user_id = decode_id(input.user_id, "User", argument="input.userId")
    return await _payload(info.context.projects.update_member(project_id, user_id=user_id, role=input.role.value))


async def remove_project_member(info: strawberry.Info, input: RemoveProjectMemberInput) -> ProjectPayload:
    """Remove a member (owners), or leave a project; their tasks become unassigned."""
    project_id = decode_id(input.project_id, "Project", argument="input.projectId")
    user_id = decode_id(input.user_id, "User", argument="input.userId")
    return await _payload(info.context.projects.remove_member(project_id, user_id=user_id))
