"""Webhooks: project owners point a project's task events at a URL of theirs.

A task write stores one delivery per subscribed webhook in its own transaction (with the body as it
will be posted), and queues each webhook's drain with its event (jobs/webhooks.py), which posts the
webhook's deliveries one at a time, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import orjson
from bson import ObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from taskql.auth.permissions import require_manager, require_readable
from taskql.auth.webhook_signatures import new_nonce, webhook_secret
from taskql.clock import utcnow
from taskql.db import webhooks as webhooks_db
from taskql.db.client import Database
from taskql.db.outbox import OutboxEvent
from taskql.db.pagination import Page, PageRequest
from taskql.db.projects import ProjectRecord, set_webhook_events
from taskql.db.tasks import TaskRecord
from taskql.db.webhooks import DeliveryRecord, WebhookRecord
from taskql.errors import NotFound
from taskql.outbound import RefusedUrl, resolve
from taskql.public_ids import global_id, rfc3339
from taskql.services.common import Deps
from taskql.services.follow_ups import drain_request
from taskql.services.public_tasks import public_task
from taskql.services.validation import Checker

DESCRIPTION_MAX_LENGTH = 500
MAX_WEBHOOKS_PER_PROJECT = 20
WEBHOOK_NOT_FOUND = "Webhook not found."
DELIVERY_NOT_FOUND = "Delivery not found."


async def with_deliveries(
    deps: Deps, session: AsyncClientSession | None, event: OutboxEvent, task: TaskRecord
) -> OutboxEvent:
    """The task event with its deliveries to the project's webhooks that want it, stored in the
    writing transaction, and the drains that post them queued with the event once it is committed."""
    kind = event.payload["kind"]
    project = await deps.loaders.projects.load(task.project_id)  # read by the write already
    if project is None or kind not in project.webhook_events:
        return event  # most projects: no query at all
    webhooks = await webhooks_db.subscribed_webhooks(deps.db, project_id=task.project_id, event=kind, session=session)
    if not webhooks:
        return event
    actor = deps.require_viewer().user
    at = event.payload["at"]
    body = orjson.dumps(
        {
            "id": str(event.id),
            "type": kind,
            "occurredAt": rfc3339(at),
            "projectId": global_id("Project", task.project_id),
            "actor": {"id": global_id("User", actor.id), "name": actor.name},
            "taskId": global_id("Task", task.id),
            "task": None if kind == "TASK_DELETED" else public_task(task),
            "changedFields": event.payload["changed_fields"],
        }
    )
    deliveries = [webhooks_db.new_delivery(w.id, task.project_id, event.id, kind, body, at) for w in webhooks]
    await webhooks_db.insert_deliveries(deps.db, deliveries, session=session)
    return replace(event, jobs=(*event.jobs, *(drain_request(w.id) for w in webhooks)))


async def sync_webhook_events(db: Database, project_id: ObjectId) -> ProjectRecord | None:
    """Records on the project the events its active webhooks want; the project as updated."""
    webhooks = await webhooks_db.project_webhooks(db, project_id=project_id)
    events = {event for webhook in webhooks if webhook.active for event in webhook.events}
    return await set_webhook_events(db, project_id=project_id, events=sorted(events))


class WebhookService:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._db = deps.db
        self._settings = deps.runtime.settings

    async def _managed_project(self, project_id: ObjectId) -> None:
        viewer = self._deps.require_viewer()
        project = require_readable(await self._deps.loaders.projects.load(project_id), viewer)
        require_manager(project, viewer)

    async def _managed(self, webhook_id: ObjectId) -> WebhookRecord:
        """A webhook of a project the viewer owns; to anyone else it does not exist."""
        webhook = await webhooks_db.find_webhook(self._db, webhook_id=webhook_id)
        if webhook is None:
            raise NotFound(WEBHOOK_NOT_FOUND)
        viewer = self._deps.require_viewer()
        project = await self._deps.loaders.projects.load(webhook.project_id)
        if project is None or not (viewer.is_admin or project.role_of(viewer.id) == "OWNER"):
            raise NotFound(WEBHOOK_NOT_FOUND)
        return webhook

    def secret(self, webhook: WebhookRecord) -> str:
        return webhook_secret(self._settings.resolved_webhook_key(), webhook.id, webhook.secret_nonce)

    async def _check(
        self, check: Checker, *, url: str | None, events: Sequence[str] | None, description: str | None
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if url is not None:
            try:
                await resolve(
                    url.strip(),
                    allow_http=self._settings.webhook_allow_http,
                    allow_private=self._settings.webhook_allow_private_addresses,
                )
            except RefusedUrl as refused:
                check.add(("input", "url"), str(refused))
            values["url"] = url.strip()
        if events is not None:
            if not events:
                check.add(("input", "events"), "must name at least one event")
            values["events"] = sorted(set(events))
        if description is not None:
            values["description"] = check.text(("input", "description"), description, max_length=DESCRIPTION_MAX_LENGTH)
        return values

    async def list(self, project_id: ObjectId) -> list[WebhookRecord]:
        await self._managed_project(project_id)
        return await webhooks_db.project_webhooks(self._db, project_id=project_id)

    async def get(self, webhook_id: ObjectId) -> WebhookRecord:
        return await self._managed(webhook_id)

    async def create(
        self, project_id: ObjectId, *, url: str, events: Sequence[str], description: str
    ) -> tuple[WebhookRecord, str]:
        """The new webhook, and its secret (shown this once)."""
        await self._managed_project(project_id)
        check = Checker()
        values = await self._check(check, url=url, events=events, description=description)
        if len(await webhooks_db.project_webhooks(self._db, project_id=project_id)) >= MAX_WEBHOOKS_PER_PROJECT:
            check.add(("input", "projectId"), f"a project has at most {MAX_WEBHOOKS_PER_PROJECT} webhooks")
        check.raise_if_any()
        webhook = await webhooks_db.insert_webhook(
            self._db,
            values={**values, "project_id": project_id, "active": True, "secret_nonce": new_nonce()},
            now=utcnow(),
        )
        await self._note_events(project_id)
        return webhook, self.secret(webhook)

    async def _note_events(self, project_id: ObjectId) -> None:
        """Tells the project which events its active webhooks want (with_deliveries reads it)."""
        project = await sync_webhook_events(self._db, project_id)
        if project is not None:
            await self._deps.loaders.projects.store(project)

    async def update(
        self,
        webhook_id: ObjectId,
        *,
        url: str | None,
        events: Sequence[str] | None,
        description: str | None,
        active: bool | None,
        rotate_secret: bool,
    ) -> tuple[WebhookRecord, str | None]:
        """The webhook as changed, and its new secret when rotated. Enabling it again starts its
        count of failures afresh."""
        await self._managed(webhook_id)
        check = Checker()
        changes = await self._check(check, url=url, events=events, description=description)
        check.raise_if_any()
        if active is not None:
            changes.update(active=active, disabled_reason=None)
            if active:
                changes["consecutive_failures"] = 0
        if rotate_secret:
            changes["secret_nonce"] = new_nonce()
        updated = await webhooks_db.update_webhook(self._db, webhook_id=webhook_id, changes=changes, now=utcnow())
        if updated is None:
            raise NotFound(WEBHOOK_NOT_FOUND)
        await self._note_events(updated.project_id)
        return updated, self.secret(updated) if rotate_secret else None

    async def delete(self, webhook_id: ObjectId) -> None:
        """Deletes the webhook and its deliveries (pending ones are not sent)."""
        webhook = await self._managed(webhook_id)
        if not await webhooks_db.delete_webhook(self._db, webhook_id=webhook_id):
            raise NotFound(WEBHOOK_NOT_FOUND)
        await self._note_events(webhook.project_id)

    async def deliveries(self, webhook: WebhookRecord, page: PageRequest) -> Page[DeliveryRecord]:
        await self._managed(webhook.id)
        return await webhooks_db.page_deliveries(self._db, webhook_id=webhook.id, page=page)

    async def count_deliveries(self, webhook: WebhookRecord) -> int:
        await self._managed(webhook.id)
        return await webhooks_db.count_deliveries(self._db, webhook_id=webhook.id)

    async def get_delivery(self, delivery_id: ObjectId) -> DeliveryRecord:
        delivery = await webhooks_db.find_delivery(self._db, delivery_id=delivery_id)
        if delivery is None:
            raise NotFound(DELIVERY_NOT_FOUND)
        try:
            await self._managed(delivery.webhook_id)
        except NotFound as exc:
            raise NotFound(DELIVERY_NOT_FOUND) from exc
        return delivery

    async def redeliver(self, delivery_id: ObjectId) -> DeliveryRecord:
        """Sends a delivery's event again, as a new delivery after the webhook's pending ones."""
        original = await self.get_delivery(delivery_id)
        now = utcnow()
        copy = webhooks_db.new_delivery(
            original.webhook_id, original.project_id, original.event_id, original.event, original.body, now
        )
        await webhooks_db.insert_deliveries(self._db, [copy], session=None)
        drain = drain_request(original.webhook_id)
        await self._deps.runtime.jobs.enqueue(drain, cause=drain.cause or "")
        return webhooks_db.DeliveryRecord.from_doc(copy)
