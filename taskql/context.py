"""The typed per-request context: viewer, services and fresh DataLoaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from taskql.errors import Unauthenticated
from taskql.http.client_ip import client_ip
from taskql.loaders.request import Loaders
from taskql.services.activity import ActivityService
from taskql.services.common import Deps, Runtime
from taskql.services.events import TaskEventService
from taskql.services.projects import ProjectService
from taskql.services.tasks import TaskService
from taskql.services.users import AccountService, UserService, authenticate


@dataclass
class Context:
    request: Request | WebSocket
    response: Response | WebSocket | None
    request_id: str
    deps: Deps
    connection_params: dict[str, Any] | None = None  # a WebSocket's connection_init payload
    accounts: AccountService = field(init=False)
    users: UserService = field(init=False)
    projects: ProjectService = field(init=False)
    tasks: TaskService = field(init=False)
    activity: ActivityService = field(init=False)
    task_events: TaskEventService = field(init=False)

    def __post_init__(self) -> None:
        self.accounts = AccountService(self.deps)
        self.users = UserService(self.deps)
        self.projects = ProjectService(self.deps)
        self.tasks = TaskService(self.deps)
        self.activity = ActivityService(self.deps)
        self.task_events = TaskEventService(self.deps)

    def renew(self, deps: Deps) -> None:
        """A WebSocket's context lives as long as the connection: new viewer, or fresh loaders per event."""
        self.deps = deps
        self.__post_init__()

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


async def build_context(
    runtime: Runtime, request: Request | WebSocket, response: Response | WebSocket | None, *, authorization: str | None
) -> Context:
    deps = await authenticated_deps(runtime, request, authorization)
    return Context(request=request, response=response, request_id=request.state.request_id, deps=deps)
