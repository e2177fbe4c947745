"""The export job: a project's tasks, streamed through one cursor into a CSV or JSON file in GridFS.

Memory holds one batch of tasks, however large the project. Each attempt writes a file of its own
and removes the previous attempt's (a worker killed mid-file leaves chunks without a file); only the
latest attempt can report progress or record its file as the export's, once complete. The requester
is notified (EXPORT_READY).
"""

from __future__ import annotations

import contextlib
import csv
import io
from typing import Any

import orjson
from bson import ObjectId
from redis.exceptions import RedisError

from taskql.clock import utcnow
from taskql.db import exports as exports_db
from taskql.db.export_files import ExportFileWriter
from taskql.db.tasks import TaskRecord
from taskql.jobs.context import job_context
from taskql.services.follow_ups import notify_request
from taskql.services.public_tasks import public_task

BATCH = 1000  # tasks per cursor batch, per write to GridFS and per progress report
COLUMNS = (
    "id", "title", "description", "status", "priority", "dueAt", "tags", "assigneeId", "createdBy",
    "createdAt", "updatedAt", "completedAt", "version",
)  # fmt: skip
# A cell starting with one of these is a formula to a spreadsheet (OWASP's CSV injection): prefixed with '.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = ",".join(value) if isinstance(value, list) else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


class CsvFile:
    """RFC 4180: CRLF line ends, fields quoted where needed, a header line."""

    media_type = "text/csv; charset=utf-8; header=present"
    extension = "csv"

    def start(self) -> bytes:
        return self.rows([dict(zip(COLUMNS, COLUMNS, strict=True))], header=True)

    def rows(self, rows: list[dict[str, Any]], *, header: bool = False) -> bytes:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\r\n")
        for row in rows:
            writer.writerow(row[column] if header else _cell(row[column]) for column in COLUMNS)
        return text.getvalue().encode()

    def end(self) -> bytes:
        return b""


class JsonFile:
    """One JSON array of tasks, written a batch at a time."""

    media_type = "application/json"
    extension = "json"

    def __init__(self) -> None:
        self._first = True

    def start(self) -> bytes:
        return b"["

    def rows(self, rows: list[dict[str, Any]]) -> bytes:
        if not rows:
            return b""
        chunk = b",\n".join(orjson.dumps(row) for row in rows)
        lead, self._first = (b"\n" if self._first else b",\n"), False
        return lead + chunk

    def end(self) -> bytes:
        return b"\n]\n"


def file_format(name: str) -> CsvFile | JsonFile:
    return CsvFile() if name == "CSV" else JsonFile()


async def export_tasks(ctx: dict[str, Any], *, cause: str, export_id: str) -> str:
    jobs, job = job_context(ctx), ctx["job"]
    db = jobs.db
    file_id = ObjectId()
    started = await exports_db.start_export(db, export_id=ObjectId(export_id), file_id=file_id)
    if started is None:
        return "finished before"
    export, previous_file_id = started
    if previous_file_id is not None:  # of an attempt that died mid-file (or runs on, unable to finish)
        await exports_db.delete_file(db, file_id=previous_file_id)
    output = file_format(export.format)
    upload = ExportFileWriter(
        db,
        file_id=file_id,
        filename=f"tasks-{export.id}.{output.extension}",
        metadata={"export_id": export.id, "media_type": output.media_type},
    )
    try:
        total = await exports_db.count_tasks(db, query=export.query)
        rows = 0
        batch: list[dict[str, Any]] = []
        await upload.write(output.start())
        async for doc in exports_db.stream_tasks(db, query=export.query, batch_size=BATCH):
            batch.append(public_task(TaskRecord.from_doc(doc)))
            rows += 1
            if len(batch) == BATCH:
                await upload.write(output.rows(batch))
                batch.clear()
                await exports_db.report_progress(db, export=export, progress=rows / max(total, rows), rows=rows)
                with contextlib.suppress(RedisError):  # a heartbeat missed: at worst a second attempt takes over
                    await job.update()  # keeps it running past JOB_TIMEOUT_SECONDS (jobs/queue.py)
        await upload.write(output.rows(batch) + output.end())
        await upload.close()
    except Exception as exc:
        await upload.abort()  # its chunks so far
        if not job.retryable:  # the last attempt: the export failed, visibly
            await exports_db.fail_export(db, export_id=export.id, error=f"{type(exc).__name__}: {exc}", now=utcnow())
        raise
    if not await exports_db.finish_export(db, export=export, rows=rows, now=utcnow()):
        await exports_db.delete_file(db, file_id=file_id)
        return "finished meanwhile"
    notice = notify_request("EXPORT_READY", user_id=export.user_id, project_id=export.project_id)
    await jobs.queue.enqueue(notice, cause=f"EXPORT_READY:{export.id}")
    return f"{rows} tasks"
