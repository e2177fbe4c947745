"""Guessing (passwords, and which addresses have accounts): in `login_failure_window_seconds`, at
most `login_max_failures` failed logins (or registrations, or changes of a profile's email to an
address already taken) per account from one client IP, as many per IP across all accounts, and
`login_max_account_failures` per account from all IPs together. Someone guessing at an account
from their own network locks it for that network only, so its owner can still sign in from
theirs (OWASP's authentication cheat sheet); the account-wide ceiling, much higher, still stops
a guess spread over many addresses.

Every attempt reserves one failure of each budget, atomically, before the password is hashed or
checked: of 40 concurrent attempts on one account, 5 are checked and the others refused, where a
check-then-count let most of them through. Over the limit, attempts are refused: RATE_LIMITED with
`retryAfter`. A successful attempt resets its account's count from its IP and gives its other
reservations back (not more: a single known password must not reopen an IP that is guessing at
others).

If Redis cannot be reached, logins and registrations are refused (fail closed), unlike other
operations: without the counters, nothing would limit guessing, and a Redis outage could be
provoked to get there. Signed-in users are not affected; they keep their sessions.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

from redis.exceptions import RedisError

from taskql import metrics
from taskql.errors import RateLimited, Unavailable
from taskql.rate_limits import Budget
from taskql.services.common import Deps

logger = logging.getLogger("taskql.rate_limits")
TOO_MANY = "Too many failed attempts: try again in {seconds} s."
UNAVAILABLE = "Signing in is unavailable for a moment: try again shortly."


class LoginThrottle:
    def __init__(self, deps: Deps, kind: str, account: str) -> None:
        settings = deps.runtime.settings
        self._counters = deps.runtime.rate_limits
        self._kind = kind
        window = settings.login_failure_window_seconds
        per_ip = Budget(kind, settings.login_max_failures, window)
        # Hashed: the counters need no email addresses in Redis.
        self._account_key = f"{kind}:account:{hashlib.sha256(account.encode()).hexdigest()[:32]}"
        self._account_from_ip_key = f"{self._account_key}:ip:{deps.client_ip}"
        self._ip_key = f"{kind}:ip:{deps.client_ip}"
        self._charges = [
            (self._account_from_ip_key, per_ip),
            (self._ip_key, per_ip),
            (self._account_key, Budget(kind, settings.login_max_account_failures, window)),
        ]

    async def reserve(self) -> None:
        """Counts the attempt as a failure until it succeeds; refuses it if any budget has no failure left."""
        try:
            usages = await self._counters.charge(self._charges, 1)
        except RedisError as exc:
            logger.error("login throttle unavailable, refusing sign-ins: %s", exc)
            raise Unavailable(UNAVAILABLE) from exc
        blocked = [usage for usage in usages if not usage.allowed]
        if blocked:
            metrics.RATE_LIMIT_REJECTIONS.labels(self._kind).inc()
            retry_after = max(usage.reset_seconds for usage in blocked)
            raise RateLimited(TOO_MANY.format(seconds=retry_after), retry_after=retry_after)

    async def succeeded(self) -> None:
        try:
            await asyncio.gather(  # one round trip (redis_client.py)
                self._counters.reset(self._account_from_ip_key),
                self._counters.refund(self._ip_key, 1),
                self._counters.refund(self._account_key, 1),
            )
        except RedisError as exc:
            logger.error("could not release a successful sign-in's reservation: %s", exc)
