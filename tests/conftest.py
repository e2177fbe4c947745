"""Real services: an in-process SecantusDB server (MongoDB wire protocol), Valkey, and the app over ASGI."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pymongo import AsyncMongoClient, monitoring
from secantus import SecantusDBServer
from starlette.requests import HTTPConnection
from strawberry import Schema

from taskql.context import Context, authenticated_deps
from taskql.embedded.valkey import valkey_server
from taskql.events.broker import Subscription
from taskql.events.store import Entry
from taskql.loaders.cache import EntityCache
from taskql.schema.root import build_schema
from taskql.server import build_app
from taskql.settings import UNLIMITED_RATE, Settings
from tests.mail import Inbox, smtp_inbox

TEST_SECRET = "test-secret-" + "x" * 40
PASSWORD = "correct horse battery"
_emails = itertools.count()


class CommandLog(monitoring.CommandListener):
    """Names of the commands sent to one test database (registered once, before any client exists)."""

    def __init__(self) -> None:
        self.database: str | None = None
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        # The outbox relay polls in the background, whatever the requests do: not theirs to count.
        if event.database_name == self.database and event.command.get(event.command_name) != "outbox":
            self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def reads(self) -> int:
        return sum(name in ("find", "aggregate") for name in self.names)


COMMAND_LOG = CommandLog()
monitoring.register(COMMAND_LOG)


@pytest.fixture
def command_log(settings: Settings) -> Iterator[CommandLog]:
    COMMAND_LOG.database, COMMAND_LOG.names = settings.mongodb_database, []
    yield COMMAND_LOG
    COMMAND_LOG.database = None


@pytest.fixture(scope="session")
def mongodb_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = SecantusDBServer(storage_path=str(tmp_path_factory.mktemp("secantus")), port=0)
    server.start()
    yield server.uri
    server.stop()


@pytest.fixture
def settings(mongodb_uri: str, redis_url: str, tmp_path: Path) -> Settings:
    """A fresh database per test, in MongoDB and in Redis."""
    return Settings(
        _env_file=None,
        taskql_env="test",
        mongodb_uri=mongodb_uri,
        redis_url=redis_url,
        mongodb_database=f"test_{uuid.uuid4().hex[:12]}",
        jwt_secret=TEST_SECRET,
        data_dir=tmp_path,
        jobs_in_process=False,  # tests that run jobs start their worker (tests/test_jobs.py)
        **UNLIMITED_RATE,  # tests share 127.0.0.1: only test_rate_limits keeps budgets
    )


class GraphQLClient:
    """Posts GraphQL documents to the app, optionally as a signed-in user."""

    def __init__(self, http: httpx.AsyncClient, token: str | None = None) -> None:
        self.http = http
        self.token = token
        self.user: dict[str, Any] = {}
        self.refresh_token = ""

    async def post(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        headers = {}
        if token or self.token:
            headers["authorization"] = f"Bearer {token or self.token}"
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The data of a request that must not fail."""
        body = await self.post(query, variables)
        assert "errors" not in body, body["errors"]
        return body["data"]

    def as_user(self, token: str) -> GraphQLClient:
        return GraphQLClient(self.http, token)


REGISTER = """
mutation Register($input: RegisterInput!) {
  register(input: $input) {
    accessToken refreshToken expiresIn
    user { id email name role }
    userErrors { code field message }
  }
}
"""


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Any]:
    application = build_app(settings)
    async with LifespanManager(application):
        yield application  # its lifespan keeps what it opened in app.state, not in a lifespan state
    client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_uri)
    await client.drop_database(settings.mongodb_database)
    await client.close()


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    """A real SMTP server on a free loopback port."""
    yield from smtp_inbox()


def with_jobs(settings: Settings, inbox: Inbox, **changes: Any) -> Settings:
    """`settings` for a server that also runs jobs (JOBS_IN_PROCESS), mailing the test's SMTP server,
    with fast retries. A test module that needs them overrides `settings` with this."""
    changes = {
        "jobs_in_process": True,
        "smtp_url": inbox.url,
        "job_retry_delay_seconds": 0.2,
        "shutdown_timeout_seconds": 3,  # within LifespanManager's 5 s
        **changes,
    }
    return settings.model_copy(update=changes)


@pytest.fixture
async def anonymous(app: Any) -> AsyncIterator[GraphQLClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield GraphQLClient(http)


async def sign_up(anonymous: GraphQLClient, name: str = "User") -> GraphQLClient:
    """Registers a new user with a unique email; returns a client signed in as them."""
    email = f"{name.lower()}{next(_emails)}@example.com"
    data = await anonymous.execute(REGISTER, {"input": {"email": email, "name": name, "password": PASSWORD}})
    payload = data["register"]
    assert payload["userErrors"] == []
    client = anonymous.as_user(payload["accessToken"])
    client.user = payload["user"]
    client.refresh_token = payload["refreshToken"]
    return client


async def make_admin(settings: Settings, client: GraphQLClient) -> None:
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_uri)
    await mongo[settings.mongodb_database].users.update_one(
        {"email": client.user["email"]}, {"$set": {"role": "ADMIN"}}
    )
    await mongo.close()


CREATE_PROJECT = """
mutation($input: CreateProjectInput!) {
  createProject(input: $input) { project { id name } userErrors { code field message } }
}
"""
ADD_MEMBER = """
mutation($input: AddProjectMemberInput!) {
  addProjectMember(input: $input) { project { id members { user { id } role } } userErrors { code field message } }
}
"""
CREATE_TASK = """
mutation($input: CreateTaskInput!) {
  createTask(input: $input) {
    task { id title description status priority dueAt tags version completedAt assignee { id } createdBy { id } }
    userErrors { code field message }
  }
}
"""

DELETE_TASK = """
mutation($input: DeleteTaskInput!) {
  deleteTask(input: $input) { deletedTaskId userErrors { code field message } }
}
"""
DELETE_PROJECT = """
mutation($input: DeleteProjectInput!) {
  deleteProject(input: $input) { deletedProjectId userErrors { code field message } }
}
"""
UPDATE_PROJECT_MEMBER = """
mutation($input: UpdateProjectMemberInput!) {
  updateProjectMember(input: $input) { project { id members { user { id } role } } userErrors { code field message } }
}
"""
REMOVE_MEMBER = """
mutation($p: ID!, $u: ID!) { removeProjectMember(input: {projectId: $p, userId: $u}) { userErrors { code } } }
"""
MY_TASKS = """
query {
  myTasks { totalCount edges { node { id } } }
}
"""


async def create_project(client: GraphQLClient, name: str = "Project") -> str:
    payload = (await client.execute(CREATE_PROJECT, {"input": {"name": name}}))["createProject"]
    assert payload["userErrors"] == []
    return payload["project"]["id"]


async def add_member(owner: GraphQLClient, project_id: str, member: GraphQLClient, role: str) -> None:
    payload = (
        await owner.execute(
            ADD_MEMBER, {"input": {"projectId": project_id, "email": member.user["email"], "role": role}}
        )
    )["addProjectMember"]
    assert payload["userErrors"] == []


async def create_task(client: GraphQLClient, project_id: str, **fields: Any) -> dict[str, Any]:
    payload = (await client.execute(CREATE_TASK, {"input": {"projectId": project_id, "title": "Task", **fields}}))[
        "createTask"
    ]
    assert payload["userErrors"] == []
    return payload["task"]


@pytest.fixture
async def owner_client(anonymous: GraphQLClient) -> GraphQLClient:
    return await sign_up(anonymous, "Owner")


@pytest.fixture
async def project_id(owner_client: GraphQLClient) -> str:
    return await create_project(owner_client)


@pytest.fixture
async def editor_client(anonymous: GraphQLClient, owner_client: GraphQLClient, project_id: str) -> GraphQLClient:
    client = await sign_up(anonymous, "Editor")
    await add_member(owner_client, project_id, client, "EDITOR")
    return client


@pytest.fixture
async def viewer_client(anonymous: GraphQLClient, owner_client: GraphQLClient, project_id: str) -> GraphQLClient:
    client = await sign_up(anonymous, "Viewer")
    await add_member(owner_client, project_id, client, "VIEWER")
    return client


@pytest.fixture
async def outsider_client(anonymous: GraphQLClient) -> GraphQLClient:
    return await sign_up(anonymous, "Outsider")


# The tests' Redis is the embedded Valkey, started as `taskql serve` starts it. With
# TASKQL_TEST_REDIS_SERVER=redis-server (a command or a path) they run against that server instead:
# `make test` does so for the Redis-specific tests where Redis is installed (production runs Redis).
REDIS_SERVER = os.environ.get("TASKQL_TEST_REDIS_SERVER")
_redis_databases = itertools.count(1)


class RedisServer:
    """A Redis-protocol server of the tests' own, on a free port, with a password."""

    def __init__(self, data_dir: Path, **options: str) -> None:
        binary = None
        if REDIS_SERVER:
            found = shutil.which(REDIS_SERVER)
            assert found, f"TASKQL_TEST_REDIS_SERVER={REDIS_SERVER} is not a command"
            binary = Path(found)
        self._server, self.url = valkey_server(data_dir, binary=binary, options=options)

    def new_database(self) -> str:
        """The URL of a database no one has used yet (the shared server has 10,000)."""
        return f"{self.url.rpartition('/')[0]}/{next(_redis_databases)}"

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def pause(self) -> None:
        """Hangs it (SIGSTOP): connections stay open and nothing is answered, as with a stuck server."""
        assert self._server.pid is not None
        os.kill(self._server.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._server.pid is not None
        os.kill(self._server.pid, signal.SIGCONT)


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), databases="10000")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(shared_redis: RedisServer) -> str:
    """A database of the shared server for this test alone: no counters or streams of other tests."""
    return shared_redis.new_database()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """One to stop, pause and restart. Without persistence: a restart loses what it held, the worst case."""
    server = RedisServer(tmp_path / "private-redis", appendonly="no")
    server.start()
    yield server
    server.stop()


class Instances:
    """Several app instances over one database and one Redis: a load-balanced fleet."""

    def __init__(self) -> None:
        self._stack = AsyncExitStack()
        self.apps: list[Any] = []

    async def start(self, settings: Settings, count: int) -> list[GraphQLClient]:
        clients = []
        for _ in range(count):
            app = build_app(settings)
            await self._stack.enter_async_context(LifespanManager(app))
            self.apps.append(app)
            # The app itself, not the manager's wrapper: that gives every request one shared `state`
            # dict, where a server gives each its own (request ids, costs and operations live there).
            http = await self._stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
            )
            clients.append(GraphQLClient(http))
        return clients

    def cache(self, index: int) -> EntityCache:
        return self.apps[index].state.runtime.cache

    async def close(self) -> None:
        await self._stack.aclose()


@pytest.fixture
async def instances() -> AsyncIterator[Instances]:
    fleet = Instances()
    yield fleet
    await fleet.close()


SCHEMA = build_schema()


async def subscribe(
    app: Any, client: GraphQLClient, document: str, schema: Schema = SCHEMA, **variables: Any
) -> AsyncIterator[Any]:
    """A subscription run in process, as a WebSocket connection of `client` would run it."""
    connection = HTTPConnection({"type": "websocket", "headers": [], "client": ("127.0.0.1", 50000)})
    deps = await authenticated_deps(app.state.runtime, connection, f"Bearer {client.token}")
    context = Context(request=None, response=None, request_id="test", deps=deps)  # type: ignore[arg-type]
    return await schema.subscribe(document, variables, context_value=context)


async def next_within(subscription: Subscription, seconds: float) -> Entry | None:
    """The subscription's next entry, or None if none arrives within `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            return await subscription.next()
    except TimeoutError:
        return None
