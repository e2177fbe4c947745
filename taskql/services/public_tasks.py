"""A task as TaskQL shows it outside GraphQL, in webhook bodies and exports: the API's IDs and
RFC 3339 times, the fields clients know."""

from __future__ import annotations

from typing import Any

from taskql.db.tasks import TaskRecord
from taskql.public_ids import global_id, rfc3339


def public_task(task: TaskRecord) -> dict[str, Any]:
    return {
        "id": global_id("Task", task.id),
        "title": task.title,
        "description": task.description,
        "status": task.status,
        "priority": task.priority,
        "dueAt": None if task.due_at is None else rfc3339(task.due_at),
        "tags": list(task.tags),
        "assigneeId": None if task.assignee_id is None else global_id("User", task.assignee_id),
        "createdBy": global_id("User", task.created_by),
        "createdAt": rfc3339(task.created_at),
        "updatedAt": rfc3339(task.updated_at),
        "completedAt": None if task.completed_at is None else rfc3339(task.completed_at),
        "version": task.version,
    }
