"""Every index the repositories rely on, created idempotently at startup."""

from __future__ import annotations

from pymongo import ASCENDING, DESCENDING, IndexModel

from taskql.db.client import EXPORT_FILES_BUCKET, Database
from taskql.db.tasks import DUE_SOON_MARK, OVERDUE_MARK

# Keys a task connection can be ordered by (see db/tasks.py ORDER_KEYS); each is paginated
# on (scope, key, _id), so each needs that index for a project scope and an assignee scope.
TASK_ORDER_KEYS = ("created_at", "updated_at", "due_sort", "priority_rank")

INDEXES: dict[str, list[IndexModel]] = {
    "users": [IndexModel([("email", ASCENDING)], unique=True, name="email_unique")],
    "sessions": [
        IndexModel([("token_hash", ASCENDING)], unique=True, name="token_hash_unique"),
        IndexModel([("user_id", ASCENDING)], name="user"),
        IndexModel([("family_id", ASCENDING)], name="family"),
        # Expired refresh tokens are swept by the server.
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expiry_ttl"),
    ],
    "projects": [
        IndexModel(
            [("members.user_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)], name="member_created"
        ),
        IndexModel([("created_at", DESCENDING), ("_id", DESCENDING)], name="created"),
    ],
    "tasks": [
        *(
            IndexModel([("project_id", ASCENDING), (key, ASCENDING), ("_id", ASCENDING)], name=f"project_{key}")
            for key in TASK_ORDER_KEYS
        ),
        *(
            IndexModel([("assignee_id", ASCENDING), (key, ASCENDING), ("_id", ASCENDING)], name=f"assignee_{key}")
            for key in TASK_ORDER_KEYS
        ),
        IndexModel(
            [("project_id", ASCENDING), ("status", ASCENDING), ("due_sort", ASCENDING)], name="project_status_due"
        ),
        # Term first: a (project_id, search_terms) index would also match plain project_id queries, and
        # SecantusDB's planner then picks it (multikey, every key of every task) over the sort indexes.
        IndexModel([("search_terms", ASCENDING), ("project_id", ASCENDING)], name="search_terms_project"),
        # Pending due-date reminders (db/tasks.py reminder_marks), found every minute by jobs/reminders.py.
        IndexModel([(DUE_SOON_MARK, ASCENDING)], name="due_soon_reminder"),
        IndexModel([(OVERDUE_MARK, ASCENDING)], name="overdue_reminder"),
    ],
    "activity": [
        IndexModel([("task_id", ASCENDING), ("at", ASCENDING), ("_id", ASCENDING)], name="task_at"),
        IndexModel([("project_id", ASCENDING), ("at", ASCENDING), ("_id", ASCENDING)], name="project_at"),
    ],
    # The relay looks for events left unpublished for a while, oldest first.
    "outbox": [IndexModel([("created_at", ASCENDING), ("_id", ASCENDING)], name="created")],
    "notifications": [
        IndexModel([("cause", ASCENDING)], unique=True, name="cause_unique"),  # one per cause (db/notifications.py)
        IndexModel([("user_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)], name="user_created"),
        IndexModel([("read_at", ASCENDING)], name="read"),  # cleanup: read before the retention
    ],
    "emails": [IndexModel([("sent_at", ASCENDING)], name="sent")],  # cleanup
    "webhooks": [IndexModel([("project_id", ASCENDING), ("created_at", ASCENDING)], name="project")],
    # GridFS's own index, under its usual name: a file's chunks in order (db/export_files.py writes them).
    f"{EXPORT_FILES_BUCKET}.chunks": [
        IndexModel([("files_id", ASCENDING), ("n", ASCENDING)], unique=True, name="files_id_1_n_1")
    ],
    "webhook_deliveries": [
        # The next delivery of a webhook (in order), and its delivery history (newest first).
        IndexModel(
            [("webhook_id", ASCENDING), ("status", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)],
            name="webhook_next",
        ),
        IndexModel(
            [("webhook_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)], name="webhook_history"
        ),
        IndexModel([("status", ASCENDING), ("next_attempt_at", ASCENDING)], name="due"),  # webhooks_due
        IndexModel([("project_id", ASCENDING)], name="project"),  # the project's deletion
        IndexModel([("created_at", ASCENDING)], name="created"),  # cleanup
    ],
    "exports": [
        IndexModel([("user_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)], name="user_created"),
        IndexModel([("expires_at", ASCENDING)], name="expiry"),  # cleanup
    ],
}


async def ensure_indexes(db: Database) -> None:
    for collection, models in INDEXES.items():
        await db.db[collection].create_indexes(models)
