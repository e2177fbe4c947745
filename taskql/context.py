"""The typed per-request context: viewer, services and fresh DataLoaders."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from taskql.errors import Unauthenticated
from taskql.loaders.request import Loaders
from taskql.services.activity import ActivityService
from taskql.services.common import Deps, Runtime
from taskql.services.projects import ProjectService
from taskql.services.tasks import TaskService
from taskql.services.users import AccountService, UserService, authenticate


@dataclass
class Context:
    request: Request | WebSocket
    response: Response | WebSocket | None
    request_id: str
    deps: Deps
    accounts: AccountService = field(init=False)
    users: UserService = field(init=False)
    projects: ProjectService = field(init=False)
    tasks: TaskService = field(init=False)
    activity: ActivityService = field(init=False)

    def __post_init__(self) -> None:
        self.accounts = AccountService(self.deps)
        self.users = UserService(self.deps)
        self.projects = ProjectService(self.deps)
        self.tasks = TaskService(self.deps)
        self.activity = ActivityService(self.deps)


async def build_context(
    runtime: Runtime, request: Request | WebSocket, response: Response | WebSocket | None, *, authorization: str | None
) -> Context:
    loaders = Loaders.create(runtime.db, runtime.cache, max_batch_size=runtime.settings.loader_max_batch_size)
    auth_problem = None
    try:
        viewer = await authenticate(runtime, loaders, authorization)
    except Unauthenticated as exc:
        viewer, auth_problem = None, exc.message
    deps = Deps(runtime=runtime, loaders=loaders, viewer=viewer, auth_problem=auth_problem)
    return Context(request=request, response=response, request_id=request.state.request_id, deps=deps)
