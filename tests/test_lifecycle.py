"""Running it: readiness, graceful shutdown of a real server process, and `taskql check-config`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from taskql.embedded.child import free_port
from taskql.server import build_app
from taskql.settings import Settings
from tests.conftest import PASSWORD, TEST_SECRET, RedisServer
from tests.live import LiveServer, Subscriber, User
from tests.test_subscriptions import close_code, create_project, until_live

LOGIN = "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { accessToken } }"


async def test_readyz_names_redis_when_it_is_unreachable(settings: Settings, private_redis: RedisServer) -> None:
    app = build_app(settings.model_copy(update={"redis_url": private_redis.url}))
    transport = httpx.ASGITransport(app=app)
    async with LifespanManager(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        ready = await http.get("/readyz")
        private_redis.stop()
        unready = await http.get("/readyz")
        alive = await http.get("/healthz")

    assert (ready.status_code, ready.json()) == (200, {"status": "ok"})
    assert (unready.status_code, unready.json()) == (503, {"status": "unavailable", "failing": ["redis"]})
    assert alive.status_code == 200  # alive, only not ready: no restart needed


async def test_sigterm_finishes_requests_closes_websockets_for_a_reconnect_and_exits(
    mongodb_uri: str, redis_url: str, tmp_path: Path
) -> None:
    server = LiveServer(
        mongodb_uri=mongodb_uri,
        redis_url=redis_url,
        database=f"test_{uuid.uuid4().hex[:12]}",
        data_dir=tmp_path,
    )
    server.start()
    try:
        owner = await User.register(server, "Owner")
        project_id = await create_project(owner)
        async with Subscriber(server, owner.token, project_id) as subscriber, httpx.AsyncClient() as http:
            await until_live(owner, project_id, subscriber)
            # Logins take a while (argon2): several are in flight when the signal arrives.
            login = {"e": owner.user["email"], "p": PASSWORD}
            in_flight = [
                asyncio.create_task(
                    http.post(
                        f"{server.base_url}/graphql",
                        json={"query": LOGIN, "variables": login},
                    )
                )
                for _ in range(4)
            ]
            await asyncio.sleep(0.05)
            server.terminate()
            answers = await asyncio.gather(*in_flight)
            ended = await subscriber.ended(timeout=15)
            exit_code = await asyncio.to_thread(server.wait, 30)
    finally:
        server.stop()

    assert [answer.status_code for answer in answers] == [200] * 4
    assert close_code(ended) == 1012  # "service restart": clients reconnect and resume with `after`
    assert exit_code == 0  # a graceful stop, the embedded services (none here) stopped too


def _check_config(**environment: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("JWT_SECRET", "TASKQL_ENV")}
    return subprocess.run(
        [sys.executable, "-m", "taskql", "check-config"],
        env={**env, **environment},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent,  # no `.env` from the working tree
    )


def test_check_config_prints_the_settings_without_secrets() -> None:
    result = _check_config(
        JWT_SECRET=TEST_SECRET, REDIS_URL=f"redis://user:hunter2@127.0.0.1:{free_port()}/0", WORKERS="3"
    )
    assert result.returncode == 0, result.stderr
    assert "WORKERS=3" in result.stdout
    assert "JWT_SECRET=(hidden)" in result.stdout
    assert "REDIS_URL=redis://user:***@" in result.stdout
    assert TEST_SECRET not in result.stdout and "hunter2" not in result.stdout


def test_check_config_explains_what_is_wrong_without_echoing_it() -> None:
    weak = _check_config(TASKQL_ENV="production", JWT_SECRET="short-but-secret")
    malformed = _check_config(JWT_SECRET=TEST_SECRET, WORKERS="none")

    assert weak.returncode == malformed.returncode == 1
    assert "JWT_SECRET" in weak.stderr and "short-but-secret" not in weak.stderr
    assert "workers" in malformed.stderr and "none" not in malformed.stderr
