from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry

from taskql.db.pagination import PageRequest
from taskql.db.webhooks import DeliveryRecord, WebhookRecord
from taskql.schema.errors import UserError
from taskql.schema.relay import Connection, Node, encode_id, to_connection


@strawberry.enum(description="The task events a webhook can receive.")
class TaskEventKind(Enum):
    TASK_CREATED = "TASK_CREATED"
    TASK_UPDATED = "TASK_UPDATED"
    TASK_DELETED = "TASK_DELETED"


@strawberry.enum
class WebhookDeliveryStatus(Enum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@strawberry.type(description="One event sent to a webhook, with every attempt it took.")
class WebhookDelivery(Node):
    id: strawberry.ID
    event: TaskEventKind
    status: WebhookDeliveryStatus
    attempts: int
    response_status: int | None = strawberry.field(description="The receiver's HTTP status at the last attempt.")
    last_error: str | None
    next_attempt_at: datetime | None = strawberry.field(description="When a PENDING delivery is tried (again).")
    delivered_at: datetime | None
    created_at: datetime

    @classmethod
    def from_record(cls, record: DeliveryRecord) -> WebhookDelivery:
        return cls(
            id=encode_id("WebhookDelivery", record.id),
            event=TaskEventKind(record.event),
            status=WebhookDeliveryStatus(record.status),
            attempts=record.attempts,
            response_status=record.response_status,
            last_error=record.last_error,
            next_attempt_at=record.next_attempt_at if record.status == "PENDING" else None,
            delivered_at=record.delivered_at,
            created_at=record.created_at,
        )


@strawberry.type(description="Where a project's task events are posted, signed. Only its project's owners see it.")
class Webhook(Node):
    record: strawberry.Private[WebhookRecord]
    id: strawberry.ID
    url: str
    events: list[TaskEventKind]
    description: str
    active: bool
    disabled_reason: str | None = strawberry.field(description="Why TaskQL disabled it (410 Gone, failures).")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_record(cls, record: WebhookRecord) -> Webhook:
        return cls(
            record=record,
            id=encode_id("Webhook", record.id),
            url=record.url,
            events=[TaskEventKind(e) for e in record.events],
            description=record.description,
            active=record.active,
            disabled_reason=record.disabled_reason,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )

    @strawberry.field(description="Its deliveries, newest first.")
    async def deliveries(
        self, info: strawberry.Info, first: int | None = None, after: str | None = None
    ) -> Connection[WebhookDelivery]:
        service = info.context.webhooks
        page = await service.deliveries(self.record, PageRequest(first=first, after=after))

        async def count() -> int:
            return await service.count_deliveries(self.record)

        return to_connection(page, WebhookDelivery.from_record, count)


@strawberry.input
class CreateWebhookInput:
    project_id: strawberry.ID
    url: str = strawberry.field(description="https:// (http:// only where WEBHOOK_ALLOW_HTTP is set).")
    events: list[TaskEventKind]
    description: str = ""


@strawberry.input
class UpdateWebhookInput:
    id: strawberry.ID
    url: str | None = None
    events: list[TaskEventKind] | None = None
    description: str | None = None
    active: bool | None = None
    rotate_secret: bool = strawberry.field(default=False, description="A new secret, returned once.")


@strawberry.input
class DeleteWebhookInput:
    id: strawberry.ID


@strawberry.input
class RedeliverWebhookDeliveryInput:
    id: strawberry.ID


@strawberry.type
class WebhookPayload:
    webhook: Webhook | None = None
    secret: str | None = strawberry.field(
        default=None, description="The signing secret: returned once, when created or rotated. Keep it."
    )
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class DeleteWebhookPayload:
    deleted_webhook_id: strawberry.ID | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class WebhookDeliveryPayload:
    delivery: WebhookDelivery | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)
