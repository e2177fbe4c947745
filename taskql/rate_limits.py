"""Budgets of points per time window, shared by every instance through Redis.

A budget is a fixed window counter: the first charge in a window starts it, every charge adds its
points, and the window's end resets it. Charging is one Lua script (check, add, expire) for all the
budgets a request spends from (its user's and its IP's), so two instances charging at once can never
both spend the last points. A charge that would exceed a budget is refused and counted in none, so a
refused client is not pushed further back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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


# KEYS: the counters. ARGV: the points to add, then each counter's budget and window (ms).
# Charges every counter or none: refused when any would go over its budget. Returns, per counter,
# {fits (0/1), spent after the charge (or unchanged when refused), ms until its window ends}.
_CHARGE = """
local points = tonumber(ARGV[1])
local spent, ttls, fits, all_fit = {}, {}, {}, true
for i, key in ipairs(KEYS) do
  spent[i] = tonumber(redis.call('GET', key) or '0')
  ttls[i] = redis.call('PTTL', key)
  if ttls[i] < 0 then
    spent[i] = 0
    ttls[i] = tonumber(ARGV[2 * i + 1])
  end
  fits[i] = spent[i] + points <= tonumber(ARGV[2 * i])
  all_fit = all_fit and fits[i]
end
local result = {}
for i, key in ipairs(KEYS) do
  if all_fit then
    spent[i] = spent[i] + points
    redis.call('SET', key, spent[i], 'PX', ttls[i])
  end
  result[3 * i - 2], result[3 * i - 1], result[3 * i] = fits[i] and 1 or 0, spent[i], ttls[i]
end
return result
"""


# KEYS: a counter. ARGV[1]: points to give back. Within the counter's window only (an ended window
# has nothing to give back to), never below zero, the window's end unchanged.
_REFUND = """
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('DECRBY', KEYS[1], ARGV[1]) < 0 then
  redis.call('SET', KEYS[1], 0, 'KEEPTTL')
end
return 0
"""


class Counters:
    def __init__(self, client: Redis) -> None:
        self._client = client
        self._charge = client.register_script(_CHARGE)
        self._refund = client.register_script(_REFUND)

    @staticmethod
    def _key(key: str) -> str:
        return f"taskql:rate:{key}"

    async def charge(self, charges: Sequence[tuple[str, Budget]], points: int) -> list[Usage]:
        """Adds `points` to every (counter, budget) in one round trip, or to none if any budget would
        go over; their usages in the same order (`allowed` false for the budgets that refused)."""
        if points < 0:  # a negative charge would be a credit
            raise ValueError(f"cannot charge {points} points")
        args: list[int] = [points]
        for _, budget in charges:
            args += [budget.points, budget.window_seconds * 1000]
        reply = await self._charge(keys=[self._key(key) for key, _ in charges], args=args)
        return [
            Usage(
                allowed=bool(reply[3 * i]),
                limit=budget.points,
                remaining=max(0, budget.points - int(reply[3 * i + 1])),
                reset_seconds=math.ceil(int(reply[3 * i + 2]) / 1000),
            )
            for i, (_, budget) in enumerate(charges)
        ]

    async def refund(self, key: str, points: int) -> None:
        """Gives back points charged in the counter's current window (a reservation not used up)."""
        await self._refund(keys=[self._key(key)], args=[points])

    async def reset(self, key: str) -> None:
        await self._client.delete(self._key(key))
