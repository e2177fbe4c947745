"""The notify job: one in-app notification per cause, live to its user, and its email if they want it."""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from taskql.clock import utcnow
from taskql.db import notifications as notifications_db
from taskql.db import projects as projects_db
from taskql.db import tasks as tasks_db
from taskql.db import users as users_db
from taskql.db.notifications import NotificationRecord
from taskql.jobs.context import job_context
from taskql.jobs.messages import TASK_TEMPLATES
from taskql.services.follow_ups import email_request
from taskql.services.notifications import notification_channel

# The notifications that are also emailed (to users who have not turned task emails off).
EMAILED = {"TASK_ASSIGNED": "task_assigned", "TASK_DUE_SOON": "task_due_soon"}
assert set(EMAILED.values()) <= TASK_TEMPLATES


async def notify(
    ctx: dict[str, Any],
    *,
    cause: str,
    kind: str,
    user_id: str,
    project_id: str,
    task_id: str | None = None,
    actor_id: str | None = None,
) -> str:
    jobs = job_context(ctx)
    user = await users_db.find_user(jobs.db, user_id=ObjectId(user_id))
    projects = await projects_db.find_projects_by_ids(jobs.db, ids=[ObjectId(project_id)])
    if user is None or not projects or (projects[0].role_of(user.id) is None and user.role != "ADMIN"):
        return "skipped: not a member of the project any more"
    if task_id is not None and not await tasks_db.find_tasks_by_ids(jobs.db, ids=[ObjectId(task_id)]):
        return "skipped: the task was deleted"
    record = await notifications_db.insert_notification(
        jobs.db,
        cause=cause,
        record=NotificationRecord(
            id=ObjectId(),
            user_id=user.id,
            kind=kind,
            project_id=ObjectId(project_id),
            task_id=None if task_id is None else ObjectId(task_id),
            actor_id=None if actor_id is None else ObjectId(actor_id),
            created_at=utcnow(),
            read_at=None,
        ),
    )
    # Again on a retry: the log refuses the second copy (by the notification's id).
    stream_id = await jobs.events.publish(notification_channel(user.id), record.to_doc(), event_id=str(record.id))
    if stream_id is not None:
        await notifications_db.set_stream_id(jobs.db, notification_id=record.id, stream_id=stream_id)
    template = EMAILED.get(kind)
    if template is not None and user.email_notifications:
        ids = {"project_id": project_id, "task_id": task_id, "actor_id": actor_id}
        request = email_request(template, user_id=user.id, **{k: ObjectId(v) for k, v in ids.items() if v is not None})
        await jobs.queue.enqueue(request, cause=cause)
    return "notified"
