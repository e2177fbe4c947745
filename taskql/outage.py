"""How a part that keeps shared state in Redis rides out Redis being unreachable.

The entity cache, the task list cache and the session checks each have somewhere else to turn
(MongoDB) when Redis fails. After a failure a part turns there at once for `retry_seconds`, rather
than making every request wait for Redis's timeout, then tries Redis again. Writes it could not
make meanwhile are owed: they are made first thing when it tries again, before anything is read,
so its reads never return what those writes made stale. The outage is logged once, and its end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisError

T = TypeVar("T")


class RedisOutage:
    def __init__(self, logger: logging.Logger, *, what: str, meanwhile: str, retry_seconds: float) -> None:
        self._logger = logger
        self._what = what  # "cache": "cache unreachable, …"
        self._meanwhile = meanwhile  # what the part does instead: "serving from the database"
        self._retry_seconds = retry_seconds
        self._down_until: float | None = None

    @property
    def waiting(self) -> bool:
        """Redis failed less than `retry_seconds` ago: do not try it yet."""
        return self._down_until is not None and time.monotonic() < self._down_until

    async def attempt(
        self, operation: Callable[[], Awaitable[T]], *, owed: Callable[[], Awaitable[None]] | None = None
    ) -> tuple[bool, T | None]:
        """(True, result) of `operation`, after the `owed` writes; (False, None) while Redis fails."""
        if self.waiting:
            return False, None
        try:
            if owed is not None:
                await owed()
            result = await operation()
        except RedisError as exc:
            if self._down_until is None:
                self._logger.warning("%s unreachable, %s until it returns: %s", self._what, self._meanwhile, exc)
            self._down_until = time.monotonic() + self._retry_seconds
            return False, None
        if self._down_until is not None:
            self._logger.warning("%s reachable again; resuming", self._what)
            self._down_until = None
        return True, result
