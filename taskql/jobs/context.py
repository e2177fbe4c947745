"""What every job gets: the process's parts, built once by the worker (jobs/worker.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from taskql.db.client import Database
from taskql.events.broker import EventBroker
from taskql.jobs.mailer import Mailer
from taskql.jobs.queue import JobQueue
from taskql.services.outbox import Outbox
from taskql.settings import Settings

CONTEXT_KEY = "taskql"  # in saq's per-worker context dict


@dataclass(frozen=True)
class JobContext:
    settings: Settings
    db: Database
    events: EventBroker  # publishes notifications to their subscribers
    outbox: Outbox  # jobs that cause jobs stage them with their write (reminders)
    queue: JobQueue  # jobs that cause jobs after they are done (a notification's email)
    mailer: Mailer


def job_context(ctx: dict[str, Any]) -> JobContext:
    context: JobContext = ctx[CONTEXT_KEY]
    return context
