from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession

from taskql.db.client import Database
from taskql.db.pagination import Page, PageRequest, SortKey, count, count_children, paginate, paginate_children
from taskql.db.search_terms import terms_of

PRIORITY_RANK = {"LOW": 0, "MEDIUM": 1, "HIGH": 2, "URGENT": 3}
# Tasks without a due date sort after every dated task (ascending), through this stored sort key.
NO_DUE_DATE = datetime(9999, 12, 31, tzinfo=UTC)
ORDER_FIELDS = {
    "CREATED_AT": "created_at",
    "UPDATED_AT": "updated_at",
    "DUE_AT": "due_sort",
    "PRIORITY": "priority_rank",
}
# Derived fields are for queries only; they are never loaded into records.
_HIDDEN = {"search_terms": 0, "title_terms": 0}


@dataclass(frozen=True)
class TaskRecord:
    id: ObjectId
    project_id: ObjectId
    title: str
    description: str
    status: str
    priority: str
    due_at: datetime | None
    tags: tuple[str, ...]
    assignee_id: ObjectId | None
    created_by: ObjectId
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    version: int

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> TaskRecord:
        return cls(
            id=doc["_id"],
            project_id=doc["project_id"],
            title=doc["title"],
            description=doc["description"],
            status=doc["status"],
            priority=doc["priority"],
            due_at=doc.get("due_at"),
            tags=tuple(doc.get("tags", ())),
            assignee_id=doc.get("assignee_id"),
            created_by=doc["created_by"],
            created_at=doc["created_at"],
            updated_at=doc["updated_at"],
            completed_at=doc.get("completed_at"),
            version=doc["version"],
        )

    def to_doc(self) -> dict[str, Any]:
        return {
            "_id": self.id,
            "project_id": self.project_id,
            "title": self.title,
            "description": self.description,
            "status": self.status,
            "priority": self.priority,
            "due_at": self.due_at,
            "tags": list(self.tags),
            "assignee_id": self.assignee_id,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "completed_at": self.completed_at,
            "version": self.version,
        }


@dataclass(frozen=True)
class TaskFilterSpec:
    statuses: tuple[str, ...] = ()  # tuples: filters are part of DataLoader keys, so they must hash
    priorities: tuple[str, ...] = ()
    assignee_id: ObjectId | None = None
    tag: str | None = None
    due_before: datetime | None = None
    due_after: datetime | None = None

    def to_query(self) -> dict[str, Any]:
        query: dict[str, Any] = {}
        if self.statuses:
            query["status"] = {"$in": list(self.statuses)}
        if self.priorities:
            query["priority"] = {"$in": list(self.priorities)}
        if self.assignee_id is not None:
            query["assignee_id"] = self.assignee_id
        if self.tag is not None:
            query["tags"] = self.tag
        due: dict[str, datetime] = {}
        if self.due_before is not None:
            due["$lt"] = self.due_before
        if self.due_after is not None:
            due["$gt"] = self.due_after
        if due:
            query["due_at"] = due
        return query


@dataclass(frozen=True)
class TaskOrderSpec:
    field: str = "CREATED_AT"  # a key of ORDER_FIELDS
    direction: str = "DESC"  # ASC | DESC

    @property
    def sort_key(self) -> SortKey:
        return SortKey(
            name=f"tasks.{self.field}.{self.direction}",
            field=ORDER_FIELDS[self.field],
            direction=1 if self.direction == "ASC" else -1,
        )


@dataclass(frozen=True)
class TaskScope:
    """Which tasks a list covers: a project, a set of projects and/or an assignee."""

    project_ids: Sequence[ObjectId] | None = None
    assignee_id: ObjectId | None = None
    filter: TaskFilterSpec = field(default_factory=TaskFilterSpec)

    def to_query(self) -> dict[str, Any]:
        query = self.filter.to_query()
        if self.project_ids is not None:
            ids = list(self.project_ids)
            query["project_id"] = ids[0] if len(ids) == 1 else {"$in": ids}
        if self.assignee_id is not None:
            query["assignee_id"] = self.assignee_id
        return query

    def index_prefix(self) -> dict[str, Any]:
        """The equality that leads this scope's indexes (see db/indexes.py), run as a first `$match`."""
        if self.project_ids is not None and len(self.project_ids) == 1:
            return {"project_id": self.project_ids[0]}
        if self.assignee_id is not None:
            return {"assignee_id": self.assignee_id}
        return {}


def derived_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """Fields computed from the task's own values, recomputed on every write."""
    return {
        "priority_rank": PRIORITY_RANK[doc["priority"]],
        "due_sort": doc["due_at"] or NO_DUE_DATE,
        "title_terms": terms_of(doc["title"]),
        "search_terms": terms_of(f"{doc['title']} {doc['description']}"),
    }


# A task's pending due-date reminders, each the due date it is for (None: none pending): armed for
# an open task's due date by its writes (services/tasks.py), claimed once by jobs/reminders.py.
DUE_SOON_MARK = "remind_due_at"
OVERDUE_MARK = "overdue_due_at"


def reminder_marks(due_at: datetime | None) -> dict[str, Any]:
    return {DUE_SOON_MARK: due_at, OVERDUE_MARK: due_at}


async def find_pending_reminders(
    db: Database, *, mark: str, after: datetime | None, until: datetime, limit: int
) -> list[tuple[TaskRecord, datetime]]:
    """Tasks whose `mark` reminder is pending for a due date in (after, until], earliest first,
    with that due date."""
    bounds: dict[str, Any] = {"$lte": until} if after is None else {"$gt": after, "$lte": until}
    cursor = db.tasks.find({mark: bounds}, projection=_HIDDEN).sort(mark, 1).limit(limit)
    return [(TaskRecord.from_doc(doc), doc[mark]) async for doc in cursor]


async def claim_reminder(
    db: Database, *, task_id: ObjectId, mark: str, due_at: datetime, session: AsyncClientSession | None = None
) -> bool:
    """Takes the task's `mark` reminder for `due_at` if it is still pending for that date: True for
    one caller only. The overdue reminder also takes the due-soon one, which has no purpose left."""
    clears = reminder_marks(None) if mark == OVERDUE_MARK else {DUE_SOON_MARK: None}
    result = await db.tasks.update_one({"_id": task_id, mark: due_at}, {"$set": clears}, session=session)
    return result.modified_count == 1


async def insert_task(db: Database, *, values: dict[str, Any], session: AsyncClientSession | None = None) -> TaskRecord:
    doc = {"_id": ObjectId(), **values, "version": 1}
    doc.update(derived_fields(doc))
    await db.tasks.insert_one(doc, session=session)
    return TaskRecord.from_doc(doc)


async def find_tasks_by_ids(
    db: Database, *, ids: Sequence[ObjectId], session: AsyncClientSession | None = None
) -> list[TaskRecord]:
    cursor = db.tasks.find({"_id": {"$in": list(ids)}}, projection=_HIDDEN, session=session)
    return [TaskRecord.from_doc(doc) async for doc in cursor]


async def read_task_for_update(
    db: Database, *, task_id: ObjectId, now: datetime, session: AsyncClientSession | None
) -> TaskRecord | None:
    """The task as it is. In a transaction (`session`) it is read by writing its updated_at, which
    holds it until the commit: a concurrent transaction that writes it conflicts and is retried
    after this one, so nothing comes between this read and the update that follows."""
    if session is None:
        doc = await db.tasks.find_one({"_id": task_id}, projection=_HIDDEN)
    else:
        doc = await db.tasks.find_one_and_update(
            {"_id": task_id}, {"$set": {"updated_at": now}}, projection=_HIDDEN, session=session
        )  # returns the document as it was before
    return TaskRecord.from_doc(doc) if doc else None


async def update_task_if_version(
    db: Database,
    *,
    current: TaskRecord,
    changes: dict[str, Any],
    session: AsyncClientSession | None = None,
) -> TaskRecord | None:
    """Apply `changes` only if the task is still at `current.version` (compare-and-set); None if not."""
    merged = {
        "title": current.title,
        "description": current.description,
        "priority": current.priority,
        "due_at": current.due_at,
        **changes,
    }
    derived = derived_fields(merged)
    doc = await db.tasks.find_one_and_update(
        {"_id": current.id, "version": current.version},
        {"$set": {**changes, **derived}, "$inc": {"version": 1}},
        projection=_HIDDEN,
        return_document=ReturnDocument.AFTER,
        session=session,
    )
    return TaskRecord.from_doc(doc) if doc else None


async def delete_task(
    db: Database, *, task_id: ObjectId, version: int | None, session: AsyncClientSession | None = None
) -> TaskRecord | None:
    """Deletes the task (only at `version`, when given); returns it as it was deleted."""
    query: dict[str, Any] = {"_id": task_id}
    if version is not None:
        query["version"] = version
    deleted = await db.tasks.find_one_and_delete(query, session=session)
    return None if deleted is None else TaskRecord.from_doc(deleted)


async def delete_project_tasks(
    db: Database, *, project_id: ObjectId, session: AsyncClientSession | None = None
) -> dict[ObjectId, ObjectId | None]:
    """Deletes a project's tasks; returns their ids and assignees (whose cached lists held them)."""
    query = {"project_id": project_id}
    tasks = db.tasks.find(query, projection={"_id": 1, "assignee_id": 1}, session=session)
    assignees = {doc["_id"]: doc.get("assignee_id") async for doc in tasks}
    await db.tasks.delete_many(query, session=session)
    return assignees


async def unassign_user(
    db: Database, *, project_id: ObjectId, user_id: ObjectId, now: datetime, session: AsyncClientSession | None = None
) -> list[ObjectId]:
    """Clear a removed member's assignments; returns the tasks changed."""
    ids = [
        doc["_id"]
        async for doc in db.tasks.find(
            {"project_id": project_id, "assignee_id": user_id}, projection={"_id": 1}, session=session
        )
    ]
    if ids:
        await db.tasks.update_many(
            {"_id": {"$in": ids}, "assignee_id": user_id},
            {"$set": {"assignee_id": None, "updated_at": now}, "$inc": {"version": 1}},
            session=session,
        )
    return ids


async def page_tasks(db: Database, *, scope: TaskScope, order: TaskOrderSpec, page: PageRequest) -> Page[TaskRecord]:
    return await paginate(
        db.tasks,
        match=scope.to_query(),
        prefilter=scope.index_prefix(),
        sort=order.sort_key,
        page=page,
        parse=TaskRecord.from_doc,
        projection=_HIDDEN,
    )


async def count_tasks(db: Database, *, scope: TaskScope) -> int:
    return await count(db.tasks, match=scope.to_query(), prefilter=scope.index_prefix())


async def page_tasks_by_project(
    db: Database,
    *,
    project_ids: Sequence[ObjectId],
    task_filter: TaskFilterSpec,
    order: TaskOrderSpec,
    page: PageRequest,
) -> dict[ObjectId, Page[TaskRecord]]:
    """The same page of tasks for each project, in one command."""
    return await paginate_children(
        db.projects,
        db.tasks,
        parent_ids=project_ids,
        foreign_field="project_id",
        match=task_filter.to_query(),
        sort=order.sort_key,
        page=page,
        parse=TaskRecord.from_doc,
        projection=_HIDDEN,
    )


async def count_tasks_by_project(
    db: Database, *, project_ids: Sequence[ObjectId], task_filter: TaskFilterSpec
) -> dict[ObjectId, int]:
    return await count_children(
        db.tasks, parent_ids=project_ids, foreign_field="project_id", match=task_filter.to_query()
    )


SEARCH_ORDER = SortKey(name="tasks.search", field="search_rank", direction=-1)


def _search_query(scope: TaskScope, terms: Sequence[str]) -> dict[str, Any]:
    return {**scope.to_query(), "search_terms": {"$all": list(terms)}}


def _search_prefilter(scope: TaskScope, terms: Sequence[str]) -> dict[str, Any]:
    """One term (the longest, likely the rarest) as an equality, plus the project when there is one:
    a shape every planner serves from an index (SecantusDB scans the collection for `$all`)."""
    project = {key: value for key, value in scope.index_prefix().items() if key == "project_id"}
    return {**project, "search_terms": max(terms, key=len)}


async def search_tasks(db: Database, *, scope: TaskScope, terms: Sequence[str], page: PageRequest) -> Page[TaskRecord]:
    """Tasks containing every term; title matches (rank 1) before description-only ones, newest first."""
    return await paginate(
        db.tasks,
        match=_search_query(scope, terms),
        prefilter=_search_prefilter(scope, terms),
        add_fields={"search_rank": {"$cond": [{"$setIsSubset": [list(terms), "$title_terms"]}, 1, 0]}},
        sort=SEARCH_ORDER,
        page=page,
        parse=TaskRecord.from_doc,
        projection=_HIDDEN,  # search_rank stays: cursors are made of it
    )


async def count_search(db: Database, *, scope: TaskScope, terms: Sequence[str]) -> int:
    return await count(db.tasks, match=_search_query(scope, terms), prefilter=_search_prefilter(scope, terms))


@dataclass(frozen=True)
class TaskStatsRecord:
    total: int
    by_status: dict[str, int]
    by_priority: dict[str, int]
    overdue: int
    due_soon: int
    # When `overdue` or `due_soon` next changes with no write, as time passes (None: never).
    valid_until: datetime | None = None


DUE_SOON = timedelta(days=7)  # a project's stats count the open tasks due within this (`dueNext7Days`)
_EARLIEST_DUE = {"_id": None, "at": {"$min": "$due_at"}}


async def project_stats(db: Database, *, project_id: ObjectId, now: datetime, soon: timedelta) -> TaskStatsRecord:
    """Counts in one aggregation; overdue and due-soon count only open (not DONE) tasks."""
    open_tasks = {"status": {"$ne": "DONE"}}
    pipeline = [
        {"$match": {"project_id": project_id}},
        {
            "$facet": {
                "status": [{"$group": {"_id": "$status", "n": {"$sum": 1}}}],
                "priority": [{"$group": {"_id": "$priority", "n": {"$sum": 1}}}],
                "overdue": [{"$match": {**open_tasks, "due_at": {"$lt": now}}}, {"$count": "n"}],
                "soon": [{"$match": {**open_tasks, "due_at": {"$gte": now, "$lt": now + soon}}}, {"$count": "n"}],
                # The next open task to fall due (leaving "soon" for "overdue"), and the next to come within `soon`.
                "next_due": [{"$match": {**open_tasks, "due_at": {"$gte": now}}}, {"$group": _EARLIEST_DUE}],
                "next_soon": [{"$match": {**open_tasks, "due_at": {"$gte": now + soon}}}, {"$group": _EARLIEST_DUE}],
            }
        },
    ]
    [facets] = await (await db.tasks.aggregate(pipeline)).to_list()
    by_status = {row["_id"]: row["n"] for row in facets["status"]}
    next_due = facets["next_due"][0]["at"] if facets["next_due"] else None
    next_soon = facets["next_soon"][0]["at"] - soon if facets["next_soon"] else None
    return TaskStatsRecord(
        total=sum(by_status.values()),
        by_status=by_status,
        by_priority={row["_id"]: row["n"] for row in facets["priority"]},
        overdue=facets["overdue"][0]["n"] if facets["overdue"] else 0,
        due_soon=facets["soon"][0]["n"] if facets["soon"] else 0,
        valid_until=min((moment for moment in (next_due, next_soon) if moment is not None), default=None),
    )
