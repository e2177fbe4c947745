"""The jobs that writes ask for: staged with the write in the outbox (services/outbox.py), queued
once it is committed, run by a worker (jobs/)."""

from __future__ import annotations

from bson import ObjectId

from taskql.db.outbox import JobRequest
from taskql.db.tasks import TaskRecord

NOTIFY = "notify"  # jobs/notify.py
SEND_EMAIL = "send_email"  # jobs/send_email.py
DELIVER_WEBHOOK = "deliver_webhook"  # jobs/webhooks.py
EXPORT_TASKS = "export_tasks"  # jobs/exports.py


def notify_request(
    kind: str,
    *,
    user_id: ObjectId,
    project_id: ObjectId,
    task_id: ObjectId | None = None,
    actor_id: ObjectId | None = None,
    cause: str | None = None,
) -> JobRequest:
    """Notify `user_id` (an in-app notification, and its email for the kinds that have one)."""
    ids = {"user_id": user_id, "project_id": project_id, "task_id": task_id, "actor_id": actor_id}
    kwargs: dict[str, str] = {"kind": kind, **{name: str(value) for name, value in ids.items() if value is not None}}
    return JobRequest(NOTIFY, kwargs, cause)


def email_request(template: str, *, user_id: ObjectId, **ids: ObjectId | None) -> JobRequest:
    """Email `user_id` (jobs/messages.py has the templates); `ids`: project_id, task_id, actor_id."""
    kwargs = {"template": template, "user_id": str(user_id)}
    kwargs.update({name: str(value) for name, value in ids.items() if value is not None})
    return JobRequest(SEND_EMAIL, kwargs)


def assignment_notices(actor_id: ObjectId, task: TaskRecord) -> tuple[JobRequest, ...]:
    """A task just given to someone: they are notified, unless they took it themselves."""
    if task.assignee_id is None or task.assignee_id == actor_id:
        return ()
    return (
        notify_request(
            "TASK_ASSIGNED", user_id=task.assignee_id, project_id=task.project_id, task_id=task.id, actor_id=actor_id
        ),
    )


def drain_request(webhook_id: ObjectId) -> JobRequest:
    """Post the webhook's pending deliveries, in order: one drain per webhook waits or runs at a time."""
    return JobRequest(DELIVER_WEBHOOK, {"webhook_id": str(webhook_id)}, cause=f"webhook:{webhook_id}")


def export_request(export_id: ObjectId) -> JobRequest:
    return JobRequest(EXPORT_TASKS, {"export_id": str(export_id)}, cause=f"export:{export_id}")
