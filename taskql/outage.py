"""How the parts that keep shared state in Redis ride out Redis being unreachable, together.

Each part has somewhere else to turn, or something it may skip: the entity cache, the task list
cache and the session checks read MongoDB, the rate limits stop counting, the events are left to
the outbox relay. After a failure every part turns there at once for `retry_seconds`, rather than
making each request wait for Redis's timeout, then Redis is tried again. Writes a part could not
make meanwhile are owed: they are made first thing when it tries again, before anything is read,
so its reads never return what those writes made stale.

One tracker per process, for its Redis: an outage is logged once when it starts (with its cause)
and once when it ends (with its duration), whatever the parts did meanwhile, and
`taskql_redis_skipped_operations_total` counts, per part, what went without Redis.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from redis.exceptions import RedisError

from taskql import metrics

T = TypeVar("T")
Part = Literal["cache", "task_lists", "session_checks", "rate_limits", "events"]
logger = logging.getLogger("taskql.redis")


class RedisOutage:
    def __init__(self, *, retry_seconds: float) -> None:
        self._retry_seconds = retry_seconds
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._back_at = float("-inf")
        self._skipped = 0

    @property
    def waiting(self) -> bool:
        """Redis failed less than `retry_seconds` ago: do not try it yet."""
        return self._down_since is not None and time.monotonic() < self._retry_at

    async def attempt(
        self, operation: Callable[[], Awaitable[T]], *, part: Part, owed: Callable[[], Awaitable[None]] | None = None
    ) -> tuple[bool, T | None]:
        """(True, result) of `operation`, after the `owed` writes; (False, None) while Redis fails."""
        if self.waiting:
            self._skip(part)
            return False, None
        started = time.monotonic()
        try:
            if owed is not None:
                await owed()
            result = await operation()
        except RedisError as exc:
            self._skip(part)
            # A command sent before Redis came back, failing late, is part of the outage that ended.
            if started >= self._back_at:
                self._failed(started, exc)
            return False, None
        if self._down_since is not None and started >= self._down_since:
            self._recovered()
        return True, result

    def _skip(self, part: Part) -> None:
        self._skipped += 1
        metrics.REDIS_SKIPPED.labels(part).inc()

    def _failed(self, started: float, exc: RedisError) -> None:
        if self._down_since is None:
            self._down_since, self._skipped = started, 1
            logger.warning(
                "Redis unreachable (%s: %s); until it returns: reads from MongoDB, rate limits not counted, "
                "live events left to the outbox relay",
                type(exc).__name__,
                exc,
            )
        self._retry_at = time.monotonic() + self._retry_seconds

    def _recovered(self) -> None:
        assert self._down_since is not None
        now = time.monotonic()
        logger.warning(
            "Redis reachable again after %.1f s; %d operation(s) went without it", now - self._down_since, self._skipped
        )
        self._down_since, self._back_at = None, now
