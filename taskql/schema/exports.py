from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry
from bson import ObjectId

from taskql.db.exports import ExportRecord
from taskql.db.pagination import PageRequest
from taskql.schema.errors import UserError
from taskql.schema.relay import Connection, Node, encode_id, to_connection

if TYPE_CHECKING:
    from taskql.schema.tasks import TaskFilter

_TASKS = "taskql.schema.tasks"


@strawberry.enum
class ExportFormat(Enum):
    CSV = "CSV"
    JSON = "JSON"


@strawberry.enum
class ExportStatus(Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@strawberry.type(description="A file of a project's tasks, made in the background. Only its requester sees it.")
class Export(Node):
    record: strawberry.Private[ExportRecord]
    id: strawberry.ID
    format: ExportFormat
    status: ExportStatus
    progress: float = strawberry.field(description="From 0 to 1 while it runs.")
    row_count: int
    created_at: datetime
    finished_at: datetime | None
    expires_at: datetime = strawberry.field(description="When it is deleted (EXPORT_TTL_HOURS after its request).")
    error: str | None

    @classmethod
    def from_record(cls, record: ExportRecord) -> Export:
        return cls(
            record=record,
            id=encode_id("Export", record.id),
            format=ExportFormat(record.format),
            status=ExportStatus(record.status),
            progress=record.progress,
            row_count=record.row_count,
            created_at=record.created_at,
            finished_at=record.finished_at,
            expires_at=record.expires_at,
            error=record.error,
        )

    @strawberry.field(
        description="A link to the file once SUCCEEDED, valid for 10 minutes and needing no token: read it again "
        "for a fresh one."
    )
    def download_url(self, info: strawberry.Info) -> str | None:
        path = info.context.exports.download_path(self.record)
        if path is None:
            return None
        base = info.context.deps.runtime.settings.public_api_url or str(info.context.request.base_url)
        return base.replace("ws://", "http://", 1).replace("wss://", "https://", 1).rstrip("/") + path


async def user_exports(
    info: strawberry.Info, user_id: ObjectId, first: int | None, after: str | None
) -> Connection[Export]:
    service = info.context.exports
    page = await service.page(user_id, PageRequest(first=first, after=after))
    return to_connection(page, Export.from_record, lambda: service.count(user_id))


@strawberry.input
class ExportTasksInput:
    project_id: strawberry.ID
    format: ExportFormat
    filter: Annotated[TaskFilter, strawberry.lazy(_TASKS)] | None = None


@strawberry.type
class ExportTasksPayload:
    export: Export | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)
