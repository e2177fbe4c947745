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
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import (
    REPO_ROOT,
    BenchError,
    environment,
    redis_version,
    say,
    stop_process,
    wait_until_serving,
)
from bench.dataset import Dataset, DatasetSpec, seed
from bench.loadgen import LoadResult, run_load
from bench.otlp_sink import ReceivedSpans, otlp_http_sink
from bench.serve import MODES, STATS_PATH, Mode
from taskql.db.client import Database, create_client
from taskql.embedded import embedded_services
from taskql.embedded.child import free_port
from taskql.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "loaders_cache.json"
DATABASE = "taskql_bench"
# The nested query of the issue; every answer is checked to hold PROJECTS_PAGE projects of TASKS_PAGE tasks.
NESTED_QUERY = (
    "query { projects(first: 10) { edges { node { owner { name } members { user { name } } "
    "tasks(first: 20) { edges { node { assignee { name } createdBy { name } project { name } } } } } } } }"
)
PROJECTS_PAGE = 10
TASKS_PAGE = 20
BODY = orjson.dumps({"query": NESTED_QUERY})
LOGIN = "mutation($input: LoginInput!) { login(input: $input) { accessToken userErrors { code message } } }"
COUNTED_REQUESTS = 3  # requests sent one at a time, per mode, whose cost is broken down
REQUEST_TIMEOUT = 120.0  # a per-field request under load takes seconds; it must not count as an error
PACKAGES = ("strawberry-graphql", "graphql-core", "starlette", "uvicorn", "pymongo", "redis", "secantusdb", "httpx")


@dataclass(frozen=True)
class LoadPlan:
    concurrency: int  # requests in flight
    warmup: float  # seconds of load before measuring, per mode
    duration: float  # measured seconds, per mode


@contextlib.asynccontextmanager
async def _server(mode: Mode, *, mongodb_uri: str, run_dir: Path, redis_url: str, otlp: str) -> AsyncIterator[str]:
    """A `bench.serve` process for `mode`; yields its base URL once it answers, stops it afterwards."""
    port = free_port()
    log_path = run_dir / f"server-{mode.name}.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bench.serve", "--mode", mode.name, "--port", str(port)),
            *("--mongodb-uri", mongodb_uri, "--database", DATABASE),
            *("--data-dir", str(run_dir), "--redis-url", redis_url, "--otlp-endpoint", otlp),
            cwd=REPO_ROOT,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        await wait_until_serving(process, base_url, log_path)
        yield base_url
    finally:
        await stop_process(process)


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


def _work_per_request(before: dict[str, Any], after: dict[str, Any], requests: int, seconds: float) -> dict[str, Any]:
    """What `requests` sequential requests cost the server, per request, from its stats before and after."""

    def delta(key: str) -> Counter[str]:
        counts = Counter(after[key])
        counts.subtract(before[key])
        return counts

    commands, micros = delta("mongo_commands"), delta("mongo_micros")
    return {
        "latency_ms": round(seconds / requests * 1000, 1),
        "server_cpu_ms": round((after["cpu_seconds"] - before["cpu_seconds"]) / requests * 1000, 1),
        "mongo_commands": sum(commands.values()) / requests,
        # As the driver times them: commands sent together (mode c) also count the time they queue.
        "mongo_ms_summed": round(sum(micros.values()) / requests / 1000, 1),
        "mongo_by_command": {
            name: {"count": commands[name] / requests, "ms_summed": round(micros[name] / requests / 1000, 1)}
            for name in sorted(commands)
            if commands[name]
        },
        **{key: (after[key] - before[key]) / requests for key in ("loader_batches", "cache_hits", "cache_misses")},
    }


async def _check_and_count(http: httpx.AsyncClient, mode: Mode, headers: dict[str, str]) -> tuple[Any, dict[str, Any]]:
    """The answer to the nested query, after checking it is complete and stable, and the work per request."""
    data = await _graphql(http, BODY, headers)  # also fills the cache of mode a before counting
    projects = data["projects"]["edges"]
    if len(projects) != PROJECTS_PAGE or any(len(p["node"]["tasks"]["edges"]) != TASKS_PAGE for p in projects):
        raise BenchError(f"expected {PROJECTS_PAGE} projects of {TASKS_PAGE} tasks each in the answer")
    before = await _stats(http)
    started = time.perf_counter()
    for _ in range(COUNTED_REQUESTS):
        if await _graphql(http, BODY, headers) != data:
            raise BenchError(f"mode {mode.name} answered the same query differently on successive requests")
    seconds = time.perf_counter() - started
    after = await _stats(http)
    work = _work_per_request(before, after, COUNTED_REQUESTS, seconds)
    # The cache steps aside silently when Redis fails: mode a must really have been served from Redis.
    if mode.cache and (after["cache_errors"] or not work["cache_hits"]):
        raise BenchError(f"mode {mode.name} did not use the Redis cache (errors: {after['cache_errors']})")
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
    mode: Mode,
    plan: LoadPlan,
    *,
    mongodb_uri: str,
    run_dir: Path,
    redis_url: str,
    dataset: Dataset,
    spans: ReceivedSpans,
) -> tuple[dict[str, Any], Any]:
    """(result, answer) of one mode: its own server process on the shared database."""
    say(f"mode {mode.name} ({mode.description}): starting its server")
    limits = httpx.Limits(max_connections=plan.concurrency, max_keepalive_connections=plan.concurrency)
    spans_before = spans.total()
    async with (
        _server(mode, mongodb_uri=mongodb_uri, run_dir=run_dir, redis_url=redis_url, otlp=spans.endpoint) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT, limits=limits) as http,
    ):
        headers = {"content-type": "application/json", "authorization": f"Bearer {await _login(http, dataset)}"}
        data, work = await _check_and_count(http, mode, headers)
        say(f"mode {mode.name}: warming up {plan.warmup:g} s, then measuring {plan.duration:g} s")
        await run_load(http, "/graphql", BODY, headers, concurrency=plan.concurrency, duration=plan.warmup)
        before = await _stats(http)
        load = await run_load(http, "/graphql", BODY, headers, concurrency=plan.concurrency, duration=plan.duration)
        cache_errors = (await _stats(http))["cache_errors"] - before["cache_errors"]
    result = _mode_result(mode, load, work, cache_errors)
    if mode.traced:  # the server has stopped, which exports the spans it still held
        result["spans_exported"] = spans.total() - spans_before
        if not result["spans_exported"]:
            raise BenchError(f"mode {mode.name} exported no spans")
    return result, data


async def _seed(mongodb_uri: str, run_dir: Path, spec: DatasetSpec) -> Dataset:
    settings = Settings(_env_file=None, mongodb_uri=mongodb_uri, mongodb_database=DATABASE, data_dir=run_dir)
    client = create_client(settings, mongodb_uri)
    try:
        return await seed(Database(client, settings), spec)
    finally:
        await client.close()


def _ratio(modes: dict[str, dict[str, Any]], faster: str, slower: str) -> float | None:
    if faster not in modes or slower not in modes or not modes[slower]["requests_per_second"]:
        return None
    return round(modes[faster]["requests_per_second"] / modes[slower]["requests_per_second"], 2)


async def run(spec: DatasetSpec, plan: LoadPlan, *, modes_to_run: list[str], redis_url: str | None) -> dict[str, Any]:
    """Seeds `spec`, measures each mode in turn under `plan`; the report written as JSON."""
    modes: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="taskql-bench-") as tmp, otlp_http_sink() as spans:
        run_dir = Path(tmp)
        # The embedded servers `taskql serve` starts, as processes of their own (Redis unless given).
        unset = Settings(_env_file=None, data_dir=run_dir, mongodb_uri=None, redis_url=redis_url)
        with embedded_services(unset) as services:
            assert services.mongodb_uri is not None and services.redis_url is not None
            mongodb_uri, redis_url = services.mongodb_uri, services.redis_url
            # Fails early when Redis is unreachable: mode a would otherwise measure no cache.
            machine = environment(PACKAGES, await redis_version(redis_url))
            say(f"seeding {spec.users} users, {spec.projects} projects, {spec.tasks:,} tasks")
            dataset = await _seed(mongodb_uri, run_dir, spec)
            reference: tuple[str, Any] | None = None
            for name in modes_to_run:
                modes[name], answer = await _bench_mode(
                    MODES[name],
                    plan,
                    mongodb_uri=mongodb_uri,
                    run_dir=run_dir,
                    redis_url=redis_url,
                    dataset=dataset,
                    spans=spans,
                )
                if reference is None:
                    reference = (name, answer)
                elif answer != reference[1]:
                    raise BenchError(f"modes {reference[0]} and {name} answer the nested query differently")
    return {
        "benchmark": "loaders_cache",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "query": NESTED_QUERY,
        **machine,
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
            "concurrency": plan.concurrency,
            "warmup_seconds": plan.warmup,
            "duration_seconds": plan.duration,
        },
        "responses_identical": True,  # checked above: a difference ends the run
        "modes": modes,
        "ratios": {"a/c": _ratio(modes, "a", "c"), "a/b": _ratio(modes, "a", "b"), "t/a": _ratio(modes, "t", "a")},
    }


def _table(report: dict[str, Any]) -> str:
    rows = [
        f"{'mode':<5}{'setup':<23}{'req/s':>7}{'p50 ms':>8}{'p99 ms':>8}{'n':>6}{'errors':>7}"
        f"{'db cmds/req':>12}{'solo ms':>8}{'cpu ms':>7}"
    ]
    for name, mode in report["modes"].items():
        latency = mode["latency_ms"]
        p50, p99 = (f"{value:.0f}" if value is not None else "-" for value in (latency["p50"], latency["p99"]))
        work = mode["per_request"]
        rows.append(
            f"{name:<5}{mode['description']:<23}{mode['requests_per_second']:>7.2f}{p50:>8}{p99:>8}"
            f"{mode['requests']:>6}{mode['errors']:>7}{work['mongo_commands']:>12.0f}{work['latency_ms']:>8.0f}"
            f"{work['server_cpu_ms']:>7.0f}"
        )
    ratios = [f"{pair} = {value:.2f}x" for pair, value in report["ratios"].items() if value is not None]
    if ratios:
        rows.append("requests/s ratios: " + ", ".join(ratios))
    rows.append(
        "n: requests measured; solo ms: latency of one request with nothing else in flight; "
        "cpu ms: the server's CPU time for it"
    )
    return "\n".join(rows)


def _parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, DatasetSpec, LoadPlan]:
    defaults = DatasetSpec()
    parser = argparse.ArgumentParser(
        prog="python -m bench.loaders_cache", description="Benchmark loaders and cache on a nested query."
    )
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), default=sorted(MODES), help="(default: a b c t)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default: 8)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per mode (default: 20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds per mode first (default: 3)")
    parser.add_argument("--users", type=int, default=defaults.users, help=f"(default: {defaults.users})")
    parser.add_argument("--projects", type=int, default=defaults.projects, help=f"(default: {defaults.projects})")
    parser.add_argument("--tasks", type=int, default=defaults.tasks, help=f"(default: {defaults.tasks:,})")
    parser.add_argument("--redis-url", help="a Redis to use (default: an embedded Valkey, as `taskql serve` starts)")
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help="JSON report (default: bench/results/loaders_cache.json)"
    )
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--concurrency must be at least 1, --duration positive, --warmup not negative")
    if args.projects < PROJECTS_PAGE or args.tasks < args.projects * TASKS_PAGE:
        parser.error(f"the query reads {PROJECTS_PAGE} projects of {TASKS_PAGE} tasks: seed at least that many")
    try:
        spec = DatasetSpec(users=args.users, projects=args.projects, tasks=args.tasks)
    except ValueError as exc:
        parser.error(str(exc))
    return args, spec, LoadPlan(concurrency=args.concurrency, warmup=args.warmup, duration=args.duration)


def main(argv: list[str] | None = None) -> None:
    args, spec, plan = _parse_args(argv)
    try:
        report = asyncio.run(run(spec, plan, modes_to_run=args.modes, redis_url=args.redis_url))
    except BenchError as exc:
        raise SystemExit(f"benchmark failed: {exc}") from exc
    print(_table(report))
    for name, mode in report["modes"].items():
        if mode["cache_errors_under_load"]:
            say(f"warning: mode {name} could not reach Redis {mode['cache_errors_under_load']} times under load")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    say(f"wrote {args.output}")


if __name__ == "__main__":
    main()
