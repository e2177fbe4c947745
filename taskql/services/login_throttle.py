"""Password guessing: at most `login_max_failures` failed logins (or registrations) per account and
per client IP in `login_failure_window_seconds`.

Every attempt reserves one failure of both budgets, atomically, before the password is hashed or
checked: of 40 concurrent attempts on one account, 5 are checked and the others refused, where a
check-then-count let most of them through. Over the limit, attempts are refused: RATE_LIMITED with
`retryAfter`. A successful attempt gives its IP's reservation back and resets its account's count
(not the IP's: a single known password must not reopen an IP that is guessing at others).

If Redis cannot be reached, logins and registrations are refused (fail closed), unlike other
operations: without the counters, nothing would limit guessing, and a Redis outage could be
provoked to get there. Signed-in users are not affected; they keep their sessions.
"""

from __future__ import annotations

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
        self._budget = Budget(kind, settings.login_max_failures, settings.login_failure_window_seconds)
        # Hashed: the counters need no email addresses in Redis.
        self._account_key = f"{kind}:account:{hashlib.sha256(account.encode()).hexdigest()[:32]}"
        self._ip_key = f"{kind}:ip:{deps.client_ip}"
        self._keys = [self._account_key, self._ip_key]

    async def reserve(self) -> None:
        """Counts the attempt as a failure until it succeeds; refuses it if the account or the IP has
        no failure left."""
        try:
            usages = await self._counters.charge([(key, self._budget) for key in self._keys], 1)
        except RedisError as exc:
            logger.error("login throttle unavailable, refusing sign-ins: %s", exc)
            raise Unavailable(UNAVAILABLE) from exc
        blocked = [usage for usage in usages if not usage.allowed]
        if blocked:
            metrics.RATE_LIMIT_REJECTIONS.labels(self._budget.name).inc()
            retry_after = max(usage.reset_seconds for usage in blocked)
            raise RateLimited(TOO_MANY.format(seconds=retry_after), retry_after=retry_after)

    async def succeeded(self) -> None:
        try:
            await self._counters.reset(self._account_key)
            await self._counters.refund(self._ip_key, 1)
        except RedisError as exc:
            logger.error("could not release a successful sign-in's reservation: %s", exc)
