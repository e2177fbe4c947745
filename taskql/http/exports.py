"""GET /exports/{id}/download?token=…: an export's file, streamed from GridFS to whoever holds a
valid link (auth/export_links.py), without signing in (a browser follows the link)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from bson import ObjectId
from bson.errors import InvalidId
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from taskql.auth.export_links import link_is_valid
from taskql.clock import utcnow
from taskql.db import exports as exports_db
from taskql.http.protocol import coded_error
from taskql.services.common import Runtime
from taskql.services.exports import LINK_PURPOSE

GONE = "This export no longer exists: it expired, or was never finished. Export again."


async def download(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    try:
        export_id = ObjectId(request.path_params["export_id"])
    except (InvalidId, TypeError):
        return coded_error(404, "NOT_FOUND", GONE)
    key = runtime.settings.derived_key(LINK_PURPOSE)
    if not link_is_valid(key, export_id, request.query_params.get("token", ""), now=time.time()):
        message = "This download link is invalid or has expired: read Export.downloadUrl again for a fresh one."
        return coded_error(403, "FORBIDDEN", message)
    export = await exports_db.find_export(runtime.db, export_id=export_id)
    if export is None or export.file_id is None or export.expires_at <= utcnow():
        return coded_error(404, "NOT_FOUND", GONE)
    stored = await runtime.db.files.open_download_stream(export.file_id)
    extension = export.format.lower()
    media_type = (stored.metadata or {}).get("media_type", "application/octet-stream")

    async def chunks() -> AsyncIterator[bytes]:
        while chunk := await stored.readchunk():  # one GridFS chunk (255 KiB) at a time
            yield chunk

    return StreamingResponse(
        chunks(),
        media_type=media_type,
        headers={
            "content-length": str(stored.length),
            "content-disposition": f'attachment; filename="tasks-{export.created_at:%Y%m%d-%H%M%S}.{extension}"',
            "cache-control": "private, no-store",
        },
    )


ROUTE = Route("/exports/{export_id}/download", download, methods=["GET"])
