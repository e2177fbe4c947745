"""Task lists, search and task mutations."""

from __future__ import annotations

from typing import Any

import strawberry

from taskql.db.pagination import PageRequest
from taskql.schema.errors import attempt
from taskql.schema.relay import Connection, decode_id, to_connection
from taskql.schema.tasks import (
    CreateTaskInput,
    DeleteTaskInput,
    DeleteTaskPayload,
    Task,
    TaskFilter,
    TaskOrder,
    TaskPayload,
    UpdateTaskInput,
    project_tasks,
    task_filter_spec,
    task_order_spec,
)

# UpdateTaskInput / CreateTaskInput field -> service field.
_TASK_FIELDS = ("title", "description", "status", "priority", "due_at", "tags", "assignee_id")


async def tasks(
    info: strawberry.Info,
    project_id: strawberry.ID,
    filter: TaskFilter | None = None,
    order_by: TaskOrder | None = None,
    first: int | None = None,
    after: str | None = None,
    last: int | None = None,
    before: str | None = None,
) -> Connection[Task]:
    """A project's tasks, filtered and ordered, as a keyset-paginated connection."""
    project = decode_id(project_id, "Project", argument="projectId")
    return await project_tasks(info, project, filter, order_by, first, after, last, before)


async def my_tasks(
    info: strawberry.Info,
    filter: TaskFilter | None = None,
    order_by: TaskOrder | None = None,
    first: int | None = None,
    after: str | None = None,
) -> Connection[Task]:
    """Tasks assigned to the viewer, across projects."""
    page = PageRequest(first=first, after=after)
    service, spec = info.context.tasks, task_filter_spec(filter)
    records = await service.my_page(spec, task_order_spec(order_by), page)
    return to_connection(records, Task.from_record, lambda: service.my_count(spec))


async def search_tasks(
    info: strawberry.Info,
    query: str,
    project_id: strawberry.ID | None = None,
    first: int | None = None,
    after: str | None = None,
) -> Connection[Task]:
    """Tasks containing every word of `query` (case- and accent-insensitive); title matches first."""
    service = info.context.tasks
    page = PageRequest(first=first, after=after)
    terms = service.search_terms(query)
    scope = await service.search_scope(decode_id(project_id, "Project", argument="projectId") if project_id else None)
    records = await service.search(scope, terms, page)
    return to_connection(records, Task.from_record, lambda: service.count_search(scope, terms))


async def task(info: strawberry.Info, id: strawberry.ID) -> Task | None:
    """A task the viewer can see, by ID."""
    return Task.from_record(await info.context.tasks.get(decode_id(id, "Task")))


def _values(task_input: CreateTaskInput | UpdateTaskInput) -> dict[str, Any]:
    """The task fields present in the input (omitted ones are UNSET), with enums and IDs decoded."""
    values: dict[str, Any] = {}
    for name in _TASK_FIELDS:
        value = getattr(task_input, name)
        if value is strawberry.UNSET:
            continue
        if name == "assignee_id" and value is not None:
            value = decode_id(value, "User", argument="input.assigneeId")
        elif name in ("status", "priority") and value is not None:
            value = value.value
        values[name] = value
    return values


def _payload(record: Any, errors: list) -> TaskPayload:
    return TaskPayload(task=Task.from_record(record) if record else None, user_errors=errors)


async def create_task(info: strawberry.Info, input: CreateTaskInput) -> TaskPayload:
    """Create a task in a project (editors and owners)."""
    project_id = decode_id(input.project_id, "Project", argument="input.projectId")
    return _payload(*await attempt(info.context.tasks.create(project_id, _values(input))))


async def update_task(info: strawberry.Info, input: UpdateTaskInput) -> TaskPayload:
    """Change only the fields sent; with expectedVersion, a stale version is a VERSION_CONFLICT."""
    task_id = decode_id(input.id, "Task", argument="input.id")
    work = info.context.tasks.update(task_id, _values(input), expected_version=input.expected_version)
    return _payload(*await attempt(work))


async def delete_task(info: strawberry.Info, input: DeleteTaskInput) -> DeleteTaskPayload:
    """Delete a task (editors and owners); its activity trail is kept."""
    task_id = decode_id(input.id, "Task", argument="input.id")
    _, errors = await attempt(info.context.tasks.delete(task_id, expected_version=input.expected_version))
    return DeleteTaskPayload(deleted_task_id=None if errors else input.id, user_errors=errors)
