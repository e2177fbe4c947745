"""Root fields for exports."""

from __future__ import annotations

import strawberry

from taskql.schema.errors import attempt
from taskql.schema.exports import Export, ExportTasksInput, ExportTasksPayload
from taskql.schema.relay import decode_id
from taskql.schema.tasks import task_filter_spec


async def export_tasks(info: strawberry.Info, input: ExportTasksInput) -> ExportTasksPayload:
    """Export a project's tasks (those `filter` keeps) as CSV or JSON, in the background: follow its
    `status` and `progress` (`node(id:)` or `viewer { exports }`); an EXPORT_READY notification tells
    when `downloadUrl` is there."""
    export, errors = await attempt(
        info.context.exports.create(
            decode_id(input.project_id, "Project", argument="projectId"),
            file_format=input.format.value,
            task_filter=task_filter_spec(input.filter),
        )
    )
    return ExportTasksPayload(export=None if export is None else Export.from_record(export), user_errors=errors)
