"""Exports of a project's tasks: the request, its progress, and its file (in GridFS, same database)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId
from gridfs.errors import NoFile
from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection

from taskql.db.client import Database
from taskql.db.pagination import Page, PageRequest, SortKey, count, paginate

NEWEST_FIRST = SortKey(name="exports.created", field="created_at", direction=-1)
QUEUED, RUNNING, SUCCEEDED, FAILED = "QUEUED", "RUNNING", "SUCCEEDED", "FAILED"


@dataclass(frozen=True)
class ExportRecord:
    id: ObjectId
    user_id: ObjectId
    project_id: ObjectId
    format: str  # CSV | JSON
    query: dict[str, Any]  # the tasks it covers: a MongoDB filter (the project and the TaskFilter)
    status: str
    progress: float
    row_count: int
    file_id: ObjectId | None  # the finished file
    writing_file_id: ObjectId | None  # the file the latest attempt writes (or wrote)
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    expires_at: datetime

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> ExportRecord:
        return cls(
            id=doc["_id"],
            user_id=doc["user_id"],
            project_id=doc["project_id"],
            format=doc["format"],
            query=doc["query"],
            status=doc["status"],
            progress=doc.get("progress", 0.0),
            row_count=doc.get("row_count", 0),
            file_id=doc.get("file_id"),
            writing_file_id=doc.get("writing_file_id"),
            error=doc.get("error"),
            created_at=doc["created_at"],
            finished_at=doc.get("finished_at"),
            expires_at=doc["expires_at"],
        )


async def insert_export(db: Database, *, values: dict[str, Any], session: AsyncClientSession | None) -> ExportRecord:
    doc = {"_id": ObjectId(), **values, "status": QUEUED, "progress": 0.0, "row_count": 0}
    await db.exports.insert_one(doc, session=session)
    return ExportRecord.from_doc(doc)


async def count_unfinished(db: Database, *, user_id: ObjectId) -> int:
    return await db.exports.count_documents({"user_id": user_id, "status": {"$in": [QUEUED, RUNNING]}})


async def find_export(db: Database, *, export_id: ObjectId) -> ExportRecord | None:
    doc = await db.exports.find_one({"_id": export_id})
    return ExportRecord.from_doc(doc) if doc else None


async def page_exports(db: Database, *, user_id: ObjectId, page: PageRequest) -> Page[ExportRecord]:
    return await paginate(
        db.exports,
        match={"user_id": user_id},
        prefilter={"user_id": user_id},
        sort=NEWEST_FIRST,
        page=page,
        parse=ExportRecord.from_doc,
    )


async def count_exports(db: Database, *, user_id: ObjectId) -> int:
    return await count(db.exports, match={"user_id": user_id})


async def start_export(
    db: Database, *, export_id: ObjectId, file_id: ObjectId
) -> tuple[ExportRecord, ObjectId | None] | None:
    """Marks it RUNNING (again, after an attempt that died), writing `file_id` from now on: the export
    and the file of the attempt before, whose chunks are the caller's to remove; None once finished.
    An earlier attempt still running (a worker thought dead) can no longer report or finish."""
    doc = await db.exports.find_one_and_update(
        {"_id": export_id, "status": {"$in": [QUEUED, RUNNING]}},
        {"$set": {"status": RUNNING, "progress": 0.0, "row_count": 0, "writing_file_id": file_id}},
        return_document=ReturnDocument.BEFORE,
    )
    if doc is None:
        return None
    previous_file_id = doc.get("writing_file_id")
    doc.update(status=RUNNING, progress=0.0, row_count=0, writing_file_id=file_id)
    return ExportRecord.from_doc(doc), previous_file_id


async def report_progress(db: Database, *, export: ExportRecord, progress: float, rows: int) -> None:
    await db.exports.update_one(
        {"_id": export.id, "writing_file_id": export.writing_file_id},
        {"$set": {"progress": progress, "row_count": rows}},
    )


async def finish_export(db: Database, *, export: ExportRecord, rows: int, now: datetime) -> bool:
    """Records the attempt's file as the export's; False if the export was finished (or deleted) or
    taken over by a later attempt meanwhile."""
    result = await db.exports.update_one(
        {"_id": export.id, "status": RUNNING, "writing_file_id": export.writing_file_id},
        {
            "$set": {
                "status": SUCCEEDED,
                "file_id": export.writing_file_id,
                "row_count": rows,
                "progress": 1.0,
                "finished_at": now,
            }
        },
    )
    return result.modified_count == 1


async def fail_export(db: Database, *, export_id: ObjectId, error: str, now: datetime) -> None:
    await db.exports.update_one(
        {"_id": export_id, "status": {"$in": [QUEUED, RUNNING]}},
        {"$set": {"status": FAILED, "error": error, "finished_at": now}},
    )


async def stream_tasks(db: Database, *, query: dict[str, Any], batch_size: int) -> AsyncIterator[dict[str, Any]]:
    """The tasks in `_id` order through one cursor: memory holds a batch, however many there are."""
    collection: AsyncCollection = db.tasks
    cursor = collection.find(query, projection={"search_terms": 0, "title_terms": 0}, batch_size=batch_size)
    async for doc in cursor.sort("_id", 1):
        yield doc


async def count_tasks(db: Database, *, query: dict[str, Any]) -> int:
    return await db.tasks.count_documents(query)


async def expired_exports(db: Database, *, now: datetime, limit: int) -> list[ExportRecord]:
    cursor = db.exports.find({"expires_at": {"$lt": now}}).limit(limit)
    return [ExportRecord.from_doc(doc) async for doc in cursor]


async def delete_export(db: Database, *, export: ExportRecord) -> None:
    for file_id in {export.file_id, export.writing_file_id} - {None}:  # the same file, once finished
        await delete_file(db, file_id=file_id)
    await db.exports.delete_one({"_id": export.id})


async def delete_file(db: Database, *, file_id: ObjectId) -> None:
    """Its files document and its chunks, also those of a file never completed (a worker killed mid-file)."""
    try:
        await db.files.delete(file_id)
    except NoFile:
        pass
