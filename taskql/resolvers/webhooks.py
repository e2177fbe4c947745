"""Root fields for webhooks (project owners)."""

from __future__ import annotations

import strawberry

from taskql.schema.errors import attempt
from taskql.schema.relay import decode_id
from taskql.schema.webhooks import (
    CreateWebhookInput,
    DeleteWebhookInput,
    DeleteWebhookPayload,
    RedeliverWebhookDeliveryInput,
    UpdateWebhookInput,
    Webhook,
    WebhookDelivery,
    WebhookDeliveryPayload,
    WebhookPayload,
)


async def create_webhook(info: strawberry.Info, input: CreateWebhookInput) -> WebhookPayload:
    """Post the project's task events to a URL, signed with a secret returned this once (owners)."""
    created, errors = await attempt(
        info.context.webhooks.create(
            decode_id(input.project_id, "Project", argument="projectId"),
            url=input.url,
            events=[event.value for event in input.events],
            description=input.description,
        )
    )
    if created is None:
        return WebhookPayload(user_errors=errors)
    webhook, secret = created
    return WebhookPayload(webhook=Webhook.from_record(webhook), secret=secret)


async def update_webhook(info: strawberry.Info, input: UpdateWebhookInput) -> WebhookPayload:
    """Change a webhook's URL, events or description, turn it off or on, or rotate its secret."""
    updated, errors = await attempt(
        info.context.webhooks.update(
            decode_id(input.id, "Webhook"),
            url=input.url,
            events=None if input.events is None else [event.value for event in input.events],
            description=input.description,
            active=input.active,
            rotate_secret=input.rotate_secret,
        )
    )
    if updated is None:
        return WebhookPayload(user_errors=errors)
    webhook, secret = updated
    return WebhookPayload(webhook=Webhook.from_record(webhook), secret=secret)


async def delete_webhook(info: strawberry.Info, input: DeleteWebhookInput) -> DeleteWebhookPayload:
    """Delete a webhook; its pending deliveries are not sent."""
    _, errors = await attempt(info.context.webhooks.delete(decode_id(input.id, "Webhook")))
    return DeleteWebhookPayload(deleted_webhook_id=None if errors else input.id, user_errors=errors)


async def redeliver_webhook_delivery(
    info: strawberry.Info, input: RedeliverWebhookDeliveryInput
) -> WebhookDeliveryPayload:
    """Send a delivery's event again, as a new delivery (after the webhook's pending ones)."""
    delivery, errors = await attempt(info.context.webhooks.redeliver(decode_id(input.id, "WebhookDelivery")))
    return WebhookDeliveryPayload(
        delivery=None if delivery is None else WebhookDelivery.from_record(delivery), user_errors=errors
    )
