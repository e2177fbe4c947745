"""Throughput and latency of a nested query with loaders + cache, loaders alone, and per-field queries.

`python -m bench.loaders_cache` (or `make bench`) seeds a fresh SecantusDB server, then starts one
TaskQL server process per mode on the same data, checks that every mode answers the nested query
identically, and measures it under a fixed concurrency. Prints a table; writes
bench/results/loaders_cache.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bench.dataset import Dataset, DatasetSpec, seed
from bench.loadgen import LoadResult, run_load
from bench.serve import MODES, STATS_PATH, Mode
from taskql.db.client import Database, create_client
from taskql.embedded import EmbeddedMongo
from taskql.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "loaders_cache.json"
DATABASE = "taskql_bench"
# The query of the issue, as a member of PROJECTS_PAGE projects, each with many more than TASKS_PAGE tasks.
NESTED_QUERY = (
    "query { projects(first: 10) { edges { node { owner { name } members { user { name } } "
    "tasks(first: 20) { edges { node { assignee { name } createdBy { name } project { name } } } } } } } }"
)
PROJECTS_PAGE = 10
TASKS_PAGE = 20
BODY = orjson.dumps({"query": NESTED_QUERY})
LOGIN = "mutation($input: LoginInput!) { login(input: $input) { accessToken userErrors { code message } } }"
COUNTED_REQUESTS = 3  # sequential requests whose database commands are counted, per mode
SERVER_START_TIMEOUT = 60.0
SERVER_STOP_TIMEOUT = 15.0
REQUEST_TIMEOUT = 120.0  # a per-field request under load takes seconds; it must not count as an error
PACKAGES = ("strawberry-graphql", "graphql-core", "starlette", "uvicorn", "pymongo", "redis", "secantusdb", "httpx")


class BenchError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.asynccontextmanager
async def _server(mode: Mode, *, mongodb_uri: str, run_dir: Path, redis_url: str) -> AsyncIterator[str]:
    """A `bench.serve` process for `mode`; yields its base URL once it answers, stops it afterwards."""
    port = _free_port()
    log_path = run_dir / f"server-{mode.name}.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bench.serve", "--mode", mode.name, "--port", str(port)),
            *("--mongodb-uri", mongodb_uri, "--database", DATABASE),
            *("--data-dir", str(run_dir), "--redis-url", redis_url),
            cwd=REPO_ROOT,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        await _wait_until_serving(process, base_url, log_path)
        yield base_url
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), SERVER_STOP_TIMEOUT)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _wait_until_serving(process: asyncio.subprocess.Process, base_url: str, log_path: Path) -> None:
    # uvicorn accepts connections only after the lifespan (database, indexes, Redis) has started.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SERVER_START_TIMEOUT
    async with httpx.AsyncClient(base_url=base_url, timeout=1.0) as http:
        while loop.time() < deadline:
            if process.returncode is not None:
                raise BenchError(f"the server exited early:\n{_log_tail(log_path)}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise BenchError(f"the server did not start within {SERVER_START_TIMEOUT:.0f} s:\n{_log_tail(log_path)}")


async def _graphql(http: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> Any:
    """The `data` of a request that must succeed."""
    response = await http.post("/graphql", content=body, headers=headers)
    if response.status_code != 200:
        raise BenchError(f"HTTP {response.status_code}: {response.text[:500]}")
    answer = orjson.loads(response.content)
    if answer.get("errors") or "data" not in answer:
        raise BenchError(f"GraphQL errors: {answer.get('errors')}")
    return answer["data"]


async def _login(http: httpx.AsyncClient, dataset: Dataset) -> str:
    variables = {"input": {"email": dataset.viewer_email, "password": dataset.viewer_password}}
    body = orjson.dumps({"query": LOGIN, "variables": variables})
    payload = (await _graphql(http, body, {"content-type": "application/json"}))["login"]
    if payload["userErrors"]:
        raise BenchError(f"login failed: {payload['userErrors']}")
    return payload["accessToken"]


async def _stats(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get(STATS_PATH)
    response.raise_for_status()
    return response.json()


def _work_per_request(before: dict[str, Any], after: dict[str, Any], requests: int) -> dict[str, Any]:
    commands = Counter(after["mongo_commands"])
    commands.subtract(before["mongo_commands"])
    return {
        "mongo_commands": sum(commands.values()) / requests,
        "mongo_commands_by_name": {name: count / requests for name, count in sorted(commands.items()) if count},
        "loader_batches": (after["loader_batches"] - before["loader_batches"]) / requests,
        "cache_hits": (after["cache_hits"] - before["cache_hits"]) / requests,
        "cache_misses": (after["cache_misses"] - before["cache_misses"]) / requests,
    }


async def _check_and_count(http: httpx.AsyncClient, mode: Mode, headers: dict[str, str]) -> tuple[Any, dict[str, Any]]:
    """The answer to the nested query, after checking it is complete and stable, and the work per request."""
    data = await _graphql(http, BODY, headers)  # also fills the cache of mode a before counting
    projects = data["projects"]["edges"]
    if len(projects) != PROJECTS_PAGE or any(len(p["node"]["tasks"]["edges"]) != TASKS_PAGE for p in projects):
        raise BenchError(f"expected {PROJECTS_PAGE} projects of {TASKS_PAGE} tasks each in the answer")
    before = await _stats(http)
    for _ in range(COUNTED_REQUESTS):
        if await _graphql(http, BODY, headers) != data:
            raise BenchError(f"mode {mode.name} answered the same query differently on successive requests")
    after = await _stats(http)
    work = _work_per_request(before, after, COUNTED_REQUESTS)
    # The cache steps aside silently when Redis fails: mode a must really have been served from Redis.
    if mode.cache and (after["cache_errors"] or not work["cache_hits"]):
        raise BenchError(f"mode a did not use the Redis cache (errors: {after['cache_errors']})")
    return data, work


def _mode_result(mode: Mode, load: LoadResult, work: dict[str, Any], cache_errors: int) -> dict[str, Any]:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    return {
        "description": mode.description,
        "requests": len(load.latencies),
        "errors": load.errors,
        "elapsed_seconds": round(load.elapsed, 2),
        "requests_per_second": round(load.requests_per_second, 2),
        "latency_ms": {
            "p50": ms(load.percentile_ms(0.50)),
            "p99": ms(load.percentile_ms(0.99)),
            "max": ms(load.percentile_ms(1.0)),
        },
        "per_request": work,
        "cache_errors_under_load": cache_errors,
    }


async def _bench_mode(
    mode: Mode, *, mongodb_uri: str, run_dir: Path, dataset: Dataset, args: argparse.Namespace
) -> tuple[dict[str, Any], Any]:
    """(result, answer) of one mode: its own server process on the shared database."""
    _say(f"mode {mode.name} ({mode.description}): starting its server")
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with (
        _server(mode, mongodb_uri=mongodb_uri, run_dir=run_dir, redis_url=args.redis_url) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT, limits=limits) as http,
    ):
        headers = {"content-type": "application/json", "authorization": f"Bearer {await _login(http, dataset)}"}
        data, work = await _check_and_count(http, mode, headers)
        _say(f"mode {mode.name}: warming up {args.warmup:g} s, then measuring {args.duration:g} s")
        await run_load(http, "/graphql", BODY, headers, concurrency=args.concurrency, duration=args.warmup)
        before = await _stats(http)
        load = await run_load(http, "/graphql", BODY, headers, concurrency=args.concurrency, duration=args.duration)
        cache_errors = (await _stats(http))["cache_errors"] - before["cache_errors"]
    return _mode_result(mode, load, work, cache_errors), data


async def _seed(mongodb_uri: str, run_dir: Path, spec: DatasetSpec) -> Dataset:
    settings = Settings(_env_file=None, mongodb_uri=mongodb_uri, mongodb_database=DATABASE, data_dir=run_dir)
    client = create_client(settings, mongodb_uri)
    try:
        return await seed(Database(client, settings), spec)
    finally:
        await client.close()


async def _redis_version(url: str) -> str:
    """Redis's version; fails early when it is unreachable (mode a would otherwise measure no cache)."""
    client = Redis.from_url(url, socket_connect_timeout=2.0)
    try:
        return (await client.info("server"))["redis_version"]
    except RedisError as exc:
        raise BenchError(f"Redis is not reachable at {url}: {exc}") from exc
    finally:
        await client.aclose()


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor()


def _environment(redis_version: str) -> dict[str, Any]:
    return {
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "versions": {**{name: metadata.version(name) for name in PACKAGES}, "redis-server": redis_version},
    }


def _ratio(modes: dict[str, dict[str, Any]], faster: str, slower: str) -> float | None:
    if faster not in modes or slower not in modes or not modes[slower]["requests_per_second"]:
        return None
    return round(modes[faster]["requests_per_second"] / modes[slower]["requests_per_second"], 2)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    spec = DatasetSpec(users=args.users, projects=args.projects, tasks=args.tasks)
    environment = _environment(await _redis_version(args.redis_url))
    modes: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="taskql-bench-") as tmp:
        run_dir = Path(tmp)
        mongo = EmbeddedMongo(run_dir)  # the same SecantusDB launcher `taskql serve` uses, as its own process
        mongodb_uri = await mongo.start()
        try:
            _say(f"seeding {spec.users} users, {spec.projects} projects, {spec.tasks:,} tasks")
            dataset = await _seed(mongodb_uri, run_dir, spec)
            reference: tuple[str, Any] | None = None
            for name in args.modes:
                modes[name], answer = await _bench_mode(
                    MODES[name], mongodb_uri=mongodb_uri, run_dir=run_dir, dataset=dataset, args=args
                )
                if reference is None:
                    reference = (name, answer)
                elif answer != reference[1]:
                    raise BenchError(f"modes {reference[0]} and {name} answer the nested query differently")
        finally:
            await mongo.stop()
    return {
        "benchmark": "loaders_cache",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "query": NESTED_QUERY,
        **environment,
        "dataset": {
            "users": spec.users,
            "projects": spec.projects,
            "tasks": spec.tasks,
            "viewer_projects": spec.viewer_projects,
            "members_per_viewer_project": dataset.members_per_viewer_project,
            "seed_seconds": round(dataset.seconds, 1),
        },
        "load": {
            "generator": "Python asyncio + httpx, closed loop over keep-alive connections",
            "concurrency": args.concurrency,
            "warmup_seconds": args.warmup,
            "duration_seconds": args.duration,
        },
        "responses_identical": True,  # checked above: a difference ends the run
        "modes": modes,
        "ratios": {"a/c": _ratio(modes, "a", "c"), "a/b": _ratio(modes, "a", "b")},
    }


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _table(report: dict[str, Any]) -> str:
    rows = [f"{'mode':<5}{'setup':<24}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'mongo cmds/req':>16}"]
    for name, mode in report["modes"].items():
        latency = mode["latency_ms"]
        p50, p99 = (f"{value:.1f}" if value is not None else "-" for value in (latency["p50"], latency["p99"]))
        rows.append(
            f"{name:<5}{mode['description']:<24}{mode['requests_per_second']:>8.1f}{p50:>9}{p99:>9}"
            f"{mode['errors']:>8}{mode['per_request']['mongo_commands']:>16.1f}"
        )
    ratios = [f"{pair} = {value:.1f}x" for pair, value in report["ratios"].items() if value is not None]
    if ratios:
        rows.append("requests/s ratios: " + ", ".join(ratios))
    return "\n".join(rows)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = DatasetSpec()
    parser = argparse.ArgumentParser(
        prog="python -m bench.loaders_cache", description="Benchmark loaders and cache on a nested query."
    )
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), default=sorted(MODES))
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default: 8)")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per mode (default: 15)")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds per mode first (default: 3)")
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--projects", type=int, default=defaults.projects)
    parser.add_argument("--tasks", type=int, default=defaults.tasks)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="the cache of mode a")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--concurrency must be at least 1, --duration positive, --warmup not negative")
    if args.projects < PROJECTS_PAGE or args.tasks < args.projects * TASKS_PAGE:
        parser.error(f"the query reads {PROJECTS_PAGE} projects of {TASKS_PAGE} tasks: seed at least that many")
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    try:
        report = asyncio.run(run(args))
    except BenchError as exc:
        raise SystemExit(f"benchmark failed: {exc}") from exc
    print(_table(report))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    _say(f"wrote {args.output}")


if __name__ == "__main__":
    main()
