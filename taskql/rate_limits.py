"""Budgets of points per time window, shared by every instance through Redis.

A budget is a fixed window counter: the first charge in a window starts it, every charge adds its
points, and the window's end resets it. Charging is one Lua script (check, add, expire), so two
instances charging at once can never both spend the last points. A charge that would exceed the
budget is refused and not counted, so a refused client is not pushed further back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


class Counters:
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
        return Usage(
            allowed=bool(allowed),
            limit=budget.points,
            remaining=max(0, budget.points - int(spent)),
            reset_seconds=math.ceil(int(ttl) / 1000),
        )

    async def reset(self, key: str) -> None:
        await self._client.delete(self._key(key))
