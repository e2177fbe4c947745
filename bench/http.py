"""`make bench-http`: TaskQL's request path against an in-memory Strawberry app of the same shape.

Starts the embedded database and Valkey as `taskql serve` starts them, two TaskQL servers on them
(one worker each, rate limits out of the way; the entity cache on for "warm", off for "cold") and
the reference app (bench/reference_app.py), seeds a board of 20 tasks, then drives every scenario
with wrk (a closed loop of `--connections` keep-alive connections on one thread) and reports
requests/s, p50/p99 latency and the ratio to the reference, plus the MongoDB operations and Redis
reads each TaskQL request costs under that load (the servers' own counters, read before and
after: concurrent requests share Redis round trips), and the Redis round trips one request waits
for when it is alone (20 requests sent one at a time).

    .venv/bin/python -m bench.http [--duration 10] [--connections 32] [--output bench/results/http.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from bench.common import REPO_ROOT, BenchError, environment, redis_version, say, stop_process
from bench.reference_app import TOKEN as REFERENCE_TOKEN
from taskql.embedded import embedded_services
from taskql.embedded.child import free_port
from taskql.settings import UNLIMITED_RATE, Settings

RESULTS = REPO_ROOT / "bench" / "results" / "http.json"
PACKAGES = ("strawberry-graphql", "graphql-core", "starlette", "uvicorn", "pymongo", "redis", "secantusdb")
SECRET = "bench-secret-" + "x" * 40
PASSWORD = "bench password 1"
BOARD = """
query($p: ID!) { project(id: $p) { tasks(first: 20) { edges { node {
  id title status priority dueAt assignee { id name } } } } } }
"""
UPDATE = (
    "mutation($i: ID!, $t: String!) { updateTask(input: {id: $i, title: $t}) { task { version } userErrors { code } } }"
)


@dataclass(frozen=True)
class Scenario:
    name: str
    query: str
    taskql_server: str = "warm"  # or "cold": the server without the entity cache
    signed_in: bool = True
    mutation: bool = False  # a new title on every request


SCENARIOS = (
    Scenario("typename", "{ __typename }", signed_in=False),
    Scenario("viewer", "{ viewer { name } }"),
    Scenario("board_warm", BOARD),
    Scenario("board_cold", BOARD, taskql_server="cold"),
    Scenario("update_task", UPDATE, mutation=True),
)


@dataclass(frozen=True)
class Target:
    """A server under load, and what its requests need."""

    url: str
    token: str
    project_id: str
    task_id: str


@dataclass(frozen=True)
class WrkResult:
    requests: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    failed: int  # non-2xx answers and socket errors
    output: str


def _lua(scenario: Scenario, target: Target) -> str:
    variables: dict[str, Any] = {"p": target.project_id, "i": target.task_id}
    headers = ['wrk.headers["Content-Type"] = "application/json"']
    if scenario.signed_in:
        headers.append(f'wrk.headers["Authorization"] = "Bearer {target.token}"')
    lines = ['wrk.method = "POST"', *headers]
    if not scenario.mutation:
        body = orjson.dumps({"query": scenario.query, "variables": variables}).decode()
        return "\n".join([*lines, f"wrk.body = [==[{body}]==]", ""])
    body = orjson.dumps({"query": scenario.query, "variables": {**variables, "t": "@"}}).decode()
    prefix, suffix = body.split('"@"')
    return "\n".join(
        [
            *lines,
            "local n = 0",
            "request = function()",
            "  n = n + 1",
            f'  return wrk.format(nil, nil, nil, [==[{prefix}"title ]==] .. n .. [==["{suffix}]==])',
            "end",
            "",
        ]
    )


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _parse_wrk(output: str) -> WrkResult:
    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if match is None:
            raise BenchError(f"no {percent}% latency in wrk's output:\n{output}")
        return float(match[1]) * _UNITS_MS[match[2]]

    requests = re.search(r"(\d+) requests in", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if requests is None or rate is None:
        raise BenchError(f"wrk's output has no request counts:\n{output}")
    failed = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    failed += sum(int(n) for n in errors.groups()) if errors else 0
    return WrkResult(int(requests[1]), float(rate[1]), latency("50"), latency("99"), failed, output)


async def _wrk(script: Path, url: str, *, duration: float, connections: int) -> WrkResult:
    process = await asyncio.create_subprocess_exec(
        "wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "30s", "--latency",
        "-s", str(script), f"{url}/graphql",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = (await process.communicate())[0].decode()
    if process.returncode != 0:
        raise BenchError(f"wrk failed:\n{output}")
    return _parse_wrk(output)


class Counters:
    """MongoDB operations (SecantusDB's opcounters) and Redis round trips (Valkey's reads of a client's
    requests: a pipeline or a script is one, however many commands it runs) served so far."""

    def __init__(self, mongodb_uri: str, redis_url: str) -> None:
        self._mongo: AsyncMongoClient = AsyncMongoClient(mongodb_uri)
        self._redis = Redis.from_url(redis_url)

    async def read(self) -> tuple[int, int]:
        status = await self._mongo.admin.command("serverStatus")
        stats = await self._redis.info("stats")
        # Minus this reading's own serverStatus and INFO.
        return sum(status["opcounters"].values()) - 1, int(stats["total_reads_processed"]) - 1

    async def close(self) -> None:
        await self._mongo.close()
        await self._redis.aclose()


@contextlib.asynccontextmanager
async def _process(
    name: str, command: list[str], env: dict[str, str], run_dir: Path, cwd: Path = REPO_ROOT
) -> AsyncIterator[str]:
    """A server process on a free port; yields its base URL once it answers a GraphQL request."""
    port = free_port()
    log_path = run_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *command, "--port", str(port), env=env, stdout=log, stderr=asyncio.subprocess.STDOUT, cwd=cwd
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=2) as http:
            for _ in range(300):
                if process.returncode is not None:
                    raise BenchError(f"{name} exited early:\n{log_path.read_text()[-3000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if (await http.post("/graphql", json={"query": "{ __typename }"})).status_code == 200:
                        break
                await asyncio.sleep(0.2)
            else:
                raise BenchError(f"{name} did not start:\n{log_path.read_text()[-3000:]}")
        yield url
    finally:
        await stop_process(process)


async def _graphql(url: str, query: str, variables: dict[str, Any], token: str = "") -> dict[str, Any]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        body = (await http.post("/graphql", json={"query": query, "variables": variables}, headers=headers)).json()
    if body.get("errors"):
        raise BenchError(f"{query.strip()[:60]}…: {body['errors']}")
    return body["data"]


async def _seed_board(url: str) -> Target:
    """An owner, three members and a project of 20 tasks, each assigned and due."""
    register = "mutation($i: RegisterInput!) { register(input: $i) { accessToken user { id email } } }"
    users = []
    for n in range(4):
        account = {"email": f"bench{n}@example.com", "name": f"Bench {n}", "password": PASSWORD}
        users.append((await _graphql(url, register, {"i": account}))["register"])
    token = users[0]["accessToken"]
    create = 'mutation { createProject(input: {name: "Board"}) { project { id } } }'
    project_id = (await _graphql(url, create, {}, token))["createProject"]["project"]["id"]
    add = """
    mutation($p: ID!, $e: String!) {
      addProjectMember(input: {projectId: $p, email: $e, role: EDITOR}) { project { id } }
    }
    """
    for member in users[1:]:
        await _graphql(url, add, {"p": project_id, "e": member["user"]["email"]}, token)
    create_task = """
    mutation($i: CreateTaskInput!) { createTask(input: $i) { task { id } } }
    """
    task_ids = []
    for n in range(20):
        task = {
            "projectId": project_id,
            "title": f"Task {n}",
            "priority": ["LOW", "MEDIUM", "HIGH", "URGENT"][n % 4],
            "dueAt": f"2027-01-{n + 1:02d}T12:00:00Z",
            "assigneeId": users[n % 4]["user"]["id"],
        }
        task_ids.append((await _graphql(url, create_task, {"i": task}, token))["createTask"]["task"]["id"])
    return Target(url, token, project_id, task_ids[0])


def _taskql_env(services: Settings, run_dir: Path, **settings: str) -> dict[str, str]:
    # `make run`'s defaults (development, access log at INFO, metrics on), rate limits out of the way.
    return {
        **{key: value for key, value in os.environ.items() if not key.startswith(("MONGODB_", "REDIS_"))},
        "MONGODB_URI": services.mongodb_uri or "",
        "REDIS_URL": services.redis_url or "",
        "DATA_DIR": str(run_dir),
        "JWT_SECRET": SECRET,
        **{key.upper(): str(value) for key, value in UNLIMITED_RATE.items()},
        **{key.upper(): value for key, value in settings.items()},
    }


async def run(
    *, duration: float, connections: int, scenarios: list[str], baseline: Path | None = None
) -> dict[str, Any]:
    """`baseline`: another TaskQL source tree (say a git worktree of an earlier commit), measured too."""
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed: `apt-get install wrk`")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="taskql-bench-http-") as tmp:
        run_dir = Path(tmp)
        unset = Settings(_env_file=None, data_dir=run_dir / "services", mongodb_uri=None, redis_url=None)
        with embedded_services(unset) as services:
            assert services.mongodb_uri is not None and services.redis_url is not None
            machine = environment(PACKAGES, await redis_version(services.redis_url))
            taskql = [sys.executable, "-m", "taskql", "serve"]
            async with contextlib.AsyncExitStack() as stack:
                say("starting TaskQL (warm and cold) and the reference app")
                warm = await stack.enter_async_context(
                    _process("taskql-warm", taskql, _taskql_env(services, run_dir), run_dir)
                )
                cold = await stack.enter_async_context(
                    _process("taskql-cold", taskql, _taskql_env(services, run_dir, CACHE_ENABLED="false"), run_dir)
                )
                reference = await stack.enter_async_context(
                    _process("reference", [sys.executable, "-m", "bench.reference_app"], dict(os.environ), run_dir)
                )
                board = await _seed_board(warm)
                targets = {
                    "warm": board,
                    "cold": Target(cold, board.token, board.project_id, board.task_id),
                    "reference": Target(reference, REFERENCE_TOKEN, "p1", "t0"),
                }
                if baseline is not None:
                    say(f"starting the baseline TaskQL from {baseline} (warm and cold)")
                    for kind, extra in (("warm", {}), ("cold", {"CACHE_ENABLED": "false"})):
                        env = {**_taskql_env(services, run_dir, **extra), "PYTHONPATH": str(baseline)}
                        url = await stack.enter_async_context(
                            _process(f"baseline-{kind}", taskql, env, run_dir, cwd=baseline)
                        )
                        targets[f"baseline-{kind}"] = Target(url, board.token, board.project_id, board.task_id)
                counters = Counters(services.mongodb_uri, services.redis_url)
                stack.push_async_callback(counters.close)
                for scenario in (s for s in SCENARIOS if s.name in scenarios):
                    results[scenario.name] = await _measure(
                        scenario, targets, counters, run_dir, duration=duration, connections=connections
                    )
    return {
        "benchmark": "http",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        **machine,
        "settings": {"duration_seconds": duration, "connections": connections, "wrk_threads": 1},
        "scenarios": results,
    }


async def _measure(
    scenario: Scenario,
    targets: dict[str, Target],
    counters: Counters,
    run_dir: Path,
    *,
    duration: float,
    connections: int,
) -> dict[str, Any]:
    say(f"{scenario.name}: {duration:g} s on each server (after 2 s of warm-up)")
    measured: dict[str, Any] = {}
    servers = [("taskql", targets[scenario.taskql_server]), ("reference", targets["reference"])]
    if f"baseline-{scenario.taskql_server}" in targets:
        servers.insert(1, ("baseline", targets[f"baseline-{scenario.taskql_server}"]))
    for name, target in servers:
        variables = {"p": target.project_id, "i": target.task_id, "t": "check"}
        await _graphql(target.url, scenario.query, variables, target.token if scenario.signed_in else "")
        script = run_dir / f"{scenario.name}-{name}.lua"
        script.write_text(_lua(scenario, target))
        await _wrk(script, target.url, duration=2, connections=connections)  # warm-up: caches, pools, JIT-free
        mongo_before, redis_before = await counters.read()
        result = await _wrk(script, target.url, duration=duration, connections=connections)
        mongo_after, redis_after = await counters.read()
        if result.failed:
            raise BenchError(f"{scenario.name} on {name}: {result.failed} requests failed:\n{result.output}")
        measured[name] = {
            "requests_per_second": round(result.requests_per_second, 1),
            "p50_ms": round(result.p50_ms, 2),
            "p99_ms": round(result.p99_ms, 2),
            "requests": result.requests,
        }
        if name != "reference":
            measured[name]["mongodb_ops_per_request"] = round((mongo_after - mongo_before) / result.requests, 2)
            # Under load the server sends the commands of concurrent requests to Redis together.
            measured[name]["redis_reads_per_request"] = round((redis_after - redis_before) / result.requests, 2)
            measured[name]["redis_round_trips_alone"] = await _round_trips_alone(scenario, target, counters)
    for name in ("taskql", "baseline"):
        if name in measured:
            ratio = measured[name]["requests_per_second"] / measured["reference"]["requests_per_second"]
            measured[name]["ratio"] = round(ratio, 3)
    measured["ratio"] = measured["taskql"]["ratio"]
    return measured


async def _round_trips_alone(scenario: Scenario, target: Target, counters: Counters, requests: int = 20) -> float:
    """The Redis round trips one request waits for: requests sent one at a time, nothing to share them
    with, less the reads the servers make meanwhile on their own (event streams, the outbox relay)."""
    token = target.token if scenario.signed_in else ""
    _, before = await counters.read()
    started = time.perf_counter()
    for n in range(requests):
        variables = {"p": target.project_id, "i": target.task_id, "t": f"alone {n}"}
        await _graphql(target.url, scenario.query, variables, token)
    elapsed = time.perf_counter() - started
    _, after = await counters.read()
    await asyncio.sleep(elapsed)
    _, idle = await counters.read()
    return round((2 * after - before - idle) / requests, 2)


def table(report: dict[str, Any]) -> str:
    rows = [
        "| scenario | server | req/s | p50 / p99 ms | ratio | MongoDB ops/req | Redis reads/req "
        "| Redis round trips alone |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, result in report["scenarios"].items():
        for server in ("baseline", "taskql", "reference"):
            if server in result:
                row = result[server]
                rows.append(
                    f"| {name} | {server} | {row['requests_per_second']:,.0f} | {row['p50_ms']} / {row['p99_ms']} "
                    f"| {row.get('ratio', 1.0):.2f} | {row.get('mongodb_ops_per_request', '')} "
                    f"| {row.get('redis_reads_per_request', '')} | {row.get('redis_round_trips_alone', '')} |"
                )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per scenario and app")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections wrk holds open")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON report (default: %(default)s)")
    parser.add_argument("--baseline", type=Path, help="another TaskQL source tree to measure in the same run")
    names = [scenario.name for scenario in SCENARIOS]
    parser.add_argument("--scenarios", nargs="+", choices=names, default=names, help="(default: all)")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.connections < 1:
        parser.error("--duration must be positive and --connections at least 1")
    try:
        report = asyncio.run(
            run(duration=args.duration, connections=args.connections, scenarios=args.scenarios, baseline=args.baseline)
        )
    except BenchError as exc:
        raise SystemExit(f"benchmark failed: {exc}") from exc
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    print(table(report))
    say(f"wrote {args.output}")


if __name__ == "__main__":
    main()
