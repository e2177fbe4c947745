"""The cleanup job (cron, hourly): what no one needs any more, deleted in bounded batches, each
found through an index.

- refresh sessions past their expiry;
- notifications read more than NOTIFICATION_RETENTION_DAYS ago;
- the records of emails sent that long ago (db/emails.py: by then no job can repeat them);
- webhook deliveries made or failed more than WEBHOOK_DELIVERY_RETENTION_DAYS ago;
- exports past their expiry (EXPORT_TTL_HOURS), with their files.

Outbox entries need no sweep: each is deleted once it is published (services/outbox.py). The
queue's finished jobs expire in Redis by themselves (saq's ttl, jobs/queue.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from taskql.clock import utcnow
from taskql.db.client import Database
from taskql.db.emails import delete_sent_before
from taskql.db.exports import delete_export, expired_exports
from taskql.db.notifications import delete_read_before
from taskql.db.sessions import delete_expired_sessions
from taskql.db.webhooks import delete_finished_before
from taskql.jobs.context import job_context

BATCH = 1000


async def cleanup(ctx: dict[str, Any]) -> dict[str, int]:
    jobs = job_context(ctx)
    db = jobs.db
    now = utcnow()
    retained_since = now - timedelta(days=jobs.settings.notification_retention_days)
    deliveries_since = now - timedelta(days=jobs.settings.webhook_delivery_retention_days)
    return {
        "sessions": await _in_batches(lambda: delete_expired_sessions(db, before=now, limit=BATCH)),
        "notifications": await _in_batches(lambda: delete_read_before(db, before=retained_since, limit=BATCH)),
        "emails": await _in_batches(lambda: delete_sent_before(db, before=retained_since, limit=BATCH)),
        "webhook_deliveries": await _in_batches(
            lambda: delete_finished_before(db, before=deliveries_since, limit=BATCH)
        ),
        "exports": await _in_batches(lambda: _delete_expired_exports(db, now)),
    }


async def _delete_expired_exports(db: Database, now: datetime) -> int:
    expired = await expired_exports(db, now=now, limit=BATCH)
    for export in expired:
        await delete_export(db, export=export)
    return len(expired)


async def _in_batches(delete_batch: Callable[[], Awaitable[int]]) -> int:
    deleted = 0
    while True:
        batch = await delete_batch()
        deleted += batch
        if batch < BATCH:
            return deleted
