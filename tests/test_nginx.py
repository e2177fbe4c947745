"""deploy/: nginx.conf run by a real nginx in front of two real TaskQL processes, and the other files
checked as far as this machine allows (no Docker engine, no cluster): parsed, schema-validated, and
their cross-file invariants asserted."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dockerfile
import httpx
import kubernetes_validate
import pytest
import yaml

from taskql.embedded.child import free_port
from taskql.http.client_ip import parse_networks
from taskql.settings import PRODUCTION_METRICS_PORT, Settings
from tests.conftest import TEST_SECRET, RedisServer
from tests.live import LiveServer, Subscriber, User
from tests.test_subscriptions import close_code, create_project, until_live

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
NGINX_CONF = DEPLOY / "nginx.conf"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")  # the oldest release the manifests target, and the newest schema
CREATE_TASK = "mutation($p: ID!, $t: String!) { createTask(input: {projectId: $p, title: $t}) { task { id } } }"
TYPENAME = "query { __typename }"


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    assert found, "nginx must be installed (Debian package nginx; .ci/run installs it)"
    return found


def render_nginx_conf(*, listen: str, upstreams: list[str], temp_dir: Path) -> str:
    """deploy/nginx.conf with only what a loopback run needs changed: the upstream's servers, the
    listen address, and temp paths of its own (the compiled-in ones may not be writable)."""
    text = NGINX_CONF.read_text()

    def once(pattern: str, replace: Any, text: str) -> str:
        rendered, count = re.subn(pattern, replace, text, count=0, flags=re.MULTILINE)
        assert count == 1, f"deploy/nginx.conf should have exactly one line matching {pattern!r}"
        return rendered

    text = once(
        r"^(\s*)server app:8000 resolve (.*);$",
        lambda m: "\n".join(f"{m[1]}server {address} {m[2]};" for address in upstreams),
        text,
    )
    text = once(r"^(\s*)listen 80;$", lambda m: f"{m[1]}listen {listen};", text)
    temp_paths = "".join(
        f"    {kind}_temp_path {temp_dir / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return once(r"^http \{\n", lambda m: m[0] + temp_paths, text)


class Nginx:
    """deploy/nginx.conf served by a real nginx on a loopback port, in front of the given instances."""

    def __init__(self, directory: Path, upstreams: list[LiveServer]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/graphql"
        self.access_log = directory / "access.log"
        self.error_log = directory / "error.log"
        self.conf = directory / "nginx.conf"
        self.conf.write_text(
            render_nginx_conf(
                listen=f"127.0.0.1:{self.port}",
                upstreams=[f"127.0.0.1:{server.port}" for server in upstreams],
                temp_dir=directory,
            )
        )
        self._process: subprocess.Popen[bytes] | None = None

    def command(self, *options: str) -> list[str]:
        # Process-wide settings that deploy/nginx.conf leaves to the nginx build (pid file, user).
        directives = f"daemon off; pid {self.directory / 'nginx.pid'};"
        if os.geteuid() == 0:
            directives += " user root;"  # workers may then use the test's private temp directories
        return [
            nginx_binary(),
            "-p",
            f"{self.directory}/",
            "-c",
            str(self.conf),
            "-e",
            "stderr",
            "-g",
            directives,
            *options,
        ]

    def check(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)

    def start(self) -> None:
        # The config logs to /dev/stdout and /dev/stderr, as in a container: here, files to read.
        with self.access_log.open("wb") as stdout, self.error_log.open("wb") as stderr:
            self._process = subprocess.Popen(self.command(), stdout=stdout, stderr=stderr)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.error_log.read_text()}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"nginx did not answer: {self.error_log.read_text()}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(15)
            self._process = None

    def log(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line.startswith("{")]

    async def log_line(self, request_id: str, timeout: float = 5) -> dict[str, Any]:
        """The access log line of a request (written when it ends: a WebSocket's when it closes)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self.log() if line["request_id"] == request_id]
            if lines:
                return lines[0]
            assert time.monotonic() < deadline, f"no access log line for {request_id}"
            await asyncio.sleep(0.05)


class Stack:
    """Two TaskQL processes sharing MongoDB and Redis, behind nginx."""

    def __init__(self, mongodb_uri: str, redis_url: str, directory: Path) -> None:
        database = f"test_{uuid.uuid4().hex[:12]}"
        self.servers = [
            LiveServer(mongodb_uri=mongodb_uri, redis_url=redis_url, database=database, data_dir=directory)
            for _ in range(2)
        ]
        self.nginx = Nginx(directory / "nginx", self.servers)

    def start(self) -> None:
        for server in self.servers:
            server.start()
        self.nginx.start()

    def stop(self) -> None:
        self.nginx.stop()
        for server in self.servers:
            server.stop()

    def address(self, server: LiveServer) -> str:
        return f"127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def stack(mongodb_uri: str, shared_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(mongodb_uri, shared_redis.new_database(), tmp_path_factory.mktemp("stack"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


async def post(
    target: Nginx | LiveServer, query: str, variables: dict[str, Any] | None = None, **headers: str
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=target.base_url, timeout=30) as http:
        return await http.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)


async def create_task_as(owner: User, project_id: str, title: str, request_id: str) -> None:
    headers = {"authorization": f"Bearer {owner.token}", "x-request-id": request_id}
    response = await post(owner.server, CREATE_TASK, {"p": project_id, "t": title}, **headers)
    assert response.status_code == 200 and "errors" not in response.json(), response.text


# --- nginx -----------------------------------------------------------------------------------------


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    nginx = Nginx(tmp_path, [])
    nginx.conf.write_text(
        render_nginx_conf(listen=f"127.0.0.1:{nginx.port}", upstreams=["127.0.0.1:1", "127.0.0.1:2"], temp_dir=tmp_path)
    )

    result = nginx.check()

    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr


async def test_subscriptions_and_mutations_through_nginx_meet_on_different_instances_by_least_connections(
    stack: Stack,
) -> None:
    nginx, run = stack.nginx, uuid.uuid4().hex[:8]
    owner = await User.register(nginx, "Owner")
    project_id = await create_project(owner)

    upgrade_id = f"subscription-{run}"
    async with Subscriber(nginx, owner.token, project_id, headers={"x-request-id": upgrade_id}) as subscriber:
        seen = await until_live(owner, project_id, subscriber)
        # The WebSocket is one active connection on its instance: least_conn sends every other
        # request to the other instance, so these events cross instances through Redis.
        titles = [f"through nginx {n}" for n in range(4)]
        for n, title in enumerate(titles):
            await create_task_as(owner, project_id, title, request_id=f"during-{run}-{n}")
        events = await subscriber.wait_for(seen + 4)
        assert [event["task"]["title"] for event in events[seen:]] == titles

    addresses = {stack.address(server) for server in stack.servers}
    upgrade = await nginx.log_line(upgrade_id)
    assert (upgrade["uri"], upgrade["status"], upgrade["websocket"]) == ("/graphql", 101, "websocket")
    assert upgrade["upstream"] in addresses
    during = [await nginx.log_line(f"during-{run}-{n}") for n in range(4)]
    assert {line["upstream"] for line in during} == addresses - {upgrade["upstream"]}

    # With no connection open, requests take turns: both instances serve.
    for n in range(4):
        await create_task_as(owner, project_id, f"after {n}", request_id=f"after-{run}-{n}")
    after = [await nginx.log_line(f"after-{run}-{n}") for n in range(4)]
    assert {line["upstream"] for line in after} == addresses
    assert {line["status"] for line in during + after} == {200}


async def test_only_the_public_routes_are_reachable_through_nginx(stack: Stack) -> None:
    server = stack.servers[0]
    async with (
        httpx.AsyncClient(base_url=stack.nginx.base_url) as public,
        httpx.AsyncClient(base_url=server.base_url) as internal,
    ):
        direct_metrics = await internal.get("/metrics")
        direct_ready = await internal.get("/readyz")
        base = stack.nginx.base_url  # absolute URLs: httpx would read "//metrics" as a host
        paths = ("/metrics", "/metrics?format=text", "//metrics", "/%6detrics")
        metrics = [await public.get(f"{base}{path}") for path in paths]
        ready = await public.get("/readyz")
        other = await public.get(f"{base}/metrics/")
        health = await public.get("/healthz")
        graphql = await public.post("/graphql", json={"query": TYPENAME})
        download = f"/exports/{'0' * 24}/download?token=1.0"
        exported = await public.get(download)  # TaskQL's own answer to a bad link
        posted = await public.post(download)
        not_an_export = await public.get("/exports/abc/download")

    # What nginx refuses is served by the instance itself, to Prometheus and the orchestrator.
    assert direct_metrics.status_code == 200 and "# TYPE" in direct_metrics.text
    assert direct_ready.status_code == 200
    assert [response.status_code for response in metrics] == [403] * 4
    assert all("# TYPE" not in response.text for response in metrics)
    assert ready.status_code == 404 and other.status_code == 404
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert graphql.json() == {"data": {"__typename": "Query"}}
    assert graphql.headers["server"] == "nginx"  # server_tokens off: no version
    assert exported.status_code == 403 and exported.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert posted.status_code == 403 and not_an_export.status_code == 404


async def test_nginx_passes_request_ids_and_keeps_query_strings_and_large_bodies_out(stack: Stack) -> None:
    nginx, run = stack.nginx, uuid.uuid4().hex[:8]
    sent_id = f"client-{run}"
    with_id = await post(nginx, TYPENAME, **{"x-request-id": sent_id})
    without_id = await post(nginx, TYPENAME)
    async with httpx.AsyncClient(base_url=nginx.base_url) as http:
        secret_query = await http.get(
            "/graphql", params={"query": f"query Secret{run} {{ __typename }}"}, headers={"x-taskql-csrf": "1"}
        )
        over_app_limit = await http.post(
            "/graphql", content=b'{"query": "' + b" " * 110_000 + b'"}', headers={"content-type": "application/json"}
        )
        over_nginx_limit = await http.post(
            "/graphql", content=b'{"query": "' + b" " * 200_000 + b'"}', headers={"content-type": "application/json"}
        )

    # The client's id, or nginx's own, is the one TaskQL answers with and nginx logs: one id per request.
    assert with_id.headers["x-request-id"] == sent_id
    assert (await nginx.log_line(sent_id))["upstream"]
    generated = without_id.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert (await nginx.log_line(generated))["status"] == 200
    # A GET carries its variables in the query string: the access log keeps only the path.
    assert secret_query.json() == {"data": {"__typename": "Query"}}
    assert (await nginx.log_line(secret_query.headers["x-request-id"]))["uri"] == "/graphql"
    assert f"Secret{run}" not in nginx.access_log.read_text()
    # Just over MAX_BODY_BYTES: TaskQL's own JSON answer. Far over: nginx stops it before any instance.
    assert over_app_limit.status_code == 413
    assert over_app_limit.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    assert over_nginx_limit.status_code == 413 and "PAYLOAD_TOO_LARGE" not in over_nginx_limit.text


async def test_when_an_instance_stops_nginx_fails_over_and_subscribers_resume_on_the_other(
    mongodb_uri: str, redis_url: str, tmp_path: Path
) -> None:
    stack = Stack(mongodb_uri, redis_url, tmp_path)
    stack.start()
    try:
        nginx, run = stack.nginx, uuid.uuid4().hex[:8]
        owner = await User.register(nginx, "Owner")
        project_id = await create_project(owner)
        async with Subscriber(nginx, owner.token, project_id) as subscriber:
            await until_live(owner, project_id, subscriber)
            cursor = subscriber.events[-1]["cursor"]  # the tasks written from here on must reach a resumed subscriber
            # The subscription's instance is the one least_conn avoids while it is open.
            await create_task_as(owner, project_id, "locate", request_id=f"locate-{run}")
            other = (await nginx.log_line(f"locate-{run}"))["upstream"]
            [holding] = [server for server in stack.servers if stack.address(server) != other]
            holding.terminate()
            ended = await subscriber.ended(timeout=15)
            await asyncio.to_thread(holding.wait, 30)

        # nginx relays the instance's close code: "service restart", reconnect and resume.
        assert close_code(ended) == 1012
        # Mutations keep working: a connection refused by the stopped instance is retried on the
        # other one (the POST never reached an instance, so it cannot run twice).
        titles = [f"after failover {n}" for n in range(6)]
        for n, title in enumerate(titles):
            await create_task_as(owner, project_id, title, request_id=f"failover-{run}-{n}")
        lines = [await nginx.log_line(f"failover-{run}-{n}") for n in range(6)]
        assert {line["status"] for line in lines} == {200}
        assert {line["upstream"].split(", ")[-1] for line in lines} == {other}
        retried = [line for line in lines if ", " in line["upstream"]]
        assert retried and {line["upstream_status"] for line in retried} == {"502, 200"}

        async with Subscriber(nginx, owner.token, project_id, after=cursor) as resumed:
            events = await resumed.wait_for(1 + len(titles))
        assert [event["task"]["title"] for event in events] == ["locate", *titles]
    finally:
        stack.stop()


# --- Dockerfile ------------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[dockerfile.Command]]:
    stages: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(DEPLOY / "Dockerfile")):
        if command.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(command)
    return stages


def image_uid() -> int:
    [user] = [command for command in dockerfile_stages()[-1] if command.cmd == "USER"]
    return int(user.value[0].split(":")[0])


def test_the_dockerfile_builds_from_the_lock_and_runs_unprivileged() -> None:
    build, final = dockerfile_stages()
    final_by_cmd = {command.cmd: command for command in final}

    assert final[0].value[0] == "${PYTHON_IMAGE}" and "AS" not in final[0].value
    installs = [command.value[0] for command in build if command.cmd == "RUN" and "pip install" in command.value[0]]
    assert installs and all("-c constraints.txt" in install for install in installs)
    assert not any("embedded" in install or "[" in install for install in installs)  # no extras
    assert image_uid() >= 10000
    assert final_by_cmd["COPY"].flags == ("--from=build",)
    assert "8000" in final_by_cmd["EXPOSE"].value
    assert final_by_cmd["STOPSIGNAL"].value == ("SIGTERM",)
    assert final_by_cmd["CMD"].json and final_by_cmd["CMD"].value[:2] == ("taskql", "serve")
    # The context is the repository root: what the build copies must not be .dockerignore'd.
    ignored = (DEPLOY.parent / ".dockerignore").read_text().split()
    copied = {source for command in build if command.cmd == "COPY" for source in command.value[:-1]}
    assert copied == {"pyproject.toml", "constraints.txt", "README.md", "taskql"}
    assert all(f"!{source}" in ignored for source in copied)


def test_the_image_healthcheck_command_asks_healthz(stack: Stack) -> None:
    [healthcheck] = [command for command in dockerfile_stages()[-1] if command.cmd == "HEALTHCHECK"]
    assert healthcheck.json and healthcheck.value[:2] == ("CMD", "python")
    probe = [sys.executable, *healthcheck.value[2:]]

    def run(port: int) -> int:
        return subprocess.run(probe, env={**os.environ, "PORT": str(port)}, capture_output=True, timeout=30).returncode

    assert run(stack.servers[0].port) == 0
    assert run(free_port()) != 0


# --- compose.yaml ----------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def settings_from(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """TaskQL's settings as an instance given this environment would read them (no .env file)."""
    for name in list(os.environ):
        if name.lower() in Settings.model_fields:
            monkeypatch.delenv(name)
    known = {name for name in environment if name.lower() in Settings.model_fields}
    unknown = set(environment) - known - {"POD_NAME", "POD_NAMESPACE"}
    assert all(name.startswith("OTEL_") for name in unknown), f"not TaskQL settings: {unknown}"
    for name in known:
        monkeypatch.setenv(name, environment[name])
    return Settings(_env_file=None)


def test_compose_matches_the_compose_specification() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(DEPLOY / "compose.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_three_instances_on_a_replica_set_behind_nginx(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    app, nginx = services["app"], services["nginx"]
    environment = dict(app["environment"])

    assert app["deploy"]["replicas"] == 3
    assert (DEPLOY / app["build"]["context"] / app["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert "ports" not in app  # reachable through nginx only
    assert environment["JWT_SECRET"].startswith("${JWT_SECRET:?")  # no default secret
    settings = settings_from(interpolated(environment, JWT_SECRET=TEST_SECRET), monkeypatch)
    assert settings.is_production and settings.mongodb_write_concern == "majority"
    # The replica set: three members started with --replSet, initiated once, before the app starts.
    members = [name for name in services if re.fullmatch(r"mongo\d", name)]
    assert len(members) == 3
    replica_set = re.search(r"replicaSet=(\w+)", settings.mongodb_uri or "")
    assert replica_set
    for name in members:
        command = services[name]["command"]
        assert command[command.index("--replSet") + 1] == replica_set[1]
        assert f"{name}:27017" in settings.mongodb_uri and f'"{name}:27017"' in services["mongo-init"]["command"][-1]
    assert app["depends_on"]["mongo-init"]["condition"] == "service_completed_successfully"
    assert app["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "--appendonly" in services["redis"]["command"]
    # nginx: this repository's config, and the only published port of the API.
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert any(port.endswith(":80") for port in nginx["ports"])
    # Clients' addresses: only the compose network's X-Forwarded-For is believed.
    [subnet] = [config["subnet"] for config in compose()["networks"]["backend"]["ipam"]["config"]]
    assert parse_networks(settings.trusted_proxies) == (ipaddress.ip_network(subnet),)
    # Graceful shutdown fits in the time Docker gives before SIGKILL.
    assert _seconds(app["stop_grace_period"]) > settings.shutdown_timeout_seconds
    # Traces go to a collector of this file, which sends them to Jaeger.
    assert settings.tracing_exporter.startswith("otlp")
    collector_host = re.match(r"https?://([\w-]+):", environment["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert collector_host and collector_host[1] in services
    collector = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    assert collector["exporters"]["otlp/jaeger"]["endpoint"].split(":")[0] in services
    assert collector["service"]["pipelines"]["traces"]["exporters"] == ["otlp/jaeger"]
    # Every file mounted from the repository exists.
    for service in services.values():
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert (DEPLOY / volume.split(":")[0]).is_file(), volume


def interpolated(environment: dict[str, str], **given: str) -> dict[str, str]:
    """The values as Compose passes them when `given` are the only variables set (in the environment
    or deploy/.env): ${NAME:-default} and ${NAME:?error} resolved."""

    def value(match: re.Match[str]) -> str:
        name, kind, rest = match[1], match[2], match[3]
        if given.get(name):
            return given[name]
        assert kind == ":-", f"compose.yaml needs {name} set: {rest}"
        return rest

    resolved = {name: re.sub(r"\$\{(\w+)(:-|:\?)([^}]*)\}", value, text) for name, text in environment.items()}
    assert not any("$" in text for text in resolved.values()), resolved
    return resolved


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match[1]) * (60 if match[2] == "m" else 1)


def test_compose_runs_job_workers_beside_the_api_and_lets_them_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    app, worker = services["app"], services["worker"]
    app_settings = settings_from(interpolated(app["environment"], JWT_SECRET=TEST_SECRET), monkeypatch)
    worker_environment = interpolated(worker["environment"], JWT_SECRET=TEST_SECRET)
    settings = settings_from(worker_environment, monkeypatch)

    # The API replicas only enqueue: the worker service runs the jobs.
    assert app_settings.jobs_in_process is False and not app_settings.runs_jobs_in_process
    # The app's image, the worker command, and the same database, Redis, queue and secret.
    assert worker["command"] == ["taskql", "worker"]
    assert worker["build"] == app["build"] and worker["image"] == app["image"]
    assert worker["deploy"]["replicas"] >= 1 and worker["deploy"]["resources"]["limits"]["memory"]
    for name in ("JWT_SECRET", "MONGODB_URI", "MONGODB_DATABASE", "REDIS_URL", "SHUTDOWN_TIMEOUT_SECONDS"):
        assert worker["environment"][name] == app["environment"][name], name
    assert settings.is_production and settings.jobs_queue == app_settings.jobs_queue
    assert worker["depends_on"] == app["depends_on"]
    assert "ports" not in worker  # nothing to reach from outside: it takes its work from Redis
    # SIGTERM: running jobs get SHUTDOWN_TIMEOUT_SECONDS before they go back to the queue; Docker's
    # SIGKILL comes later than that.
    assert _seconds(worker["stop_grace_period"]) > settings.shutdown_timeout_seconds
    # The image's HEALTHCHECK asks the API's /healthz: the worker replaces it with its metrics port.
    test = worker["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"] and "/metrics" in test[3] and "/healthz" not in test[3]
    assert worker["read_only"] is True and worker["cap_drop"] == ["ALL"]
    # Email: SMTP in deploy/.env; without it, .eml files in a directory a read-only container can write.
    assert settings.smtp_url is None and str(settings.data_dir).startswith(tuple(worker["tmpfs"]))
    smtp = settings_from(
        interpolated(worker["environment"], JWT_SECRET=TEST_SECRET, SMTP_URL="smtps://u:p@mail.example.com:465"),
        monkeypatch,
    )
    assert smtp.smtp_url == "smtps://u:p@mail.example.com:465"
    assert settings.public_url.startswith("http") and "@" in settings.mail_from


def test_the_compose_worker_healthcheck_and_the_pod_probes_ask_a_real_worker(
    mongodb_uri: str, shared_redis: RedisServer, tmp_path: Path
) -> None:
    """`taskql worker` as compose.yaml and the Deployment start it: its metrics port answers their
    probes, and SIGTERM ends it well within the grace period."""
    worker = compose()["services"]["worker"]
    pod = manifests()["Deployment", WORKER]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == worker["command"] == ["taskql", "worker"]
    port = free_port()
    environment = {
        **os.environ,
        "TASKQL_ENV": "test",
        "MONGODB_URI": mongodb_uri,
        "REDIS_URL": shared_redis.new_database(),
        "MONGODB_DATABASE": f"test_{uuid.uuid4().hex[:12]}",
        "JWT_SECRET": TEST_SECRET,
        "DATA_DIR": str(tmp_path),
        "METRICS_PORT": str(port),
        "SHUTDOWN_TIMEOUT_SECONDS": "10",
    }
    healthcheck = [sys.executable, *worker["healthcheck"]["test"][2:]]

    def healthy() -> bool:
        result = subprocess.run(healthcheck, env={"METRICS_PORT": str(port)}, capture_output=True, timeout=30)
        return result.returncode == 0

    log = tmp_path / "worker.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "taskql", *container["command"][1:]], env=environment, stderr=output
        )
    try:
        deadline = time.monotonic() + 30
        while "worker running" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert healthy()
        for probe in (container["readinessProbe"], container["livenessProbe"]):
            [target] = [entry for entry in container["ports"] if entry["name"] == probe["httpGet"]["port"]]
            assert target["containerPort"] == PRODUCTION_METRICS_PORT  # METRICS_PORT here, a free port
            response = httpx.get(f"http://127.0.0.1:{port}{probe['httpGet']['path']}", timeout=5)
            assert response.status_code == 200 and "taskql_job_queue_jobs" in response.text

        started = time.monotonic()
        process.terminate()
        assert process.wait(timeout=pod["terminationGracePeriodSeconds"]) == 0, log.read_text()
        # Idle, it stops without using its drain time (SHUTDOWN_TIMEOUT_SECONDS).
        assert time.monotonic() - started < float(environment["SHUTDOWN_TIMEOUT_SECONDS"])
        assert not healthy()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(15)


# --- Kubernetes ------------------------------------------------------------------------------------


# The objects the tests look at, by (kind, metadata.name): the API's, and the job workers'.
API = "taskql"
WORKER = "taskql-worker"
CONFIG_MAP = ("ConfigMap", "taskql-config")
SECRET = ("Secret", "taskql-secrets")


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Every Kubernetes object of deploy/k8s by kind and name (the Kustomization's name is "")."""
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                key = (document["kind"], document.get("metadata", {}).get("name", ""))
                assert key not in objects, f"two {key[0]} objects named {key[1]!r}"
                objects[key] = document
    return objects


def pod_settings(
    objects: dict[tuple[str, str], dict[str, Any]], deployment: str, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The settings a pod of this Deployment reads: the ConfigMap, then its container's own env."""
    [container] = objects["Deployment", deployment]["spec"]["template"]["spec"]["containers"]
    environment = {
        **objects[CONFIG_MAP]["data"],
        **{item["name"]: item.get("value", "") for item in container.get("env", [])},
        "JWT_SECRET": TEST_SECRET,  # from the Secret
    }
    return settings_from(environment, monkeypatch)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_kubernetes_manifests_match_the_api_schemas() -> None:
    objects = manifests()
    kustomization = objects.pop(("Kustomization", ""))

    for version in KUBERNETES_VERSIONS:
        for document in objects.values():
            kubernetes_validate.validate(document, version, strict=True)  # raises on any unknown or mistyped field
    listed = set(kustomization["resources"])
    assert listed == {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert {
        ("Deployment", API),
        ("Service", API),
        ("Ingress", API),
        ("HorizontalPodAutoscaler", API),
        ("PodDisruptionBudget", API),
        CONFIG_MAP,
        SECRET,
        ("Deployment", WORKER),
    } <= set(objects)


def test_kubernetes_pods_probe_drain_and_run_unprivileged(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = manifests()
    deployment = objects["Deployment", API]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    settings = pod_settings(objects, API, monkeypatch)

    assert settings.is_production and settings.port == ports["http"] == 8000
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # SIGKILL comes after the preStop pause and TaskQL's whole graceful shutdown.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + settings.shutdown_timeout_seconds
    # Unprivileged, as the image's own user, with nothing writable but /tmp.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == image_uid()
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    [tmp] = [mount for mount in container["volumeMounts"] if mount["mountPath"] == "/tmp"]
    assert "emptyDir" in next(volume for volume in pod["volumes"] if volume["name"] == tmp["name"])
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    assert {ref["configMapRef"]["name"] for ref in container["envFrom"] if "configMapRef" in ref} == {
        objects[CONFIG_MAP]["metadata"]["name"]
    }
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    # The metrics have a port of their own, which the Service does not expose (see below).
    assert int(annotations["prometheus.io/port"]) == ports["metrics"] == settings.separate_metrics_port
    assert annotations["prometheus.io/path"] == "/metrics"


def test_kubernetes_objects_refer_to_each_other_and_keep_metrics_private() -> None:
    objects = manifests()
    deployment = objects["Deployment", API]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service, ingress = objects["Service", API], objects["Ingress", API]
    hpa, pdb = objects["HorizontalPodAutoscaler", API], objects["PodDisruptionBudget", API]

    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "taskql"}
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert deployment["spec"]["replicas"] == hpa["spec"]["minReplicas"]
    assert [metric["resource"]["name"] for metric in hpa["spec"]["metrics"]] == ["cpu"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert [port["targetPort"] for port in service["spec"]["ports"]] == ["http"]  # not the metrics port
    # Public: /graphql, /healthz and export downloads only, so /metrics and /readyz are never routed from outside.
    paths = {
        (path["path"], path["pathType"]): path["backend"]["service"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert set(paths) == {("/graphql", "Exact"), ("/healthz", "Exact"), ("/exports", "Prefix")}
    assert all(backend == {"name": service["metadata"]["name"], "port": {"name": "http"}} for backend in paths.values())
    annotations = ingress["metadata"]["annotations"]
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    body_limit = annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert int(body_limit.removesuffix("k")) * 1024 >= int(objects[CONFIG_MAP]["data"]["MAX_BODY_BYTES"])
    # The example Secret's placeholder would be refused by a production server (too short).
    secret = objects[SECRET]["stringData"]
    assert len(secret["JWT_SECRET"]) < 32
    assert set(secret) == {"JWT_SECRET", "MONGODB_URI", "REDIS_URL", "SMTP_URL"}


def test_kubernetes_job_workers_share_the_apis_settings_and_drain_before_sigkill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects = manifests()
    api, worker = objects["Deployment", API], objects["Deployment", WORKER]
    api_pod, pod = api["spec"]["template"]["spec"], worker["spec"]["template"]["spec"]
    [api_container], [container] = api_pod["containers"], pod["containers"]
    api_settings = pod_settings(objects, API, monkeypatch)
    settings = pod_settings(objects, WORKER, monkeypatch)

    # The API pods only enqueue, explicitly (not by production's default): the workers run the jobs.
    assert objects[CONFIG_MAP]["data"]["JOBS_IN_PROCESS"] == "false"
    assert api_settings.jobs_in_process is False and not api_settings.runs_jobs_in_process
    # The API's image, the worker command, and the same ConfigMap and Secret.
    assert container["command"] == ["taskql", "worker"] and "args" not in container
    assert container["image"] == api_container["image"]
    assert container["envFrom"] == api_container["envFrom"]
    referenced = {(kind.removesuffix("Ref"), ref[kind]["name"]) for ref in container["envFrom"] for kind in ref}
    assert referenced == {("configMap", CONFIG_MAP[1]), ("secret", SECRET[1])}
    assert settings.is_production and settings.jobs_queue == api_settings.jobs_queue
    # SIGTERM: running jobs get SHUTDOWN_TIMEOUT_SECONDS, then go back to the queue; the kubelet's
    # SIGKILL comes after that (and after a preStop pause, if one is ever added).
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", ["sleep", "0"])
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + settings.shutdown_timeout_seconds
    # Its only port is /metrics (no HTTP API): the probes and Prometheus ask that.
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": settings.worker_metrics_port}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, probe
    annotations = worker["spec"]["template"]["metadata"]["annotations"]
    assert annotations == api["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]
    # Unprivileged exactly as the API, with the same writable /tmp, and resources of its own.
    assert pod["securityContext"] == api_pod["securityContext"]
    assert container["securityContext"] == api_container["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    assert container["volumeMounts"] == api_container["volumeMounts"] and pod["volumes"] == api_pod["volumes"]
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    # Selectors: no API object (Service, PDB, HPA, the Deployment) counts or routes to worker pods,
    # and the workers' own PDB holds only them.
    labels, api_labels = worker["spec"]["template"]["metadata"]["labels"], api["spec"]["template"]["metadata"]["labels"]
    assert selects(worker["spec"]["selector"]["matchLabels"], labels)
    assert not selects(worker["spec"]["selector"]["matchLabels"], api_labels)
    for selector in (
        api["spec"]["selector"]["matchLabels"],
        objects["Service", API]["spec"]["selector"],
        objects["PodDisruptionBudget", API]["spec"]["selector"]["matchLabels"],
    ):
        assert selects(selector, api_labels) and not selects(selector, labels), selector
    worker_pdb = objects["PodDisruptionBudget", WORKER]["spec"]
    assert selects(worker_pdb["selector"]["matchLabels"], labels)
    assert not selects(worker_pdb["selector"]["matchLabels"], api_labels)
    assert worker_pdb["maxUnavailable"] < worker["spec"]["replicas"]
    # Email: SMTP_URL with its credentials in the Secret, the rest in the ConfigMap.
    secret = objects[SECRET]["stringData"]
    assert urlsplit(secret["SMTP_URL"]).scheme in ("smtp", "smtps") and urlsplit(secret["SMTP_URL"]).password
    assert "SMTP_URL" not in objects[CONFIG_MAP]["data"]
    assert settings.public_url.startswith("https://") and "@" in settings.mail_from


def test_the_nginx_config_keeps_subscriptions_open_and_never_resends_a_post() -> None:
    """What the live tests cannot wait for: an hour of silence, and a POST that failed midway."""
    text = NGINX_CONF.read_text()
    subscriptions = re.search(r"location @subscriptions \{([^}]*)\}", text)
    retry = re.search(r"^\s*proxy_next_upstream (.*);$", text, re.MULTILINE)

    assert subscriptions
    timeouts = dict(re.findall(r"(proxy_read_timeout|proxy_send_timeout) (\d+)s;", subscriptions[1]))
    assert int(timeouts["proxy_read_timeout"]) >= 3600 and int(timeouts["proxy_send_timeout"]) >= 3600
    assert retry and "non_idempotent" not in retry[1]  # a mutation that reached an instance runs once
