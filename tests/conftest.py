"""Real services: an in-process SecantusDB server (MongoDB wire protocol) and the app over ASGI."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
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
from taskql.events.broker import Subscription
from taskql.events.store import Entry
from taskql.schema.root import build_schema
from taskql.server import build_app
from taskql.settings import UNLIMITED_RATE, Settings

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
def settings(mongodb_uri: str, tmp_path: Path) -> Settings:
    """A fresh database per test."""
    return Settings(
        _env_file=None,
        taskql_env="test",
        mongodb_uri=mongodb_uri,
        mongodb_database=f"test_{uuid.uuid4().hex[:12]}",
        jwt_secret=TEST_SECRET,
        data_dir=tmp_path,
        **UNLIMITED_RATE,  # tests share 127.0.0.1 and some share one Redis: only test_rate_limits keeps budgets
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A redis-server of the test's own, to stop, pause and restart without touching the shared one."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = shutil.which("redis-server")
        assert command, "redis-server must be installed (.ci/run installs it)"
        self._process = subprocess.Popen(
            [command, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


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
