"""Ends the live subscriptions of a login the moment it ends, on every instance.

A subscription checks its viewer's session when it starts, and ends by itself when the access
token expires; a logout, logoutAll, password change or reused refresh token must end it sooner.
The instance that revokes a login announces it on one channel of the event log; every instance
reads that channel (one reader each) and ends the subscriptions it serves for that login, within
the time a stream read takes to arrive. An announcement lost to a Redis outage leaves those
subscriptions to end when their token expires; any new operation is refused regardless (the
revocation marker, auth/revocations.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator

from bson import ObjectId
from opentelemetry.instrumentation.utils import suppress_instrumentation
from redis.exceptions import RedisError

from taskql.cancellation import raise_if_cancelled
from taskql.events.broker import EventBroker, SubscriberTooSlow, Subscription

logger = logging.getLogger("taskql.events")
CHANNEL = "logins:ended"
RETRY_SECONDS = 1.0
REVOKED = "revoked"  # a subscription's end_reason when its login ended


class EndedLogins:
    def __init__(self, broker: EventBroker) -> None:
        self._broker = broker
        self._watched: defaultdict[ObjectId, set[Subscription]] = defaultdict(set)
        self._listening: asyncio.Task[None] | None = None

    async def announce(self, family_ids: Iterable[ObjectId]) -> None:
        """Tells every instance these logins have ended (after they are revoked)."""
        families = list(family_ids)
        if not families:
            return
        try:
            await self._broker.publish(CHANNEL, {"families": families}, event_id=str(ObjectId()))
        except RedisError as exc:
            logger.warning("could not announce ended logins; their subscriptions end with their tokens: %s", exc)

    @contextlib.contextmanager
    def watch(self, family_id: ObjectId, subscription: Subscription) -> Iterator[None]:
        """Ends `subscription` if its login ends while it runs."""
        self._watched[family_id].add(subscription)
        try:
            yield
        finally:
            self._watched[family_id].discard(subscription)
            if not self._watched[family_id]:
                del self._watched[family_id]

    def start(self) -> None:
        self._listening = asyncio.create_task(self._listen(), name="ended-logins")

    async def stop(self) -> None:
        if self._listening is not None:
            self._listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listening

    async def _listen(self) -> None:
        # Untraced, as the other background work: a trace per (re)connection would bury the requests'.
        with suppress_instrumentation():
            while True:
                try:
                    async with self._broker.subscribe(CHANNEL) as announcements:
                        while (entry := await announcements.next()) is not None:
                            for family_id in entry.payload["families"]:
                                for subscription in self._watched.get(family_id, ()):
                                    subscription.end(reason=REVOKED)
                except RedisError as exc:
                    logger.warning("not hearing of ended logins while Redis fails: %s", exc)
                except SubscriberTooSlow:  # more announcements at once than a subscriber buffers: read on
                    logger.warning("missed announcements of ended logins; their subscriptions end with their tokens")
                raise_if_cancelled()
                await asyncio.sleep(RETRY_SECONDS)
