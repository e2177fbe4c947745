"""The reminders job (cron, every minute): a task's assignee (its creator while unassigned) is
notified once when its due date is REMINDER_LEAD_MINUTES away, and once when it has passed while
the task is open.

The reminders pending for each task are marks on it (db/tasks.py reminder_marks). A worker takes a
mark with a conditional update, in the transaction that stages the notification in the outbox: of
two workers, one takes it, and the notification is queued exactly when the mark is taken. Its cause
names the task and the due date, so a task reopened with the same date is not reminded again.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from taskql.clock import utcnow
from taskql.db.outbox import OutboxEvent
from taskql.db.tasks import DUE_SOON_MARK, OVERDUE_MARK, TaskRecord, claim_reminder, find_pending_reminders
from taskql.jobs.context import JobContext, job_context
from taskql.services import outbox
from taskql.services.follow_ups import notify_request

BATCH = 100


async def send_reminders(ctx: dict[str, Any]) -> dict[str, int]:
    jobs = job_context(ctx)
    now = utcnow()
    lead = timedelta(minutes=jobs.settings.reminder_lead_minutes)
    # Overdue first: it takes the due-soon mark too, so a task found late is reminded once, as overdue.
    overdue = await _remind(jobs, OVERDUE_MARK, "TASK_OVERDUE", after=None, until=now)
    due_soon = await _remind(jobs, DUE_SOON_MARK, "TASK_DUE_SOON", after=now, until=now + lead)
    return {"due_soon": due_soon, "overdue": overdue}


async def _remind(jobs: JobContext, mark: str, kind: str, *, after: datetime | None, until: datetime) -> int:
    reminded = 0
    while True:
        pending = await find_pending_reminders(jobs.db, mark=mark, after=after, until=until, limit=BATCH)
        for task, due_at in pending:
            events = await jobs.db.in_transaction(
                lambda session, task=task, due_at=due_at: _take(jobs, session, task, mark, kind, due_at)
            )
            if events:
                await jobs.outbox.publish(events)
                reminded += 1
        if len(pending) < BATCH:
            return reminded


async def _take(
    jobs: JobContext, session: AsyncClientSession | None, task: TaskRecord, mark: str, kind: str, due_at: datetime
) -> list[OutboxEvent]:
    if not await claim_reminder(jobs.db, task_id=task.id, mark=mark, due_at=due_at, session=session):
        return []  # another worker took it, or the task changed since it was read
    notice = notify_request(
        kind,
        user_id=task.assignee_id or task.created_by,
        project_id=task.project_id,
        task_id=task.id,
        cause=f"{kind}:{task.id}:{due_at.isoformat()}",
    )
    return await outbox.stage(jobs.db, session, [outbox.jobs_only(notice)])
