"""Notifications: marking read and the live stream (the list and count are fields of User)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from taskql.metrics import SUBSCRIPTIONS
from taskql.schema.errors import attempt
from taskql.schema.notifications import MarkNotificationsReadInput, MarkNotificationsReadPayload, Notification
from taskql.schema.relay import decode_id
from taskql.schema.users import User


async def mark_notifications_read(
    info: strawberry.Info, input: MarkNotificationsReadInput
) -> MarkNotificationsReadPayload:
    """Mark notifications read: the `ids` given, or `all: true`."""
    ids = None if input.ids is None else [decode_id(i, "Notification", argument="ids") for i in input.ids]
    marked, errors = await attempt(info.context.notifications.mark_read(ids, every=input.all))
    if marked is None:
        return MarkNotificationsReadPayload(user_errors=errors)
    return MarkNotificationsReadPayload(
        marked_count=marked, viewer=User.from_record(info.context.deps.require_viewer().user)
    )


async def notification_added(info: strawberry.Info, after: str | None = None) -> AsyncGenerator[Notification, None]:
    """The viewer's notifications as they are created. After a reconnect, pass the ID of the last
    notification received (or the newest one listed) as `after`: the missed ones come first."""
    context = info.context
    after_id = None if after is None else decode_id(after, "Notification", argument="after")
    with SUBSCRIPTIONS.track_inprogress():
        async for record in context.notifications.stream(after_id):
            context.fresh_loaders()  # the task and project as of now, not as of the subscription's start
            yield Notification.from_record(record)
