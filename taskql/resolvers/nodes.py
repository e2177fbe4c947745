"""Relay `node` and `nodes`: any object by global ID, with the same visibility as its own field."""

from __future__ import annotations

import strawberry

from taskql.db.pagination import MAX_PAGE_SIZE
from taskql.errors import BadUserInput
from taskql.schema.exports import Export
from taskql.schema.notifications import Notification
from taskql.schema.projects import Project
from taskql.schema.relay import Node, decode_any_id
from taskql.schema.tasks import Task
from taskql.schema.users import User
from taskql.schema.webhooks import Webhook, WebhookDelivery

MAX_NODES = MAX_PAGE_SIZE


async def node(info: strawberry.Info, id: strawberry.ID) -> Node | None:
    """Any object (User, Project, Task, Notification, Webhook, WebhookDelivery, Export) by its global ID."""
    type_name, object_id = decode_any_id(id)
    context = info.context
    if type_name == "Task":
        return Task.from_record(await context.tasks.get(object_id))
    if type_name == "Project":
        return Project.from_record(await context.projects.get(object_id))
    if type_name == "Notification":
        return Notification.from_record(await context.notifications.get(object_id))
    if type_name == "Export":
        return Export.from_record(await context.exports.get(object_id))
    if type_name == "Webhook":
        return Webhook.from_record(await context.webhooks.get(object_id))
    if type_name == "WebhookDelivery":
        return WebhookDelivery.from_record(await context.webhooks.get_delivery(object_id))
    return User.from_record(await context.users.get_visible(object_id))


def nodes(info: strawberry.Info, ids: list[strawberry.ID]) -> list[Node | None]:
    """One entry per ID, null (with an error at its index) where the ID is bad or the object not visible."""
    if len(ids) > MAX_NODES:
        raise BadUserInput(f"`ids` takes at most {MAX_NODES} IDs.", field=("ids",))
    # Awaitables, not values: GraphQL resolves each item on its own, so one failure nulls only its entry,
    # and the loaders batch all of them.
    return [node(info, global_id) for global_id in ids]  # type: ignore[misc]
