"""Exports: any member may export the tasks they can read; only the requester sees the export."""

from __future__ import annotations

import time
from datetime import timedelta

from bson import ObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from taskql.auth.export_links import LINK_SECONDS, link_token
from taskql.auth.permissions import require_readable
from taskql.clock import utcnow
from taskql.db import exports as exports_db
from taskql.db.exports import ExportRecord
from taskql.db.outbox import OutboxEvent
from taskql.db.pagination import Page, PageRequest
from taskql.db.tasks import TaskFilterSpec, TaskScope
from taskql.errors import Conflict, NotFound
from taskql.services import outbox
from taskql.services.common import Deps
from taskql.services.follow_ups import export_request

MAX_UNFINISHED = 5  # exports one user may have queued or running
EXPORT_NOT_FOUND = "Export not found."
LINK_PURPOSE = "export links"


class ExportService:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._db = deps.db

    async def create(self, project_id: ObjectId, *, file_format: str, task_filter: TaskFilterSpec) -> ExportRecord:
        viewer = self._deps.require_viewer()
        require_readable(await self._deps.loaders.projects.load(project_id), viewer)
        if await exports_db.count_unfinished(self._db, user_id=viewer.id) >= MAX_UNFINISHED:
            raise Conflict(f"You have {MAX_UNFINISHED} exports under way: wait for one to finish.")
        now = utcnow()
        values = {
            "user_id": viewer.id,
            "project_id": project_id,
            "format": file_format,
            "query": TaskScope(project_ids=[project_id], filter=task_filter).to_query(),
            "created_at": now,
            "expires_at": now + timedelta(hours=self._deps.runtime.settings.export_ttl_hours),
        }

        async def write(session: AsyncClientSession | None) -> tuple[ExportRecord, list[OutboxEvent]]:
            export = await exports_db.insert_export(self._db, values=values, session=session)
            return export, await outbox.stage(self._db, session, [outbox.jobs_only(export_request(export.id))])

        export, events = await self._db.in_transaction(write)
        await self._deps.runtime.outbox.publish(events)
        return export

    async def get(self, export_id: ObjectId) -> ExportRecord:
        """The viewer's own export (a member's export of a project they have left stays theirs)."""
        viewer = self._deps.require_viewer()
        export = await exports_db.find_export(self._db, export_id=export_id)
        if export is None or export.user_id != viewer.id or export.expires_at <= utcnow():
            raise NotFound(EXPORT_NOT_FOUND)
        return export

    def _require_self(self, user_id: ObjectId) -> ObjectId:
        if user_id != self._deps.require_viewer().id:
            raise NotFound("Only the signed-in user's own exports can be read: use `viewer`.")
        return user_id

    async def page(self, user_id: ObjectId, page: PageRequest) -> Page[ExportRecord]:
        return await exports_db.page_exports(self._db, user_id=self._require_self(user_id), page=page)

    async def count(self, user_id: ObjectId) -> int:
        return await exports_db.count_exports(self._db, user_id=self._require_self(user_id))

    def download_path(self, export: ExportRecord) -> str | None:
        """A freshly signed path to the export's file, valid for LINK_SECONDS; None until it is ready."""
        if export.status != exports_db.SUCCEEDED or export.user_id != self._deps.require_viewer().id:
            return None
        key = self._deps.runtime.settings.derived_key(LINK_PURPOSE)
        token = link_token(key, export.id, int(time.time()) + LINK_SECONDS)
        return f"/exports/{export.id}/download?token={token}"
