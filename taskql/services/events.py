"""Live task events: what a subscriber to a project receives (services/outbox.py publishes them)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, Protocol

from bson import ObjectId

from taskql.auth.permissions import PROJECT_NOT_FOUND, Viewer, require_readable
from taskql.auth.revocations import SESSION_ENDED
from taskql.clock import utcnow
from taskql.db.tasks import TaskRecord
from taskql.errors import NotFound, Unauthenticated
from taskql.events.broker import Subscription
from taskql.events.store import Entry
from taskql.services.common import Deps

TASK_KINDS = frozenset({"TASK_CREATED", "TASK_UPDATED", "TASK_DELETED"})
TOKEN_EXPIRED = "The access token has expired: refresh it, then subscribe again with `after` set to the last cursor."
EXPIRED = "expired"  # why a subscription ended: its token expired (else its login ended)


@dataclass(frozen=True)
class TaskEventRecord:
    cursor: str
    kind: str
    project_id: ObjectId
    task_id: ObjectId
    actor_id: ObjectId
    changed_fields: tuple[str, ...]
    at: datetime
    task_doc: dict[str, Any] | None

    @cached_property
    def task(self) -> TaskRecord | None:
        """The task as of this event; None once deleted. Decoded only if a subscriber selects it."""
        return TaskRecord.from_doc(self.task_doc) if self.task_doc else None

    @classmethod
    def from_entry(cls, entry: Entry) -> TaskEventRecord:
        event = entry.payload
        return cls(
            cursor=entry.id,
            kind=event["kind"],
            project_id=event["project_id"],
            task_id=event["task_id"],
            actor_id=event["actor_id"],
            changed_fields=tuple(event["changed_fields"]),
            at=event["at"],
            task_doc=event["task"],
        )


def _ends_access(entry: Entry, viewer: Viewer) -> bool:
    """Whether the entry ends the viewer's access to the project (the subscription then ends)."""
    event = entry.payload
    kind = event["kind"]
    return kind == "PROJECT_DELETED" or (
        kind == "MEMBER_REMOVED" and event["user_id"] == viewer.id and not viewer.is_admin
    )


class EventWriter(Protocol):
    """Sends a subscriber its events without its task (the schema's subscription resolver makes one)."""

    @property
    def key(self) -> Hashable:
        """Writers with equal keys render every event to the same bytes."""

    def render(self, record: TaskEventRecord) -> Awaitable[bytes | None]:
        """The message to send for the event, or None when it cannot be shared."""

    def send(self, rendered: bytes) -> bool:
        """Writes it now, without waiting; False when it could not."""


class _DirectDelivery:
    """The broker's Delivery for one subscriber: the entries it wants and how they are written."""

    __slots__ = ("_viewer", "_writer", "key", "send")

    def __init__(self, writer: EventWriter, viewer: Viewer) -> None:
        self._writer = writer
        self._viewer = viewer
        self.key = writer.key
        self.send: Callable[[bytes], bool] = writer.send

    def wants(self, entry: Entry) -> bool | None:
        if _ends_access(entry, self._viewer):
            return None  # the subscriber's task ends the subscription
        return entry.payload["kind"] in TASK_KINDS

    def render(self, entry: Entry) -> Awaitable[bytes | None]:
        return self._writer.render(TaskEventRecord.from_entry(entry))


class TaskEventService:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def stream(
        self, project_id: ObjectId, after: str | None, writer: EventWriter | None = None
    ) -> AsyncIterator[TaskEventRecord]:
        """Every task event of a readable project after `after` (or from now), until the viewer's
        access token expires or they lose access to the project. With a `writer`, events that find
        the subscriber caught up are sent through it instead of being yielded."""
        viewer = self._deps.require_viewer()
        require_readable(await self._deps.loaders.projects.load(project_id), viewer)
        runtime = self._deps.runtime
        async with runtime.events.subscribe(str(project_id)) as subscription:
            if writer is not None:
                subscription.deliver_directly(_DirectDelivery(writer, viewer))
            if after is not None:
                await subscription.replay_after(after)
            subscription.end_after((viewer.access_expires_at - utcnow()).total_seconds(), reason=EXPIRED)
            with runtime.ended_logins.watch(viewer.session_family_id, subscription):
                async for record in self._records(subscription, viewer):
                    yield record

    async def _records(self, subscription: Subscription, viewer: Viewer) -> AsyncIterator[TaskEventRecord]:
        while True:
            entry = await subscription.next()
            if entry is None:
                raise Unauthenticated(TOKEN_EXPIRED if subscription.end_reason == EXPIRED else SESSION_ENDED)
            if _ends_access(entry, viewer):
                raise NotFound(PROJECT_NOT_FOUND)
            if entry.payload["kind"] in TASK_KINDS:
                yield TaskEventRecord.from_entry(entry)
