"""Budgets of points per time window, shared by every instance through Redis (in memory without it).

A budget is a fixed window counter: the first charge in a window starts it, every charge adds its
points, and the window's end resets it. Charging is one Lua script (check, add, expire), so two
instances charging at once can never both spend the last points. A charge that would exceed the
budget is refused and not counted, so a refused client is not pushed further back.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis


@dataclass(frozen=True)
class Budget:
    name: str
    points: int
    window_seconds: int


@dataclass(frozen=True)
class Usage:
    """A budget's state after a charge (or a look)."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int  # until the window ends


class Counters(Protocol):
    async def charge(self, key: str, points: int, budget: Budget) -> Usage: ...

    async def reset(self, key: str) -> None: ...


# KEYS[1]: the counter. ARGV: points to add, the budget, window (ms).
# Returns {allowed (0/1), spent after the charge (or unchanged when refused), ms until reset}.
_CHARGE = """
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  spent = 0
  ttl = tonumber(ARGV[3])
end
local points = tonumber(ARGV[1])
if spent + points > tonumber(ARGV[2]) then
  return {0, spent, ttl}
end
redis.call('SET', KEYS[1], spent + points, 'PX', ttl)
return {1, spent + points, ttl}
"""


def _usage(allowed: int, spent: int, ttl_ms: int, budget: Budget) -> Usage:
    return Usage(
        allowed=bool(allowed),
        limit=budget.points,
        remaining=max(0, budget.points - spent),
        reset_seconds=math.ceil(ttl_ms / 1000),
    )


class RedisCounters:
    def __init__(self, client: Redis) -> None:
        self._client = client
        self._charge = client.register_script(_CHARGE)

    @staticmethod
    def _key(key: str) -> str:
        return f"taskql:rate:{key}"

    async def charge(self, key: str, points: int, budget: Budget) -> Usage:
        allowed, spent, ttl = await self._charge(
            keys=[self._key(key)], args=[points, budget.points, budget.window_seconds * 1000]
        )
        return _usage(allowed, int(spent), int(ttl), budget)

    async def reset(self, key: str) -> None:
        await self._client.delete(self._key(key))


class MemoryCounters:
    """One process only (no REDIS_URL); the oldest counters go first past `max_keys`."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._counters: OrderedDict[str, tuple[int, float]] = OrderedDict()  # key -> (spent, window end)
        self._max_keys = max_keys

    async def charge(self, key: str, points: int, budget: Budget) -> Usage:
        now = time.monotonic()
        spent, ends = self._counters.get(key, (0, 0.0))
        if ends <= now:
            spent, ends = 0, now + budget.window_seconds
        allowed = spent + points <= budget.points
        if allowed:
            spent += points
            self._counters[key] = (spent, ends)
            self._counters.move_to_end(key)
            if len(self._counters) > self._max_keys:
                self._counters.popitem(last=False)
        return _usage(int(allowed), spent, int((ends - now) * 1000), budget)

    async def reset(self, key: str) -> None:
        self._counters.pop(key, None)


def create_counters(redis: Redis | None) -> Counters:
    return RedisCounters(redis) if redis is not None else MemoryCounters()
