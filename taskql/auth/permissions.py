"""Who may do what in a project. Every service check goes through these three functions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bson import ObjectId

from taskql.db.projects import ProjectRecord
from taskql.db.users import UserRecord
from taskql.errors import Forbidden, NotFound

PROJECT_NOT_FOUND = "Project not found."
TASK_NOT_FOUND = "Task not found."


@dataclass(frozen=True)
class Viewer:
    """The authenticated user of a request and the login (refresh-token family) it came from."""

    user: UserRecord
    session_family_id: ObjectId
    access_expires_at: datetime  # long-lived operations (subscriptions) end here

    @property
    def id(self) -> ObjectId:
        return self.user.id

    @property
    def is_admin(self) -> bool:
        return self.user.role == "ADMIN"


def require_readable(
    project: ProjectRecord | None, viewer: Viewer, *, message: str = PROJECT_NOT_FOUND
) -> ProjectRecord:
    """Viewers, editors, owners and admins read; to anyone else the project does not exist."""
    if project is None or (not viewer.is_admin and project.role_of(viewer.id) is None):
        raise NotFound(message)
    return project


def require_task_writer(project: ProjectRecord, viewer: Viewer) -> None:
    if not viewer.is_admin and project.role_of(viewer.id) not in ("EDITOR", "OWNER"):
        raise Forbidden("Only editors and owners of this project can change its tasks.")


def require_manager(project: ProjectRecord, viewer: Viewer) -> None:
    if not viewer.is_admin and project.role_of(viewer.id) != "OWNER":
        raise Forbidden("Only owners of this project can manage it.")
