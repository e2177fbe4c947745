"""Tasks: reads scoped by project membership, validated writes with optimistic concurrency."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from taskql.auth.permissions import TASK_NOT_FOUND, require_readable, require_task_writer
from taskql.clock import utcnow
from taskql.db import tasks as tasks_db
from taskql.db.activity import append_event
from taskql.db.outbox import OutboxEvent
from taskql.db.pagination import Page, PageRequest
from taskql.db.projects import ProjectRecord, project_ids_of_member
from taskql.db.search_terms import MAX_QUERY_TERMS, terms_of
from taskql.db.tasks import TaskFilterSpec, TaskOrderSpec, TaskRecord, TaskScope
from taskql.errors import BadUserInput, NotFound, VersionConflict
from taskql.loaders.task_lists import decode_page, encode_page
from taskql.services import outbox
from taskql.services.common import Deps
from taskql.services.follow_ups import assignment_notices
from taskql.services.validation import Checker
from taskql.services.webhooks import with_deliveries

TITLE_MAX_LENGTH = 200
DESCRIPTION_MAX_LENGTH = 10_000
MAX_TAGS = 20
TAG_MAX_LENGTH = 50
MAX_QUERY_LENGTH = 200
# Record field -> the name clients see (in userError paths and ActivityEvent.changedFields).
PUBLIC_NAMES = {
    "title": "title",
    "description": "description",
    "status": "status",
    "priority": "priority",
    "due_at": "dueAt",
    "tags": "tags",
    "assignee_id": "assignee",
}
NOT_NULL = frozenset({"title", "status", "priority"})
_INPUT_NAMES = {**PUBLIC_NAMES, "assignee_id": "assigneeId"}
STALE_VERSION = "The task was changed by someone else since you read it; reload it and try again."


def _check_values(values: Mapping[str, Any], project: ProjectRecord) -> dict[str, Any]:
    """Validated, normalised copies of the task fields present in `values`."""
    check = Checker()
    clean: dict[str, Any] = {}
    for key, value in values.items():
        field = ("input", _INPUT_NAMES[key])
        if value is None and key in NOT_NULL:
            check.add(field, "cannot be null")
            continue
        if key == "title":
            value = check.text(field, value, min_length=1, max_length=TITLE_MAX_LENGTH)
        elif key == "description":
            value = check.text(field, value or "", max_length=DESCRIPTION_MAX_LENGTH)
        elif key == "tags":
            value = check.tags(field, value or [], max_count=MAX_TAGS, max_length=TAG_MAX_LENGTH)
        elif key == "due_at" and value is not None:
            value = check.datetime(field, value)
        elif key == "assignee_id" and value is not None and project.role_of(value) is None:
            check.add(field, "must be a member of the project")
        clean[key] = value
    check.raise_if_any()
    return clean


def _completion(status: str | None, current: TaskRecord | None, now: datetime) -> dict[str, Any]:
    """completed_at follows status: set when a task becomes DONE, cleared when it leaves DONE."""
    if status is None or (current is not None and status == current.status):
        return {}
    return {"completed_at": now if status == "DONE" else None}


def _reminders(current: TaskRecord | None, changed: Mapping[str, Any]) -> dict[str, Any]:
    """Due-date reminders (jobs/reminders.py) are armed for an open task's due date when it is set,
    or when the task is reopened, and disarmed when it is done or its due date is removed. Each is
    sent once per task and due date, however often it is armed."""
    status = changed.get("status", current.status if current else "TODO")
    was_done = current is not None and current.status == "DONE"
    if current is not None and "due_at" not in changed and (status == "DONE") == was_done:
        return {}
    due_at = changed.get("due_at", current.due_at if current else None)
    return tasks_db.reminder_marks(None if status == "DONE" else due_at)


class TaskService:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._db = deps.db
        self._member_of: list[ObjectId] | None = None  # the viewer's projects, read once per request

    async def _readable_project(self, project_id: ObjectId, *, message: str = "Project not found.") -> ProjectRecord:
        viewer = self._deps.require_viewer()
        return require_readable(await self._deps.loaders.projects.load(project_id), viewer, message=message)

    async def get(self, task_id: ObjectId) -> TaskRecord:
        task = await self._deps.loaders.tasks.load(task_id)
        if task is None:
            self._deps.require_viewer()
            raise NotFound(TASK_NOT_FOUND)
        await self._readable_project(task.project_id, message=TASK_NOT_FOUND)
        return task

    async def _writable(self, task_id: ObjectId) -> tuple[TaskRecord, ProjectRecord]:
        task = await self.get(task_id)
        project = await self._readable_project(task.project_id, message=TASK_NOT_FOUND)
        require_task_writer(project, self._deps.require_viewer())
        return task, project

    async def project_page(
        self, project_id: ObjectId, task_filter: TaskFilterSpec, order: TaskOrderSpec, page: PageRequest
    ) -> Page[TaskRecord]:
        """A page of a readable project's tasks; pages of several projects in one request share a query."""
        await self._readable_project(project_id)
        return await self._deps.loaders.task_pages.load((project_id, (task_filter, order, page)))

    async def project_count(self, project_id: ObjectId, task_filter: TaskFilterSpec) -> int:
        await self._readable_project(project_id)
        return await self._deps.loaders.task_counts.load((project_id, task_filter))

    async def my_page(self, task_filter: TaskFilterSpec, order: TaskOrderSpec, page: PageRequest) -> Page[TaskRecord]:
        """A page of the tasks assigned to the viewer, from the task list cache (under their generation)."""
        viewer = self._deps.require_viewer()

        async def read(_: list[ObjectId]) -> dict[ObjectId, Page[TaskRecord]]:
            scope = await self._my_scope(task_filter)
            return {viewer.id: await tasks_db.page_tasks(self._db, scope=scope, order=order, page=page)}

        pages = await self._deps.runtime.task_lists.read_through(
            "assignee",
            "mine_page",
            [viewer.id],
            (viewer.is_admin, task_filter, order, page),
            read=read,
            encode=encode_page,
            decode=decode_page,
        )
        return pages[viewer.id]

    async def my_count(self, task_filter: TaskFilterSpec) -> int:
        viewer = self._deps.require_viewer()

        async def read(_: list[ObjectId]) -> dict[ObjectId, int]:
            return {viewer.id: await tasks_db.count_tasks(self._db, scope=await self._my_scope(task_filter))}

        counts = await self._deps.runtime.task_lists.read_through(
            "assignee",
            "mine_count",
            [viewer.id],
            (viewer.is_admin, task_filter),
            read=read,
            encode=str,
            decode=int,
        )
        return counts[viewer.id]

    async def _my_scope(self, task_filter: TaskFilterSpec) -> TaskScope:
        """Assigned to the viewer, in projects they can read: an assignment that raced their removal stays hidden."""
        viewer = self._deps.require_viewer()
        if viewer.is_admin:
            return TaskScope(assignee_id=viewer.id, filter=task_filter)
        if self._member_of is None:  # a cold page and its totalCount both need it
            self._member_of = await project_ids_of_member(self._db, user_id=viewer.id)
        return TaskScope(project_ids=self._member_of, assignee_id=viewer.id, filter=task_filter)

    async def search_scope(self, project_id: ObjectId | None) -> TaskScope:
        """One project (if readable), else every project the viewer belongs to (all, for admins)."""
        viewer = self._deps.require_viewer()
        if project_id is not None:
            await self._readable_project(project_id)
            return TaskScope(project_ids=[project_id])
        if viewer.is_admin:
            return TaskScope()
        return TaskScope(project_ids=await project_ids_of_member(self._db, user_id=viewer.id))

    @staticmethod
    def search_terms(query: str) -> list[str]:
        if len(query) > MAX_QUERY_LENGTH:
            raise BadUserInput(f"`query` must be at most {MAX_QUERY_LENGTH} characters.", field=("query",))
        terms = terms_of(query)
        if not terms:
            raise BadUserInput("`query` must contain at least one word.", field=("query",))
        return terms[:MAX_QUERY_TERMS]

    async def search(self, scope: TaskScope, terms: list[str], page: PageRequest) -> Page[TaskRecord]:
        return await tasks_db.search_tasks(self._db, scope=scope, terms=terms, page=page)

    async def count_search(self, scope: TaskScope, terms: list[str]) -> int:
        return await tasks_db.count_search(self._db, scope=scope, terms=terms)

    async def _record(
        self,
        session: AsyncClientSession | None,
        task: TaskRecord,
        kind: str,
        changed: list[str],
        now: datetime,
    ) -> list[OutboxEvent]:
        """The write's activity entry, its live event and the jobs it causes, in its transaction;
        publish the event after it."""
        actor_id = self._deps.require_viewer().id
        await append_event(
            self._db,
            project_id=task.project_id,
            task_id=task.id,
            actor_id=actor_id,
            kind=kind,
            changed_fields=changed,
            at=now,
            session=session,
        )
        event = await with_deliveries(self._deps, session, outbox.task_event(actor_id, kind, task, changed), task)
        if "assignee" in changed:
            event = replace(event, jobs=(*event.jobs, *assignment_notices(actor_id, task)))
        return await outbox.stage(self._db, session, [event])

    async def _publish(self, events: list[OutboxEvent]) -> None:
        await self._deps.runtime.outbox.publish(events)

    async def create(self, project_id: ObjectId, values: Mapping[str, Any]) -> TaskRecord:
        """`values`: title (required), description, status, priority, due_at, tags, assignee_id."""
        project = await self._readable_project(project_id)
        viewer = self._deps.require_viewer()
        require_task_writer(project, viewer)
        clean = _check_values(values, project)
        now = utcnow()
        document = {
            "project_id": project_id,
            "description": "",
            "status": "TODO",
            "priority": "MEDIUM",
            "due_at": None,
            "tags": [],
            "assignee_id": None,
            **clean,
            "created_by": viewer.id,
            "created_at": now,
            "updated_at": now,
            "completed_at": None,
        }
        document.update(_completion(document["status"], None, now))
        document.update(_reminders(None, document))

        async def write(session: AsyncClientSession | None) -> tuple[TaskRecord, list[OutboxEvent]]:
            task = await tasks_db.insert_task(self._db, values=document, session=session)
            return task, await self._record(session, task, "TASK_CREATED", [PUBLIC_NAMES[key] for key in clean], now)

        task, events = await self._db.in_transaction(write)
        await self._deps.loaders.tasks.store(task)
        await self._deps.runtime.task_lists.bump(projects=[project_id], assignees=[task.assignee_id])
        await self._deps.runtime.outbox.publish(events)
        return task

    async def update(
        self, task_id: ObjectId, changes: Mapping[str, Any], *, expected_version: int | None
    ) -> TaskRecord:
        """Partial update. With expected_version, a stale version is a VERSION_CONFLICT (no lost update);
        without, the change applies to the latest version (the last writer wins), never a conflict."""
        current, project = await self._writable(task_id)
        clean = _check_values(changes, project)
        if expected_version is not None and current.version != expected_version:
            raise VersionConflict(STALE_VERSION, field=("input", "expectedVersion"))
        if not _changed(current, clean):
            return current
        # Updates of one task from this process take turns: otherwise each would conflict with the
        # others in the database and be retried at once, over and over (32 concurrent writers of one
        # task cost 47 database commands per update). Other processes' updates still conflict, rarely.
        async with self._deps.runtime.task_writes.hold(task_id) as waited:
            # The task as read is tried first (one command fewer), unless an update came before this one.
            guess = None if waited else current
            written = None
            while written is None:  # more than once only without transactions, when another write came between
                try:
                    written = await self._db.in_transaction(
                        lambda session, guess=guess: self._write_update(
                            session, task_id, clean, expected_version, guess
                        )
                    )
                except _Unchanged as unchanged:
                    return unchanged.task
                guess = None
        replaced, updated, events = written
        await self._deps.loaders.tasks.store(updated)
        # The assignee the write replaced, not the one read before waiting for the task: another
        # update may have come between.
        await self._deps.runtime.task_lists.bump(
            projects=[updated.project_id], assignees=[replaced.assignee_id, updated.assignee_id]
        )
        await self._deps.runtime.outbox.publish(events)
        return updated

    async def _write_update(
        self,
        session: AsyncClientSession | None,
        task_id: ObjectId,
        clean: dict[str, Any],
        expected_version: int | None,
        guess: TaskRecord | None,
    ) -> tuple[TaskRecord, TaskRecord, list[OutboxEvent]] | None:
        """The update as of the task's latest version, with its activity and event: (the version it
        replaced, the new one, the events); None if another write came between reading and writing
        (possible only without a transaction). `guess`: the task as last read, tried first."""
        now = utcnow()
        if guess is not None:
            # Usually still the latest version: then one compare-and-set does it, with no read first.
            written = await self._apply(session, guess, _changed(guess, clean), now)
            if written is not None:
                return written
        # In a transaction the read is a write (of updated_at), which holds the task until the commit:
        # a concurrent update waits for this one (its transaction is retried) and then sees it.
        current = await tasks_db.read_task_for_update(self._db, task_id=task_id, now=now, session=session)
        if current is None:
            raise NotFound(TASK_NOT_FOUND)
        if expected_version is not None and current.version != expected_version:
            raise VersionConflict(STALE_VERSION, field=("input", "expectedVersion"))
        changed = _changed(current, clean)
        if not changed:
            raise _Unchanged(current)  # rolls back the updated_at the read wrote
        return await self._apply(session, current, changed, now)

    async def _apply(
        self, session: AsyncClientSession | None, current: TaskRecord, changed: dict[str, Any], now: datetime
    ) -> tuple[TaskRecord, TaskRecord, list[OutboxEvent]] | None:
        """`changed` written over `current` if the task is still at its version, with its activity and event."""
        update = {
            **changed,
            "updated_at": now,
            **_completion(changed.get("status"), current, now),
            **_reminders(current, changed),
        }
        updated = await tasks_db.update_task_if_version(self._db, current=current, changes=update, session=session)
        if updated is None:
            return None
        return (
            current,
            updated,
            await self._record(session, updated, "TASK_UPDATED", [PUBLIC_NAMES[key] for key in changed], now),
        )

    async def delete(self, task_id: ObjectId, *, expected_version: int | None) -> None:
        current, _ = await self._writable(task_id)
        if expected_version is not None and current.version != expected_version:
            raise VersionConflict(STALE_VERSION, field=("input", "expectedVersion"))

        async def write(session: AsyncClientSession | None) -> tuple[TaskRecord | None, list[OutboxEvent]]:
            deleted = await tasks_db.delete_task(self._db, task_id=task_id, version=expected_version, session=session)
            if deleted is None:
                return None, []
            return deleted, await self._record(session, deleted, "TASK_DELETED", [], utcnow())

        deleted, events = await self._db.in_transaction(write)
        if deleted is None:
            if expected_version is None:
                raise NotFound(TASK_NOT_FOUND)
            raise VersionConflict(STALE_VERSION, field=("input", "expectedVersion"))
        await self._deps.loaders.tasks.evict(task_id)
        await self._deps.runtime.task_lists.bump(projects=[deleted.project_id], assignees=[deleted.assignee_id])
        await self._deps.runtime.outbox.publish(events)


class _Unchanged(Exception):
    """The latest version already has the requested values: nothing to write (the transaction is abandoned)."""

    def __init__(self, task: TaskRecord) -> None:
        self.task = task


def _changed(current: TaskRecord, clean: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in clean.items() if getattr(current, key) != _as_stored(value)}


def _as_stored(value: Any) -> Any:
    """Lists are stored as lists but held as tuples in records; compare like with like."""
    return tuple(value) if isinstance(value, list) else value
