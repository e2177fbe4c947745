"""TaskQL running as a real server process (uvicorn on a free port), and clients for it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from gql import Client, GraphQLRequest, gql
from gql.transport.websockets import WebsocketsTransport
from graphql import DocumentNode

from taskql.embedded.child import free_port
from taskql.settings import UNLIMITED_RATE
from tests.conftest import PASSWORD, TEST_SECRET

TASK_EVENTS = gql(
    """
    subscription($projectId: ID!, $after: String) {
      taskEvents(projectId: $projectId, after: $after) {
        cursor kind taskId projectId changedFields at task { id title version } actor { name }
      }
    }
    """
)


def _environment(
    mongodb_uri: str | None, redis_url: str | None, database: str, data_dir: Path, settings: dict[str, Any]
) -> dict[str, str]:
    urls = {"MONGODB_URI": mongodb_uri, "REDIS_URL": redis_url}
    return {
        **{key: value for key, value in os.environ.items() if key not in urls},
        **{key: url for key, url in urls.items() if url is not None},
        "TASKQL_ENV": "test",
        "MONGODB_DATABASE": database,
        "JWT_SECRET": TEST_SECRET,
        "DATA_DIR": str(data_dir),
        "JOBS_IN_PROCESS": "false",  # a test that runs jobs says so
        **{key.upper(): str(value) for key, value in UNLIMITED_RATE.items()},
        **{key.upper(): str(value) for key, value in settings.items()},
    }


class LiveServer:
    """`taskql serve`; with a URL None it starts that embedded server itself, under data_dir."""

    def __init__(
        self, *, mongodb_uri: str | None, redis_url: str | None, database: str, data_dir: Path, **settings: Any
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/graphql"
        self._env = _environment(mongodb_uri, redis_url, database, data_dir, settings)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "taskql", "serve", "--port", str(self.port)], env=self._env
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self._process.poll() is not None:
                raise RuntimeError("the server exited during startup")
            time.sleep(0.1)
        raise RuntimeError("the server did not become ready")

    def terminate(self) -> None:
        """SIGTERM, as an orchestrator stops a replica; wait() for the exit."""
        assert self._process is not None
        self._process.terminate()

    def wait(self, timeout: float) -> int:
        assert self._process is not None
        return self._process.wait(timeout)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(15)
            self._process = None


class LiveWorker:
    """`taskql worker`, on the database and Redis of a LiveServer."""

    def __init__(self, *, mongodb_uri: str, redis_url: str, database: str, data_dir: Path, **settings: Any) -> None:
        self.metrics_port = free_port()
        worker_settings = {"metrics_port": self.metrics_port, **settings}
        self._env = _environment(mongodb_uri, redis_url, database, data_dir, worker_settings)
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Returns once the worker takes jobs: it sets its queue gauge when it first reports to the queue."""
        self._process = subprocess.Popen(
            [sys.executable, "-m", "taskql", "worker", "--concurrency", "4"], env=self._env
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if "taskql_job_queue_jobs{" in httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics").text:
                    return
            if self._process.poll() is not None:
                raise RuntimeError("the worker exited during startup")
            time.sleep(0.1)
        raise RuntimeError("the worker did not start")

    def signal(self, signum: int) -> None:
        assert self._process is not None
        self._process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self._process is not None
        return self._process.wait(timeout)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(15)


class User:
    """A registered user talking to a live server over HTTP."""

    def __init__(self, server: LiveServer, token: str, user: dict[str, Any]) -> None:
        self.server = server
        self.token = token
        self.user = user

    @classmethod
    async def register(cls, server: LiveServer, name: str) -> User:
        query = "mutation($i: RegisterInput!) { register(input: $i) { accessToken user { id email name } } }"
        email = f"{name.lower()}-{time.monotonic_ns()}@example.com"
        data = await post(server, query, {"i": {"email": email, "name": name, "password": PASSWORD}})
        return cls(server, data["register"]["accessToken"], data["register"]["user"])

    def on(self, server: LiveServer) -> User:
        return User(server, self.token, self.user)

    async def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        return await post(self.server, query, variables, token=self.token)


async def post(server: LiveServer, query: str, variables: dict[str, Any] | None = None, token: str = "") -> Any:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        body = (
            await http.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)
        ).json()
    assert "errors" not in body, body["errors"]
    return body["data"]


class Subscriber:
    """One subscription (by default to a project's taskEvents), collecting events in the background."""

    def __init__(
        self,
        server: LiveServer,
        token: str,
        project_id: str = "",
        *,
        after: str | None = None,
        document: DocumentNode = TASK_EVENTS,
        protocol: str = "graphql-transport-ws",
        init_payload: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        transport = WebsocketsTransport(
            url=server.ws_url,
            init_payload={"authorization": f"Bearer {token}"} if init_payload is None else init_payload,
            subprotocols=[protocol],
            headers=headers,
        )
        self._client = Client(transport=transport)
        variables = {"projectId": project_id, "after": after} if document is TASK_EVENTS else {"after": after}
        self._request = GraphQLRequest(document, variable_values=variables)
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._consume())
        return self

    async def _consume(self) -> None:
        try:
            session = await self._client.connect_async()
            async for result in session.subscribe(self._request):
                [event] = result.values()  # the subscription's one root field
                self.events.append(event)
                self._arrived.set()
        except Exception as exc:  # the test inspects how the subscription ended
            self.error = exc
        self._arrived.set()

    async def wait_for(self, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.events) < count and self.error is None:
                self._arrived.clear()
                await self._arrived.wait()
        return self.events

    async def ended(self, timeout: float) -> BaseException | None:
        assert self._task is not None
        await asyncio.wait_for(asyncio.shield(self._task), timeout)
        return self.error

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
        with contextlib.suppress(Exception):  # a connection the server refused has nothing to close
            await self._client.close_async()
