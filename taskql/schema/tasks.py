from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry
from bson import ObjectId

from taskql.db.pagination import PageRequest
from taskql.db.tasks import TaskFilterSpec, TaskOrderSpec, TaskRecord, TaskStatsRecord
from taskql.schema.activity import ActivityEvent
from taskql.schema.errors import UserError
from taskql.schema.relay import Connection, Node, decode_id, encode_id, to_connection
from taskql.schema.users import User, load_user
from taskql.services.validation import Checker

if TYPE_CHECKING:
    from taskql.schema.projects import Project

_PROJECTS = "taskql.schema.projects"


@strawberry.enum
class TaskStatus(Enum):
    TODO = "TODO"
    IN_PROGRESS = "IN_PROGRESS"
    DONE = "DONE"


@strawberry.enum
class TaskPriority(Enum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    URGENT = "URGENT"


@strawberry.enum
class TaskOrderField(Enum):
    CREATED_AT = "CREATED_AT"
    UPDATED_AT = "UPDATED_AT"
    DUE_AT = "DUE_AT"
    PRIORITY = "PRIORITY"


@strawberry.enum
class OrderDirection(Enum):
    ASC = "ASC"
    DESC = "DESC"


@strawberry.input
class TaskFilter:
    status: list[TaskStatus] | None = None
    priority: list[TaskPriority] | None = None
    assignee_id: strawberry.ID | None = None
    tag: str | None = None
    due_before: datetime | None = None
    due_after: datetime | None = None


@strawberry.input(description="Tasks without a due date sort after all dated tasks in ASC order (first in DESC).")
class TaskOrder:
    field: TaskOrderField = TaskOrderField.CREATED_AT
    direction: OrderDirection = OrderDirection.DESC


@strawberry.type
class Task(Node):
    record: strawberry.Private[TaskRecord]
    id: strawberry.ID
    title: str
    description: str
    status: TaskStatus
    priority: TaskPriority
    due_at: datetime | None
    tags: list[str]
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    version: int = strawberry.field(description="Increases by one on every change; send it back as expectedVersion.")

    @classmethod
    def from_record(cls, task: TaskRecord) -> Task:
        return cls(
            record=task,
            id=encode_id("Task", task.id),
            title=task.title,
            description=task.description,
            status=TaskStatus(task.status),
            priority=TaskPriority(task.priority),
            due_at=task.due_at,
            tags=list(task.tags),
            created_at=task.created_at,
            updated_at=task.updated_at,
            completed_at=task.completed_at,
            version=task.version,
        )

    @strawberry.field
    async def project(self, info: strawberry.Info) -> Annotated[Project, strawberry.lazy(_PROJECTS)]:
        from taskql.schema.projects import Project

        return Project.from_record(await info.context.projects.get(self.record.project_id))

    @strawberry.field
    async def assignee(self, info: strawberry.Info) -> User | None:
        if self.record.assignee_id is None:
            return None
        return await load_user(info, self.record.assignee_id)

    @strawberry.field
    async def created_by(self, info: strawberry.Info) -> User:
        return await load_user(info, self.record.created_by)

    @strawberry.field(description="What happened to this task, oldest first.")
    async def activity(
        self,
        info: strawberry.Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[ActivityEvent]:
        page = PageRequest(first=first, after=after, last=last, before=before)
        service = info.context.activity
        return to_connection(
            await service.page_for_task(self.record, page),
            ActivityEvent.from_record,
            lambda: service.count_for_task(self.record),
        )


@strawberry.type
class TaskStatusCount:
    status: TaskStatus
    count: int


@strawberry.type
class TaskPriorityCount:
    priority: TaskPriority
    count: int


@strawberry.type
class ProjectStats:
    total: int
    by_status: list[TaskStatusCount] = strawberry.field(description="Every status, zero counts included.")
    by_priority: list[TaskPriorityCount] = strawberry.field(description="Every priority, zero counts included.")
    overdue: int = strawberry.field(description="Open tasks whose due date has passed.")
    due_next_7_days: int = strawberry.field(name="dueNext7Days", description="Open tasks due within a week.")

    @classmethod
    def from_record(cls, stats: TaskStatsRecord) -> ProjectStats:
        return cls(
            total=stats.total,
            by_status=[TaskStatusCount(status=s, count=stats.by_status.get(s.value, 0)) for s in TaskStatus],
            by_priority=[TaskPriorityCount(priority=p, count=stats.by_priority.get(p.value, 0)) for p in TaskPriority],
            overdue=stats.overdue,
            due_next_7_days=stats.due_soon,
        )


@strawberry.input
class CreateTaskInput:
    project_id: strawberry.ID
    title: str
    description: str = ""
    status: TaskStatus = TaskStatus.TODO
    priority: TaskPriority = TaskPriority.MEDIUM
    due_at: datetime | None = None
    tags: list[str] = strawberry.field(default_factory=list)
    assignee_id: strawberry.ID | None = None


@strawberry.input(description="Only the fields you send change; send null to clear dueAt or assigneeId.")
class UpdateTaskInput:
    id: strawberry.ID
    expected_version: int | None = strawberry.field(
        default=None, description="Fail with VERSION_CONFLICT unless the task is still at this version."
    )
    title: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    status: TaskStatus | None = strawberry.UNSET
    priority: TaskPriority | None = strawberry.UNSET
    due_at: datetime | None = strawberry.UNSET
    tags: list[str] | None = strawberry.UNSET
    assignee_id: strawberry.ID | None = strawberry.UNSET


@strawberry.input
class DeleteTaskInput:
    id: strawberry.ID
    expected_version: int | None = None


@strawberry.type
class TaskPayload:
    task: Task | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class DeleteTaskPayload:
    deleted_task_id: strawberry.ID | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


def task_filter_spec(task_filter: TaskFilter | None) -> TaskFilterSpec:
    if task_filter is None:
        return TaskFilterSpec()
    return TaskFilterSpec(
        statuses=tuple(s.value for s in task_filter.status or ()),
        priorities=tuple(p.value for p in task_filter.priority or ()),
        assignee_id=decode_id(task_filter.assignee_id, "User", argument="filter.assigneeId")
        if task_filter.assignee_id
        else None,
        tag=task_filter.tag.strip().lower() if task_filter.tag is not None else None,
        due_before=_filter_date(task_filter.due_before, "dueBefore"),
        due_after=_filter_date(task_filter.due_after, "dueAfter"),
    )


def _filter_date(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    check = Checker()
    value = check.datetime(("filter", name), value)
    check.raise_if_any()
    return value


def task_order_spec(order: TaskOrder | None) -> TaskOrderSpec:
    return TaskOrderSpec(order.field.value, order.direction.value) if order else TaskOrderSpec()


async def project_tasks(
    info: strawberry.Info,
    project_id: ObjectId,
    task_filter: TaskFilter | None,
    order: TaskOrder | None,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
) -> Connection[Task]:
    """A project's tasks as a keyset-paginated connection: `Query.tasks` and `Project.tasks`."""
    page = PageRequest(first=first, after=after, last=last, before=before)
    spec = task_filter_spec(task_filter)
    service = info.context.tasks
    records = await service.project_page(project_id, spec, task_order_spec(order), page)
    return to_connection(records, Task.from_record, lambda: service.project_count(project_id, spec))
