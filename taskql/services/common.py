"""What every service needs for one request: the process-wide runtime, the request's loaders and viewer."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.trace import Tracer

from taskql.auth.passwords import Passwords
from taskql.auth.permissions import Viewer
from taskql.auth.revocations import Revocations
from taskql.auth.tokens import TokenIssuer
from taskql.db.client import Database
from taskql.errors import Unauthenticated
from taskql.events.broker import EventBroker
from taskql.events.ended_logins import EndedLogins
from taskql.http.client_ip import Network
from taskql.keyed_locks import KeyedLocks
from taskql.loaders.cache import EntityCache
from taskql.loaders.request import Loaders
from taskql.loaders.task_lists import TaskListCache
from taskql.outage import RedisOutage
from taskql.persisted_queries import PersistedQueries
from taskql.rate_limits import Counters
from taskql.services.outbox import JobSink, Outbox
from taskql.settings import Settings

SIGN_IN = "Sign in to do this: send `Authorization: Bearer <access token>`."


@dataclass(frozen=True)
class Runtime:
    """Process-wide parts, built once in the app's lifespan."""

    settings: Settings
    db: Database
    passwords: Passwords
    tokens: TokenIssuer
    cache: EntityCache
    task_lists: TaskListCache
    events: EventBroker
    ended_logins: EndedLogins
    outbox: Outbox
    jobs: JobSink  # the job queue (jobs/queue.py)
    rate_limits: Counters
    redis_outage: RedisOutage  # what every part that uses Redis checks first
    task_writes: KeyedLocks  # updates of one task from this process take turns (services/tasks.py)
    trusted_proxies: tuple[Network, ...]
    persisted_queries: PersistedQueries
    revocations: Revocations
    tracer: Tracer | None  # None: tracing is off


@dataclass(frozen=True)
class Deps:
    runtime: Runtime
    loaders: Loaders
    viewer: Viewer | None
    client_ip: str  # for rate limits (http/client_ip.py)
    auth_problem: str | None = None  # why a token that was sent was refused

    @property
    def db(self) -> Database:
        return self.runtime.db

    def require_viewer(self) -> Viewer:
        if self.viewer is None:
            raise Unauthenticated(self.auth_problem or SIGN_IN)
        return self.viewer
