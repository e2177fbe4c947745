"""In-app notifications: the viewer's list, unread count, marking read, and the live stream.

Notifications are created by the notify job (jobs/notify.py). A notification about a project the
viewer can no longer read is not shown, anywhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

from bson import ObjectId

from taskql.auth.revocations import SESSION_ENDED
from taskql.clock import utcnow
from taskql.db import notifications as notifications_db
from taskql.db.notifications import NotificationRecord
from taskql.db.pagination import Page, PageRequest
from taskql.db.projects import find_projects_by_ids, project_ids_of_member
from taskql.errors import BadUserInput, NotFound, Unauthenticated
from taskql.services.common import Deps
from taskql.services.events import EXPIRED, TOKEN_EXPIRED
from taskql.services.validation import Checker

# Live notifications go to one event log per shard of users, not per user: an instance follows at
# most this many logs (one blocking Redis read each), however many users are subscribed.
NOTIFICATION_SHARDS = 64
NOTIFICATION_NOT_FOUND = "Notification not found."
MAX_MARKED_IDS = 100
# A notification whose place in the stream is not recorded yet (its job is publishing it right now):
# resume from a little before it was created.
_UNRECORDED_SLACK = timedelta(seconds=5)


def notification_channel(user_id: ObjectId) -> str:
    """The event log of the user's shard (the last bytes of an ObjectId are a counter: evenly spread)."""
    return f"notifications:{int(str(user_id)[-6:], 16) % NOTIFICATION_SHARDS}"


class NotificationService:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._db = deps.db
        self._readable: list[ObjectId] | None = None

    async def _readable_projects(self) -> list[ObjectId] | None:
        """The projects whose notifications the viewer sees (None: all, for admins)."""
        viewer = self._deps.require_viewer()
        if viewer.is_admin:
            return None
        if self._readable is None:
            self._readable = await project_ids_of_member(self._db, user_id=viewer.id)
        return self._readable

    def require_self(self, user_id: ObjectId) -> ObjectId:
        viewer = self._deps.require_viewer()
        if user_id != viewer.id:
            raise NotFound("Only the signed-in user's own notifications can be read: use `viewer`.")
        return viewer.id

    async def page(self, user_id: ObjectId, *, unread_only: bool, page: PageRequest) -> Page[NotificationRecord]:
        return await notifications_db.page_notifications(
            self._db,
            user_id=self.require_self(user_id),
            project_ids=await self._readable_projects(),
            unread_only=unread_only,
            page=page,
        )

    async def count(self, user_id: ObjectId, *, unread_only: bool) -> int:
        return await notifications_db.count_notifications(
            self._db,
            user_id=self.require_self(user_id),
            project_ids=await self._readable_projects(),
            unread_only=unread_only,
        )

    async def get(self, notification_id: ObjectId) -> NotificationRecord:
        viewer = self._deps.require_viewer()
        found = await notifications_db.find_notifications_by_ids(self._db, ids=[notification_id])
        readable = await self._readable_projects()
        if not found or found[0].user_id != viewer.id or (readable is not None and found[0].project_id not in readable):
            raise NotFound(NOTIFICATION_NOT_FOUND)
        return found[0]

    async def mark_read(self, ids: Sequence[ObjectId] | None, *, every: bool) -> int:
        """Marks the viewer's notifications read: `ids`, or `every` one. Returns how many were unread."""
        viewer = self._deps.require_viewer()
        check = Checker()
        if (ids is None) == (not every):
            check.add(("input",), "pass either `ids` or `all: true`")
        elif ids is not None and len(ids) > MAX_MARKED_IDS:
            check.add(("input", "ids"), f"must hold at most {MAX_MARKED_IDS} IDs")
        check.raise_if_any()
        return await notifications_db.mark_read(self._db, user_id=viewer.id, ids=ids, now=utcnow())

    async def stream(self, after: ObjectId | None) -> AsyncIterator[NotificationRecord]:
        """The viewer's new notifications as they are created; with `after` (one of their
        notifications' IDs), first those created after it. Until the access token expires or the
        login ends."""
        viewer = self._deps.require_viewer()
        runtime = self._deps.runtime
        async with runtime.events.subscribe(notification_channel(viewer.id)) as subscription:
            seen_until = None  # resuming from before `after`: what was created until it was seen already
            if after is not None:
                position = await notifications_db.find_stream_position(
                    self._db, notification_id=after, user_id=viewer.id
                )
                if position is None:
                    raise BadUserInput("`after` is not one of your notifications.", field=("after",))
                created_at, stream_id = position
                if stream_id is None:
                    stream_id = f"{int((created_at - _UNRECORDED_SLACK).timestamp() * 1000)}-0"
                    seen_until = created_at
                await subscription.replay_after(stream_id)
            subscription.end_after((viewer.access_expires_at - utcnow()).total_seconds(), reason=EXPIRED)
            with runtime.ended_logins.watch(viewer.session_family_id, subscription):
                while True:
                    entry = await subscription.next()
                    if entry is None:
                        raise Unauthenticated(TOKEN_EXPIRED if subscription.end_reason == EXPIRED else SESSION_ENDED)
                    record = NotificationRecord.from_doc(entry.payload)
                    if record.user_id != viewer.id or record.id == after:
                        continue  # another user of the shard; or the one resumed after
                    if seen_until is not None and record.created_at <= seen_until:
                        continue
                    if await self._still_readable(record.project_id):
                        yield record

    async def _still_readable(self, project_id: ObjectId) -> bool:
        """As of now: a subscription lives long, and its viewer may have left the project since."""
        viewer = self._deps.require_viewer()
        if viewer.is_admin:
            return True
        projects = await find_projects_by_ids(self._db, ids=[project_id])
        return bool(projects) and projects[0].role_of(viewer.id) is not None
