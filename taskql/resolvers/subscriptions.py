"""Subscriptions: live task events of a project."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from taskql.metrics import EVENTS_SENT, SUBSCRIPTIONS
from taskql.schema.events import TaskEvent
from taskql.schema.extensions.shared_events import event_writer
from taskql.schema.relay import decode_id


async def task_events(
    info: strawberry.Info, project_id: strawberry.ID, after: str | None = None
) -> AsyncGenerator[TaskEvent, None]:
    """Every change to a project's tasks, as it happens. After a reconnect, pass the last `cursor`
    received as `after`: the missed events come first, then live ones, none twice."""
    context = info.context
    # Events that find the subscriber caught up are written to its socket without passing through here.
    writer = event_writer(TaskEvent.from_record)
    events = context.task_events.stream(decode_id(project_id, "Project", argument="projectId"), after, writer)
    # Until it ends however it ends: an error, the client leaving (the generator is closed), a shutdown.
    sent_by_task = EVENTS_SENT.labels("task")
    with SUBSCRIPTIONS.track_inprogress():
        async for event in events:
            sent_by_task.inc()
            yield TaskEvent.from_record(event)
