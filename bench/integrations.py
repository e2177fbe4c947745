"""Webhooks and exports under load (issue 18): deliveries from task writes to a receiver, and big exports.

`python -m bench.integrations` (or `make bench-integrations`) starts the embedded database and Valkey,
one TaskQL server (JOBS_IN_PROCESS=false) and one `taskql worker` process (so the jobs' CPU and
memory are the worker's own), and a webhook receiver: uvicorn in this process, answering 200 at once.

Webhooks: for each `--webhooks K`, a project of its own with K webhooks (TASK_CREATED) pointing at the
receiver; `--light-tasks` / K createTask mutations at `--light-rate` / K a second ("light": deliveries
at a rate below what the worker manages, so no backlog), then `--tasks` (one count per K) at `--rate`
a second (open loop: "paced"), then as many again as fast as `--concurrency` requests in flight allow
("burst"); each mode waits for its deliveries before the next. Per mode: the latency from each
mutation's send to its delivery's arrival at each webhook (p50 / p99 / max), the deliveries per second
(from the first send to the last arrival), the deliveries lost (an acknowledged task never delivered
to a webhook), duplicated (a TaskQL-Delivery received more than once: allowed, at least once) and out
of order (per webhook, a first arrival older, by occurredAt then TaskQL-Delivery, than one before it),
and the CPU of the server and the worker per delivery.

Exports: for each `--export-tasks N`, a project of its own with N tasks inserted straight into the
database, exported as CSV then as JSON: the time from exportTasks to SUCCEEDED (polled every 100 ms),
rows per second, the file (downloaded from downloadUrl; its rows counted), the worker's resident memory
before and at its peak during the export (VmRSS sampled every 50 ms, and VmHWM, reset first), and the
worker's CPU. Prints tables; writes bench/results/integrations_issue18.json.

    .venv/bin/python -m bench.integrations [--webhooks 1 5] [--tasks 1000 200] [--rate 50] [--concurrency 8]
        [--light-tasks 50] [--light-rate 5] [--export-tasks 20000 100000] [--parts webhooks exports]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from bson import ObjectId
from pymongo import AsyncMongoClient

from bench.common import BenchError, environment, redis_version, say, wait_until_serving
from bench.http import _taskql_env
from bench.jobs import _cpu, _graphql, _latency, _log_problems, _started, _wait_for_metrics
from taskql.embedded import embedded_services
from taskql.embedded.child import free_port
from taskql.schema.relay import decode_id
from taskql.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "integrations_issue18.json"
PACKAGES = ("strawberry-graphql", "starlette", "uvicorn", "httpx", "pymongo", "redis", "saq", "secantusdb")
PASSWORD = "correct horse battery staple"
DATABASE = "taskql_bench_integrations"

REGISTER = "mutation($i: RegisterInput!) { register(input: $i) { accessToken user { id } userErrors { code } } }"
CREATE_PROJECT = "mutation($i: CreateProjectInput!) { createProject(input: $i) { project { id } userErrors { code } } }"
CREATE_WEBHOOK = """
mutation($p: ID!, $url: String!) {
  createWebhook(input: {projectId: $p, url: $url, events: [TASK_CREATED], description: "bench"}) {
    webhook { id } userErrors { code field message }
  }
}
"""
CREATE_TASK = "mutation($i: CreateTaskInput!) { createTask(input: $i) { task { id } userErrors { code message } } }"
EXPORT_TASKS = """
mutation($p: ID!, $format: ExportFormat!) {
  exportTasks(input: {projectId: $p, format: $format}) { export { id status } userErrors { code field message } }
}
"""
EXPORT = "query($id: ID!) { node(id: $id) { ... on Export { status progress rowCount downloadUrl error } } }"

REQUEST_TIMEOUT = 30.0
WARM_UP_TASKS = 5
STALL_TIMEOUT = 20.0  # after the last mutation: give up once no delivery arrived for this long
DRAIN_TIMEOUT = 180.0  # and in any case after this long
DUPLICATE_SETTLE = 2.0  # seconds to wait after the last expected arrival, for duplicates
EXPORT_TIMEOUT = 600.0
EXPORT_POLL = 0.1
RSS_SAMPLE = 0.05
PROGRESS_INTERVAL = 5.0
INSERT_BATCH = 2000
INSERT_CONCURRENCY = 4


@dataclass(frozen=True)
class Plan:
    tasks: list[int]  # per webhook count, in paced and burst mode
    rate: float
    concurrency: int
    webhooks: list[int]
    light_tasks: int
    light_rate: float
    export_tasks: list[int]


# The receiver: every request's arrival (time.perf_counter(), the clock of the sends), path, delivery id and body.


@dataclass(frozen=True)
class Arrival:
    at: float
    path: str
    delivery: str
    body: bytes


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.arrivals: list[Arrival] = []
        config = uvicorn.Config(
            self._app,
            host="127.0.0.1",
            port=self.port,
            lifespan="off",
            log_level="warning",
            access_log=False,
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        at = time.perf_counter()
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        delivery = next((value.decode() for key, value in scope["headers"] if key == b"taskql-delivery"), "")
        self.arrivals.append(Arrival(at, scope["path"], delivery, b"".join(chunks)))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def __aenter__(self) -> Receiver:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                raise BenchError(f"the receiver did not start: {self._task.exception()!r}")
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._server.force_exit = True
        if self._task is not None:
            await self._task


# Memory from /proc: the worker's resident set now, and its peak (VmHWM), which clear_refs resets.


def _status_kib(pid: int, key: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def _reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssSampler:
    """VmRSS of `pid` every RSS_SAMPLE seconds while running."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            if (rss := _status_kib(self.pid, "VmRSS")) is not None:
                self.samples.append(rss)
            await asyncio.sleep(RSS_SAMPLE)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.create_task(self._sample())
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()


def _mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


# The deployment: one server, one worker, an owner.


@dataclass
class Deployment:
    http: httpx.AsyncClient
    token: str
    owner_id: str
    roles: dict[str, list[int]]  # for _cpu: "server", "workers"
    worker_pid: int
    mongodb_uri: str


async def _project(deployment: Deployment, name: str) -> str:
    created = await _graphql(deployment.http, CREATE_PROJECT, {"i": {"name": name}}, deployment.token)
    return created["project"]["id"]


# Webhooks.


@dataclass
class Sent:
    number: int
    title: str
    sent: float = 0.0
    acked: float | None = None
    error: str | None = None


async def _create(deployment: Deployment, project_id: str, task: Sent) -> None:
    body = orjson.dumps({"query": CREATE_TASK, "variables": {"i": {"projectId": project_id, "title": task.title}}})
    headers = {"authorization": f"Bearer {deployment.token}", "content-type": "application/json"}
    task.sent = time.perf_counter()
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            response = await deployment.http.post("/graphql", content=body, headers=headers)
    except (httpx.HTTPError, TimeoutError) as exc:
        task.error = f"no answer: {exc!r}"
        return
    answered = time.perf_counter()
    if response.status_code == 200:
        answer = orjson.loads(response.content)
        if not answer.get("errors") and not answer["data"]["createTask"]["userErrors"]:
            task.acked = answered
            return
    task.error = f"HTTP {response.status_code}: {response.text[:300]}"


async def _send_paced(deployment: Deployment, project_id: str, tasks: list[Sent], rate: float) -> None:
    """At `rate` a second, on schedule whatever the answers take (open loop)."""
    requests = []
    started = time.perf_counter()
    for task in tasks:
        await asyncio.sleep(max(0.0, started + task.number / rate - time.perf_counter()))
        requests.append(asyncio.create_task(_create(deployment, project_id, task)))
    await asyncio.gather(*requests)


async def _send_burst(deployment: Deployment, project_id: str, tasks: list[Sent], concurrency: int) -> None:
    """`concurrency` requests in flight until all are sent (closed loop)."""
    pending = iter(tasks)

    async def sender() -> None:
        for task in pending:
            await _create(deployment, project_id, task)

    await asyncio.gather(*(sender() for _ in range(concurrency)))


def _title(arrival: Arrival) -> str | None:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return orjson.loads(arrival.body)["task"]["title"]
    return None


async def _wait_for_deliveries(receiver: Receiver, seen: int, expected: set[tuple[str, str]], label: str) -> None:
    """Until every (title, path) in `expected` has arrived, or nothing arrived for STALL_TIMEOUT."""
    got: set[tuple[str, str]] = set()
    started = last_progress = next_report = time.perf_counter()
    while True:
        for arrival in receiver.arrivals[seen:]:
            got.add((_title(arrival) or "", arrival.path))
        now_seen = len(receiver.arrivals)
        now = time.perf_counter()
        if expected <= got:
            return
        if now_seen != seen:
            seen, last_progress = now_seen, now
        elif now - last_progress > STALL_TIMEOUT or now - started > DRAIN_TIMEOUT:
            say(f"{label}: warning: gave up waiting after {now - started:.0f} s: what has not arrived counts as lost")
            return
        if now >= next_report:
            next_report += PROGRESS_INTERVAL
            say(f"{label}:   {len(expected & got)} / {len(expected)} deliveries arrived")
        await asyncio.sleep(0.05)


def _analyse(tasks: list[Sent], arrivals: list[Arrival], paths: list[str]) -> dict[str, Any]:
    by_title = {task.title: task for task in tasks}
    acked = [task for task in tasks if task.acked is not None]
    first: dict[tuple[str, str], Arrival] = {}
    deliveries_seen: Counter[str] = Counter()
    order_key: dict[str, list[tuple[str, str]]] = defaultdict(list)  # per path, in arrival order
    unknown = 0
    for arrival in arrivals:
        title = _title(arrival)
        if title not in by_title or arrival.path not in paths:
            unknown += 1
            continue
        deliveries_seen[arrival.delivery] += 1
        if deliveries_seen[arrival.delivery] > 1:
            continue
        first.setdefault((title, arrival.path), arrival)
        order_key[arrival.path].append((orjson.loads(arrival.body)["occurredAt"], arrival.delivery))
    out_of_order = 0
    for keys in order_key.values():
        newest: tuple[str, str] | None = None
        for key in keys:
            if newest is not None and key < newest:
                out_of_order += 1
            newest = key if newest is None or key > newest else newest
    latencies = [a.at - by_title[title].sent for (title, _), a in first.items()]
    delivered = len(first)
    start = min(task.sent for task in tasks)
    last_arrival = max((a.at for a in first.values()), default=start)
    last_ack = max((task.acked for task in acked if task.acked is not None), default=start)
    window = last_arrival - start
    errors = Counter(task.error for task in tasks if task.error)
    return {
        "mutations_sent": len(tasks),
        "mutations_acknowledged": len(acked),
        "mutation_errors": dict(errors.most_common(5)),
        "mutation_round_trip": _latency([t.acked - t.sent for t in acked if t.acked is not None]),
        "mutations_per_second": round(len(acked) / (last_ack - start), 1) if last_ack > start else None,
        "deliveries_expected": len(acked) * len(paths),
        "deliveries_received": delivered,
        "delivery_latency_from_send": _latency(latencies),
        "deliveries_per_second": round(delivered / window, 1) if window > 0 else None,
        # How long the last deliveries trailed the last acknowledged write (a backlog drains meanwhile).
        "last_delivery_after_last_ack_s": round(last_arrival - last_ack, 2),
        "deliveries_lost": sum(1 for t in acked for p in paths if (t.title, p) not in first),
        "deliveries_duplicated": sum(n - 1 for n in deliveries_seen.values()),
        "deliveries_out_of_order": out_of_order,
        "unexpected_requests": unknown,
    }


async def _webhook_configuration(
    deployment: Deployment, receiver: Receiver, plan: Plan, hooks: int
) -> dict[str, dict[str, Any]]:
    label = f"webhooks-{hooks}"
    project_id = await _project(deployment, f"Webhooks {hooks}")
    paths = [f"/hooks/{hooks}/{n}" for n in range(hooks)]
    for path in paths:
        variables = {"p": project_id, "url": receiver.url(path)}
        await _graphql(deployment.http, CREATE_WEBHOOK, variables, deployment.token)
    say(f"{label}: warming up")
    warm = [Sent(n, f"{label} warm-up {n}") for n in range(WARM_UP_TASKS)]
    seen = len(receiver.arrivals)
    for task in warm:
        await _create(deployment, project_id, task)
    await _wait_for_deliveries(receiver, seen, {(t.title, p) for t in warm for p in paths}, label)
    await asyncio.sleep(DUPLICATE_SETTLE)
    results = {}
    count = plan.tasks[plan.webhooks.index(hooks)]
    for mode in ("light", "paced", "burst"):
        # Light mode: --light-rate and --light-tasks count deliveries, whatever the webhooks.
        sent = max(plan.light_tasks // hooks, 5) if mode == "light" else count
        tasks = [Sent(n, f"{label} {mode} {n}") for n in range(sent)]
        seen = len(receiver.arrivals)
        cpu_before = _cpu(deployment.roles)
        if mode == "burst":
            say(f"{label}: {len(tasks)} createTask, {plan.concurrency} in flight")
            await _send_burst(deployment, project_id, tasks, plan.concurrency)
        else:
            rate = plan.light_rate / hooks if mode == "light" else plan.rate
            say(f"{label}: {len(tasks)} createTask at {rate:g}/s")
            await _send_paced(deployment, project_id, tasks, rate)
        expected = {(t.title, p) for t in tasks if t.acked is not None for p in paths}
        await _wait_for_deliveries(receiver, seen, expected, label)
        cpu_after = _cpu(deployment.roles)
        await asyncio.sleep(DUPLICATE_SETTLE)
        result = _analyse(tasks, receiver.arrivals[seen:], paths)
        cpu = {role: cpu_after[role] - cpu_before[role] for role in cpu_before}
        per = max(result["deliveries_received"], 1)
        result["cpu_seconds"] = {role: round(seconds, 2) for role, seconds in cpu.items()}
        result["cpu_ms_per_delivery"] = {role: round(seconds * 1000 / per, 2) for role, seconds in cpu.items()}
        results[mode] = {"webhooks": hooks, "mode": mode, **result}
        say(
            f"{label} {mode}: {result['deliveries_received']} / {result['deliveries_expected']} delivered, "
            f"{result['deliveries_per_second']}/s, p50 {result['delivery_latency_from_send']['p50_ms']} ms"
        )
    return results


# Exports.


def _task_doc(n: int, project_id: ObjectId, owner_id: ObjectId, now: datetime) -> dict[str, Any]:
    """A task as the app stores it (tests/test_exports.py's shape)."""
    return {
        "_id": ObjectId(),
        "project_id": project_id,
        "title": f"Task {n}" if n % 1000 else f'=HYPERLINK("http://evil.example", "{n}")',
        "description": 'Line one, with a comma\nand "quotes"' if n % 7 == 0 else "",
        "status": ("TODO", "IN_PROGRESS", "DONE")[n % 3],
        "priority": "MEDIUM",
        "due_at": now + timedelta(days=n % 30) if n % 2 else None,
        "tags": ["a", "b"] if n % 5 == 0 else [],
        "assignee_id": None,
        "created_by": owner_id,
        "created_at": now,
        "updated_at": now,
        "completed_at": None,
        "version": 1,
    }


async def _insert_tasks(deployment: Deployment, project_id: str, count: int) -> float:
    """`count` tasks straight into the database; the seconds it took."""
    project, owner = decode_id(project_id, "Project"), decode_id(deployment.owner_id, "User")
    now = datetime.now(UTC).replace(microsecond=0)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(deployment.mongodb_uri)
    started = time.perf_counter()
    gate = asyncio.Semaphore(INSERT_CONCURRENCY)

    async def insert(start: int) -> None:
        docs = [_task_doc(n, project, owner, now) for n in range(start, min(start + INSERT_BATCH, count))]
        async with gate:
            await client[DATABASE].tasks.insert_many(docs, ordered=False)

    try:
        await asyncio.gather(*(insert(start) for start in range(0, count, INSERT_BATCH)))
    finally:
        await client.close()
    return time.perf_counter() - started


def _count_rows(file_format: str, content: bytes) -> int:
    if file_format == "CSV":
        return sum(1 for _ in csv.reader(io.StringIO(content.decode(), newline=""))) - 1  # the header
    return len(orjson.loads(content))


async def _export(deployment: Deployment, project_id: str, file_format: str, tasks: int) -> dict[str, Any]:
    http, pid = deployment.http, deployment.worker_pid
    await asyncio.sleep(1.0)  # the worker idle again after the insert or the last export
    baseline_kib = _status_kib(pid, "VmRSS")
    peak_reset = _reset_peak(pid)
    cpu_before = _cpu(deployment.roles)
    with RssSampler(pid) as sampler:
        started = time.perf_counter()
        requested = await _graphql(http, EXPORT_TASKS, {"p": project_id, "format": file_format}, deployment.token)
        export_id = requested["export"]["id"]
        while True:
            node = await _graphql(http, EXPORT, {"id": export_id}, deployment.token)
            if node["status"] in ("SUCCEEDED", "FAILED"):
                break
            if time.perf_counter() - started > EXPORT_TIMEOUT:
                raise BenchError(f"the {file_format} export of {tasks} tasks did not finish in {EXPORT_TIMEOUT:.0f} s")
            await asyncio.sleep(EXPORT_POLL)
        elapsed = time.perf_counter() - started
        await asyncio.sleep(RSS_SAMPLE * 2)
    cpu_after = _cpu(deployment.roles)
    hwm_kib = _status_kib(pid, "VmHWM") if peak_reset else None
    if node["status"] != "SUCCEEDED":
        raise BenchError(f"the {file_format} export of {tasks} tasks failed: {node['error']}")
    downloading = time.perf_counter()
    response = await http.get(node["downloadUrl"], timeout=120.0)
    download_seconds = time.perf_counter() - downloading
    if response.status_code != 200:
        raise BenchError(f"download: HTTP {response.status_code}: {response.text[:300]}")
    rows = _count_rows(file_format, response.content)
    peak_kib = max([*sampler.samples, hwm_kib or 0])
    cpu = {role: round(cpu_after[role] - cpu_before[role], 2) for role in cpu_before}
    return {
        "tasks": tasks,
        "format": file_format,
        "seconds_to_succeeded": round(elapsed, 2),
        "rows_per_second": round(tasks / elapsed),
        "row_count": node["rowCount"],
        "rows_in_file": rows,
        "rows_match": rows == node["rowCount"] == tasks,
        "file_bytes": len(response.content),
        "download_seconds": round(download_seconds, 2),
        "worker_rss_mib_before": _mib(baseline_kib),
        "worker_rss_mib_peak": _mib(peak_kib),
        "worker_rss_mib_peak_sampled": _mib(max(sampler.samples, default=None)),
        "worker_vmhwm_mib": _mib(hwm_kib),
        "rss_samples": len(sampler.samples),
        "cpu_seconds": cpu,
    }


async def _export_configuration(deployment: Deployment, tasks: int) -> list[dict[str, Any]]:
    label = f"export-{tasks}"
    project_id = await _project(deployment, f"Export {tasks}")
    say(f"{label}: inserting {tasks} tasks")
    inserted = await _insert_tasks(deployment, project_id, tasks)
    say(f"{label}: inserted in {inserted:.1f} s")
    results = []
    for file_format in ("CSV", "JSON"):
        result = await _export(deployment, project_id, file_format, tasks)
        result["insert_seconds"] = round(inserted, 2)
        say(
            f"{label} {file_format}: {result['seconds_to_succeeded']} s, {result['rows_per_second']} rows/s, "
            f"worker RSS {result['worker_rss_mib_before']} -> {result['worker_rss_mib_peak']} MiB"
        )
        results.append(result)
    return results


# The run.


async def run(plan: Plan) -> dict[str, Any]:
    report: dict[str, Any] = {"webhooks": [], "exports": []}
    with tempfile.TemporaryDirectory(prefix="taskql-bench-integrations-") as tmp:
        run_dir = Path(tmp)
        unset = Settings(_env_file=None, data_dir=run_dir / "services", mongodb_uri=None, redis_url=None)
        with embedded_services(unset) as services:
            assert services.redis_url is not None and services.mongodb_uri is not None
            machine = environment(PACKAGES, await redis_version(services.redis_url))
            env = _taskql_env(
                services,
                run_dir,
                TASKQL_ENV="development",
                MONGODB_DATABASE=DATABASE,
                JOBS_QUEUE=f"bench-integrations-{os.getpid()}",
                JOBS_IN_PROCESS="false",
                WEBHOOK_ALLOW_HTTP="true",
                WEBHOOK_ALLOW_PRIVATE_ADDRESSES="true",  # the receiver is on loopback
                LOGIN_MAX_FAILURES="1000",
            )
            env.pop("METRICS_PORT", None)
            port, metrics_port = free_port(), free_port()
            base_url = f"http://127.0.0.1:{port}"
            async with contextlib.AsyncExitStack() as stack:
                say("starting the server, a worker and the receiver")
                serve = [sys.executable, "-m", "taskql", "serve", "--port", str(port)]
                server = await stack.enter_async_context(_started("server", serve, env, run_dir))
                await wait_until_serving(server.process, base_url, server.log_path)
                worker = await stack.enter_async_context(
                    _started(
                        "worker",
                        [sys.executable, "-m", "taskql", "worker"],
                        {**env, "METRICS_PORT": str(metrics_port)},
                        run_dir,
                    )
                )
                await _wait_for_metrics(worker, f"http://127.0.0.1:{metrics_port}/metrics")
                receiver = await stack.enter_async_context(Receiver())
                limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
                http = await stack.enter_async_context(
                    httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT, limits=limits)
                )
                owner = await _graphql(
                    http, REGISTER, {"i": {"email": "owner@example.com", "name": "Owner", "password": PASSWORD}}
                )
                deployment = Deployment(
                    http,
                    owner["accessToken"],
                    owner["user"]["id"],
                    {"server": [server.process.pid], "workers": [worker.process.pid]},
                    worker.process.pid,
                    services.mongodb_uri,
                )
                for hooks in plan.webhooks:
                    measured = await _webhook_configuration(deployment, receiver, plan, hooks)
                    report["webhooks"].extend(measured.values())
                for tasks in plan.export_tasks:
                    report["exports"].extend(await _export_configuration(deployment, tasks))
            report["log_problems"] = _log_problems([server.log_path, worker.log_path])
    return {
        "benchmark": "integrations",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        **machine,
        "settings": {
            "tasks": dict(zip(map(str, plan.webhooks), plan.tasks, strict=True)),
            "rate_per_second": plan.rate,
            "light_tasks": plan.light_tasks,
            "light_rate_per_second": plan.light_rate,
            "concurrency": plan.concurrency,
            "webhooks": plan.webhooks,
            "export_tasks": plan.export_tasks,
        },
        **report,
    }


def _cell(latency: dict[str, Any]) -> str:
    if latency.get("p50_ms") is None:
        return "–"
    keys = ("p50_ms", "p99_ms", "max_ms")
    return " / ".join(f"{latency[k]:,.0f}" if latency[k] >= 100 else f"{latency[k]:.1f}" for k in keys)


def tables(report: dict[str, Any]) -> str:
    out = []
    if report["webhooks"]:
        out += [
            "| webhooks | mode | mutations acked | mutations/s | deliveries | deliveries/s "
            "| latency from send p50 / p99 / max ms | last delivery after last ack | lost / duplicated / out of order "
            "| CPU ms per delivery: server + worker (db + Redis) |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in report["webhooks"]:
            cpu = row["cpu_ms_per_delivery"]
            out.append(
                f"| {row['webhooks']} | {row['mode']} | {row['mutations_acknowledged']} / {row['mutations_sent']} "
                f"| {row['mutations_per_second']} | {row['deliveries_received']} / {row['deliveries_expected']} "
                f"| {row['deliveries_per_second']} | {_cell(row['delivery_latency_from_send'])} "
                f"| {row['last_delivery_after_last_ack_s']} s "
                f"| {row['deliveries_lost']} / {row['deliveries_duplicated']} / {row['deliveries_out_of_order']} "
                f"| {cpu['server']:.1f} + {cpu['workers']:.1f} ({cpu['services']:.1f}) |"
            )
    if report["exports"]:
        if out:
            out.append("")
        out += [
            "| tasks | format | seconds to SUCCEEDED | rows/s | rows (file = rowCount) | file MiB "
            "| worker RSS before → peak MiB | worker CPU s | db + Redis CPU s |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in report["exports"]:
            out.append(
                f"| {row['tasks']:,} | {row['format']} | {row['seconds_to_succeeded']:.1f} "
                f"| {row['rows_per_second']:,} "
                f"| {row['rows_in_file']:,} ({'yes' if row['rows_match'] else 'NO'}) "
                f"| {row['file_bytes'] / 2**20:.1f} | {row['worker_rss_mib_before']} → {row['worker_rss_mib_peak']} "
                f"| {row['cpu_seconds']['workers']:.1f} | {row['cpu_seconds']['services']:.1f} |"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.integrations", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tasks",
        type=int,
        nargs="+",
        default=[1000, 200],
        help="createTask mutations per mode (paced, burst): one count, or one per --webhooks entry",
    )
    parser.add_argument("--rate", type=float, default=50.0, help="createTask mutations per second (paced mode)")
    parser.add_argument("--concurrency", type=int, default=8, help="mutations in flight (burst mode)")
    parser.add_argument(
        "--light-tasks", type=int, default=50, help="deliveries in light mode (first): this many / K createTask"
    )
    parser.add_argument(
        "--light-rate", type=float, default=5.0, help="deliveries per second in light mode: below saturation"
    )
    parser.add_argument("--webhooks", type=int, nargs="+", default=[1, 5], help="webhooks per project, one run each")
    parser.add_argument(
        "--export-tasks", type=int, nargs="+", default=[20_000, 100_000], help="tasks per exported project"
    )
    parser.add_argument("--parts", nargs="+", choices=("webhooks", "exports"), default=["webhooks", "exports"])
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON report (default: %(default)s)")
    args = parser.parse_args(argv)
    if min(args.rate, args.light_rate) <= 0 or min(*args.tasks, args.light_tasks, args.concurrency) < 1:
        parser.error("--rate and --light-rate must be positive; --tasks, --light-tasks and --concurrency at least 1")
    if min(args.webhooks) < 1 or min(args.export_tasks) < 1 or len(set(args.webhooks)) != len(args.webhooks):
        parser.error("--webhooks and --export-tasks at least 1, each webhook count once")
    if len(args.tasks) not in (1, len(args.webhooks)):
        parser.error("--tasks: one count, or one per --webhooks entry")
    plan = Plan(
        (args.tasks * len(args.webhooks) if len(args.tasks) == 1 else args.tasks) if "webhooks" in args.parts else [],
        args.rate,
        args.concurrency,
        args.webhooks if "webhooks" in args.parts else [],
        args.light_tasks,
        args.light_rate,
        args.export_tasks if "exports" in args.parts else [],
    )
    try:
        report = asyncio.run(run(plan))
    except BenchError as exc:
        raise SystemExit(f"benchmark failed: {exc}") from exc
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    print(tables(report))
    say(f"wrote {args.output}")


if __name__ == "__main__":
    main()
