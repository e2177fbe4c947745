"""Projects and their members."""

from __future__ import annotations

from bson import ObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from taskql.auth.permissions import require_manager, require_readable
from taskql.clock import utcnow
from taskql.db import projects as projects_db
from taskql.db import tasks as tasks_db
from taskql.db.activity import append_event
from taskql.db.outbox import OutboxEvent
from taskql.db.pagination import Page, PageRequest
from taskql.db.projects import MemberRecord, ProjectRecord
from taskql.db.tasks import TaskStatsRecord
from taskql.db.users import find_user_by_email
from taskql.db.webhooks import delete_project_webhooks
from taskql.errors import Conflict, NotFound
from taskql.services import outbox
from taskql.services.common import Deps
from taskql.services.follow_ups import notify_request
from taskql.services.validation import Checker, canonical_email
from taskql.services.webhooks import with_deliveries

NAME_MAX_LENGTH = 100
DESCRIPTION_MAX_LENGTH = 2_000
MEMBER_NOT_FOUND = "This user is not a member of the project."


class ProjectService:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._db = deps.db

    async def get(self, project_id: ObjectId) -> ProjectRecord:
        viewer = self._deps.require_viewer()
        return require_readable(await self._deps.loaders.projects.load(project_id), viewer)

    async def _get_managed(self, project_id: ObjectId) -> ProjectRecord:
        project = await self.get(project_id)
        require_manager(project, self._deps.require_viewer())
        return project

    def _member_scope(self) -> ObjectId | None:
        viewer = self._deps.require_viewer()
        return None if viewer.is_admin else viewer.id

    async def page(self, page: PageRequest) -> Page[ProjectRecord]:
        projects = await projects_db.page_projects(self._db, member_id=self._member_scope(), page=page)
        # Nested fields (task.project, permission checks) then find them without another query.
        self._deps.loaders.projects.remember([edge.node for edge in projects.edges])
        return projects

    async def count(self) -> int:
        return await projects_db.count_projects(self._db, member_id=self._member_scope())

    async def stats(self, project: ProjectRecord) -> TaskStatsRecord:
        return await self._deps.loaders.project_stats.load((project.id, None))

    def _check_fields(self, name: str | None, description: str | None) -> dict[str, str]:
        check = Checker()
        changes: dict[str, str] = {}
        if name is not None:
            changes["name"] = check.text(("input", "name"), name, min_length=1, max_length=NAME_MAX_LENGTH)
        if description is not None:
            changes["description"] = check.text(
                ("input", "description"), description, max_length=DESCRIPTION_MAX_LENGTH
            )
        check.raise_if_any()
        return changes

    async def _record(
        self,
        session: AsyncClientSession | None,
        project_id: ObjectId,
        kind: str,
        changed: list[str],
        *,
        task_id: ObjectId | None = None,
    ) -> None:
        await append_event(
            self._db,
            project_id=project_id,
            task_id=task_id,
            actor_id=self._deps.require_viewer().id,
            kind=kind,
            changed_fields=changed,
            at=utcnow(),
            session=session,
        )

    async def create(self, *, name: str, description: str) -> ProjectRecord:
        viewer = self._deps.require_viewer()
        fields = self._check_fields(name, description)

        async def write(session: AsyncClientSession | None) -> ProjectRecord:
            project = await projects_db.insert_project(
                self._db,
                name=fields["name"],
                description=fields["description"],
                owner_id=viewer.id,
                now=utcnow(),
                session=session,
            )
            await self._record(session, project.id, "PROJECT_CREATED", ["name", "description"])
            return project

        return await self._deps.loaders.projects.store(await self._db.in_transaction(write))

    async def update(self, project_id: ObjectId, *, name: str | None, description: str | None) -> ProjectRecord:
        project = await self._get_managed(project_id)
        changes = self._check_fields(name, description)
        changed = [key for key, value in changes.items() if getattr(project, key) != value]
        if not changed:
            return project

        async def write(session: AsyncClientSession | None) -> ProjectRecord | None:
            updated = await projects_db.update_project(
                self._db, project_id=project_id, changes=changes, now=utcnow(), session=session
            )
            if updated is not None:
                await self._record(session, project_id, "PROJECT_UPDATED", changed)
            return updated

        updated = await self._db.in_transaction(write)
        if updated is None:
            raise NotFound("Project not found.")
        return await self._deps.loaders.projects.store(updated)

    async def delete(self, project_id: ObjectId) -> None:
        """Deletes the project, its tasks and its webhooks; the activity trail is kept for audit."""
        await self._get_managed(project_id)

        async def write(
            session: AsyncClientSession | None,
        ) -> tuple[dict[ObjectId, ObjectId | None], list[OutboxEvent]]:
            assignees = await tasks_db.delete_project_tasks(self._db, project_id=project_id, session=session)
            if not await projects_db.delete_project(self._db, project_id=project_id, session=session):
                raise NotFound("Project not found.")
            await delete_project_webhooks(self._db, project_id=project_id, session=session)
            await self._record(session, project_id, "PROJECT_DELETED", [])
            event = outbox.project_event(self._deps.require_viewer().id, project_id, "PROJECT_DELETED")
            return assignees, await outbox.stage(self._db, session, [event])

        assignees, events = await self._db.in_transaction(write)
        await self._deps.loaders.projects.evict(project_id)
        for task_id in assignees:
            await self._deps.loaders.tasks.evict(task_id)
        await self._deps.runtime.task_lists.bump(projects=[project_id], assignees=set(assignees.values()))
        await self._deps.runtime.outbox.publish(events)

    async def add_member(self, project_id: ObjectId, *, email: str, role: str) -> ProjectRecord:
        project = await self._get_managed(project_id)
        user = await find_user_by_email(self._db, email=canonical_email(email))
        if user is None:
            # Safe to say: only a project's owners can ask, and they invite by email anyway.
            raise NotFound("No user has this email address.", field=("input", "email"))
        if project.role_of(user.id) is not None:
            raise Conflict("This user is already a member of the project.", field=("input", "email"))

        actor_id = self._deps.require_viewer().id

        async def write(session: AsyncClientSession | None) -> tuple[ProjectRecord | None, list[OutboxEvent]]:
            updated = await projects_db.add_member(
                self._db, project_id=project_id, user_id=user.id, role=role, now=utcnow(), session=session
            )
            if updated is None:
                return None, []
            await self._record(session, project_id, "MEMBER_ADDED", ["members"])
            if user.id == actor_id:  # an admin adding themselves
                return updated, []
            notice = notify_request("ADDED_TO_PROJECT", user_id=user.id, project_id=project_id, actor_id=actor_id)
            return updated, await outbox.stage(self._db, session, [outbox.jobs_only(notice)])

        updated, events = await self._db.in_transaction(write)
        if updated is None:
            raise Conflict("This user is already a member of the project.", field=("input", "email"))
        await self._deps.runtime.outbox.publish(events)
        return await self._deps.loaders.projects.store(updated)

    def _require_not_owner(self, project: ProjectRecord, user_id: ObjectId) -> MemberRecord:
        member = next((m for m in project.members if m.user_id == user_id), None)
        if member is None:
            raise NotFound(MEMBER_NOT_FOUND, field=("input", "userId"))
        if user_id == project.owner_id:
            raise Conflict("The project's owner cannot be removed or given another role.", field=("input", "userId"))
        return member

    async def update_member(self, project_id: ObjectId, *, user_id: ObjectId, role: str) -> ProjectRecord:
        project = await self._get_managed(project_id)
        member = self._require_not_owner(project, user_id)
        if member.role == role:
            return project

        async def write(session: AsyncClientSession | None) -> ProjectRecord | None:
            updated = await projects_db.set_member_role(
                self._db, project_id=project_id, user_id=user_id, role=role, now=utcnow(), session=session
            )
            if updated is not None:
                await self._record(session, project_id, "MEMBER_UPDATED", ["members"])
            return updated

        updated = await self._db.in_transaction(write)
        if updated is None:
            raise NotFound(MEMBER_NOT_FOUND, field=("input", "userId"))
        return await self._deps.loaders.projects.store(updated)

    async def remove_member(self, project_id: ObjectId, *, user_id: ObjectId) -> ProjectRecord:
        """Owners remove anyone but the project's owner; any member may leave. Their tasks become unassigned."""
        viewer = self._deps.require_viewer()
        project = await self.get(project_id)
        if user_id != viewer.id:
            require_manager(project, viewer)
        self._require_not_owner(project, user_id)

        async def write(
            session: AsyncClientSession | None,
        ) -> tuple[ProjectRecord | None, list[ObjectId], list[OutboxEvent]]:
            now = utcnow()
            updated = await projects_db.remove_member(
                self._db, project_id=project_id, user_id=user_id, now=now, session=session
            )
            if updated is None:
                return None, [], []
            await self._record(session, project_id, "MEMBER_REMOVED", ["members"])
            unassigned = await tasks_db.unassign_user(
                self._db, project_id=project_id, user_id=user_id, now=now, session=session
            )
            for task_id in unassigned:
                await self._record(session, project_id, "TASK_UPDATED", ["assignee"], task_id=task_id)
            tasks = await tasks_db.find_tasks_by_ids(self._db, ids=unassigned, session=session)
            actor_id = self._deps.require_viewer().id
            events = [outbox.project_event(actor_id, project_id, "MEMBER_REMOVED", user_id=user_id)]
            for task in tasks:
                event = outbox.task_event(actor_id, "TASK_UPDATED", task, ["assignee"])
                events.append(await with_deliveries(self._deps, session, event, task))
            return updated, unassigned, await outbox.stage(self._db, session, events)

        updated, unassigned, events = await self._db.in_transaction(write)
        if updated is None:
            raise NotFound(MEMBER_NOT_FOUND, field=("input", "userId"))
        await self._deps.loaders.tasks.refresh(unassigned)
        if unassigned:
            await self._deps.runtime.task_lists.bump(projects=[project_id], assignees=[user_id])
        await self._deps.runtime.outbox.publish(events)
        return await self._deps.loaders.projects.store(updated)
