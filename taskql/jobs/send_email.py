"""The send_email job: one email per cause, however often its job runs (db/emails.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bson import ObjectId

from taskql.clock import utcnow
from taskql.db import emails as emails_db
from taskql.db import projects as projects_db
from taskql.db import tasks as tasks_db
from taskql.db import users as users_db
from taskql.db.emails import Claim
from taskql.jobs.context import job_context
from taskql.jobs.messages import TASK_TEMPLATES, Subject, compose


class EmailBusy(Exception):
    """Another attempt is sending this email: this one is retried after its lease."""


async def send_email(
    ctx: dict[str, Any],
    *,
    cause: str,
    template: str,
    user_id: str,
    project_id: str | None = None,
    task_id: str | None = None,
    actor_id: str | None = None,
) -> str:
    jobs = job_context(ctx)
    db = jobs.db
    user = await users_db.find_user(db, user_id=ObjectId(user_id))
    if user is None:
        return "skipped: the user was deleted"
    if template in TASK_TEMPLATES and not user.email_notifications:
        return "skipped: the user turned task emails off"
    about = Subject(user=user)
    if task_id is not None and project_id is not None:
        tasks = await tasks_db.find_tasks_by_ids(db, ids=[ObjectId(task_id)])
        projects = await projects_db.find_projects_by_ids(db, ids=[ObjectId(project_id)])
        if not tasks or not projects:
            return "skipped: the task was deleted"
        actor = None if actor_id is None else await users_db.find_user(db, user_id=ObjectId(actor_id))
        about = Subject(user=user, task=tasks[0], project=projects[0], actor=actor)
    message = compose(template, about, cause=cause, settings=jobs.settings)
    lease = timedelta(seconds=jobs.settings.job_timeout_seconds)
    claim = await emails_db.claim_email(db, cause=cause, user_id=user.id, now=utcnow(), lease=lease)
    if claim is Claim.SENT:
        return "skipped: sent before"
    if claim is Claim.BUSY:
        raise EmailBusy(f"the email of {cause} is being sent by another attempt")
    try:
        await jobs.mailer.send(message)
    except Exception:
        await emails_db.release_email(db, cause=cause)
        raise
    await emails_db.mark_sent(db, cause=cause, now=utcnow())
    return f"sent to {user.email}"
