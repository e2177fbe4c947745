"""The typed per-request context: viewer, services and fresh DataLoaders."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo.errors import PyMongoError
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from taskql.auth.tokens import EXPIRED, AccessClaims
from taskql.clock import utcnow
from taskql.errors import Unauthenticated, Unavailable
from taskql.http.client_ip import client_ip
from taskql.loaders.request import Loaders
from taskql.services.activity import ActivityService
from taskql.services.common import Deps, Runtime
from taskql.services.events import TaskEventService
from taskql.services.exports import ExportService
from taskql.services.notifications import NotificationService
from taskql.services.projects import ProjectService
from taskql.services.tasks import TaskService
from taskql.services.users import (
    AccountService,
    UserService,
    authenticate,
    confirm_session,
    read_access_token,
)
from taskql.services.webhooks import WebhookService

logger = logging.getLogger("taskql.server")


@dataclass
class Context:
    request: Request | WebSocket
    response: Response | WebSocket | None
    request_id: str
    deps: Deps
    connection_params: dict[str, Any] | None = None  # a WebSocket's connection_init payload
    # An HTTP request's valid token whose login is confirmed once an operation runs (confirm_session).
    unconfirmed: AccessClaims | None = None
    _confirming: asyncio.Event | None = field(default=None, init=False)
    accounts: AccountService = field(init=False)
    users: UserService = field(init=False)
    projects: ProjectService = field(init=False)
    tasks: TaskService = field(init=False)
    activity: ActivityService = field(init=False)
    task_events: TaskEventService = field(init=False)
    notifications: NotificationService = field(init=False)
    webhooks: WebhookService = field(init=False)
    exports: ExportService = field(init=False)

    def __post_init__(self) -> None:
        self.accounts = AccountService(self.deps)
        self.users = UserService(self.deps)
        self.projects = ProjectService(self.deps)
        self.tasks = TaskService(self.deps)
        self.activity = ActivityService(self.deps)
        self.task_events = TaskEventService(self.deps)
        self.notifications = NotificationService(self.deps)
        self.webhooks = WebhookService(self.deps)
        self.exports = ExportService(self.deps)

    def renew(self, deps: Deps) -> None:
        """A WebSocket's context lives as long as the connection: new viewer, or fresh loaders per event."""
        self.deps = deps
        self.__post_init__()

    @property
    def user_id(self) -> ObjectId | None:
        """Whose budget an operation is charged to: the viewer's, or the user of a token still to be confirmed."""
        if self.deps.viewer is not None:
            return self.deps.viewer.id
        return None if self.unconfirmed is None else self.unconfirmed.user_id

    async def confirm_session(self) -> None:
        """Sets the viewer of an HTTP request whose token is valid once its login is known not to have
        ended. The guard (schema/extensions/guard.py) calls it beside the rate-limit charge, so that the
        two go to Redis in one round trip (redis_client.py); an operation cannot run before it."""
        if self._confirming is not None:  # another operation of this batch is confirming it
            await self._confirming.wait()
            return
        claims = self.unconfirmed
        if claims is None:
            return
        self._confirming = asyncio.Event()
        runtime = self.deps.runtime
        try:
            viewer = await confirm_session(runtime, self.deps.loaders, claims)
        except Unauthenticated as exc:
            self.renew(dataclasses.replace(self.deps, auth_problem=exc.message))
        except PyMongoError as exc:
            # Report the outage, never its details (db/client.py logs it once).
            raise Unavailable(f"Service temporarily unavailable (request id {self.request_id}).") from exc
        else:
            self.renew(dataclasses.replace(self.deps, viewer=viewer))
        finally:
            self.unconfirmed = None
            self._confirming.set()

    async def recheck_socket_session(self) -> None:
        """Before each operation on a WebSocket: the connection's login must still be going, as of
        now, and nothing read for an earlier operation (a membership, a role) may decide this one.
        The viewer's token was checked when the socket opened; since then it may have expired, or
        its login ended (logout, logoutAll, a password change)."""
        self.fresh_loaders()
        viewer = self.deps.viewer
        if viewer is None:
            return
        if viewer.access_expires_at <= utcnow():
            raise Unauthenticated(EXPIRED)
        claims = AccessClaims(viewer.id, viewer.session_family_id, viewer.access_expires_at)
        # The user is read again too: a role changed since (an admin no more) counts from now.
        current = await confirm_session(self.deps.runtime, self.deps.loaders, claims)
        self.renew(dataclasses.replace(self.deps, viewer=current))

    def fresh_loaders(self) -> None:
        runtime = self.deps.runtime
        self.renew(
            Deps(runtime=runtime, loaders=new_loaders(runtime), viewer=self.deps.viewer, client_ip=self.deps.client_ip)
        )


def new_loaders(runtime: Runtime) -> Loaders:
    return Loaders.create(
        runtime.db,
        runtime.cache,
        runtime.task_lists,
        max_batch_size=runtime.settings.loader_max_batch_size,
        tracer=runtime.tracer,
    )


async def authenticated_deps(runtime: Runtime, connection: HTTPConnection, authorization: str | None) -> Deps:
    loaders = new_loaders(runtime)
    auth_problem = None
    try:
        viewer = await authenticate(runtime, loaders, authorization)
    except Unauthenticated as exc:
        viewer, auth_problem = None, exc.message
    ip = client_ip(connection, runtime.trusted_proxies)
    return Deps(runtime=runtime, loaders=loaders, viewer=viewer, client_ip=ip, auth_problem=auth_problem)


def build_context(
    runtime: Runtime, request: Request | WebSocket, response: Response | WebSocket | None, *, authorization: str | None
) -> Context:
    """The context of a request. Its token is read now; whether its login is still going is asked
    when an operation runs (Context.confirm_session)."""
    deps = Deps(
        runtime=runtime,
        loaders=new_loaders(runtime),
        viewer=None,
        client_ip=client_ip(request, runtime.trusted_proxies),
    )
    try:
        claims = read_access_token(runtime, authorization)
    except Unauthenticated as exc:
        claims, deps = None, dataclasses.replace(deps, auth_problem=exc.message)
    return Context(
        request=request, response=response, request_id=request.state.request_id, deps=deps, unconfirmed=claims
    )
