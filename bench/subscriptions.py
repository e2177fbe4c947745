"""Live task events under load: many subscribers on several server processes, a steady stream of mutations.

`python -m bench.subscriptions` (or `make bench-subscriptions`) starts SecantusDB and 2 TaskQL server
processes sharing Redis, opens 1,000 `taskEvents` subscriptions from separate load-generator
processes (bench/subscribers.py), then updates tasks at 50 mutations/s through alternating servers.
It reports the delivery latency of every (subscriber, event) pair (from the mutation's send, and from
its acknowledgement), the events lost, duplicated or out of order, the mutations' round trips, the
server CPU per delivery and the memory per idle subscription. `--rate 10 25 50` runs each rate in
turn; `--baseline DIR` runs each one with the servers of another TaskQL tree first (a git worktree
of an earlier commit). Prints a table per run; writes bench/results/subscriptions.json. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.common import (
    REPO_ROOT,
    BenchError,
    environment,
    log_tail,
    redis_version,
    say,
    stop_process,
    wait_until_serving,
)
from bench.loadgen import percentile
from bench.subscribers import TASK_EVENTS, TITLE_PREFIX, Assignment, ClientSpec
from taskql.embedded import embedded_services
from taskql.embedded.child import free_port
from taskql.settings import UNLIMITED_RATE, Settings

RESULTS = Path(__file__).resolve().parent / "results" / "subscriptions.json"
DATABASE = "taskql_bench_subscriptions"
PACKAGES = (
    "strawberry-graphql",
    "graphql-core",
    "starlette",
    "uvicorn",
    "pymongo",
    "redis",
    "secantusdb",
    "websockets",
)
PASSWORD = "correct horse battery staple"
TASK_POOL = 50  # tasks updated in turn: at 50/s each is written once a second, so updates seldom race
# Issue 15's targets: delivery p99 from the mutation's send, per rate; server CPU per delivery; idle memory.
TARGET_P99_MS_BY_RATE = {10.0: 100.0, 50.0: 250.0}
TARGET_CPU_US_PER_DELIVERY = 50
TARGET_KIB_PER_IDLE_SUBSCRIPTION = 40

REGISTER = "mutation($i: RegisterInput!) { register(input: $i) { accessToken userErrors { code message } } }"
CREATE_PROJECT = "mutation($i: CreateProjectInput!) { createProject(input: $i) { project { id } userErrors { code } } }"
ADD_MEMBER = "mutation($i: AddProjectMemberInput!) { addProjectMember(input: $i) { userErrors { code message } } }"
CREATE_TASK = "mutation($i: CreateTaskInput!) { createTask(input: $i) { task { id } userErrors { code message } } }"
UPDATE_TASK = (
    "mutation($i: UpdateTaskInput!) { updateTask(input: $i) { task { version } userErrors { code message } } }"
)

# A mutation unanswered for this long counts as unanswered: an overloaded server may still apply it later.
REQUEST_TIMEOUT = 30.0
SETUP_CONCURRENCY = 10  # registrations and task creations in flight while setting up
READY_TIMEOUT = 120.0  # for every subscription to be open
ANSWER_TIMEOUT = 20.0  # for a generator process to answer a command (its loop may be busy)
PROBE_TIMEOUT = 30.0  # for a probe event to reach every subscriber
PROBE_EVERY = 3.0  # seconds before another probe: a subscription started after a probe never receives it
IDLE_SETTLE = 3.0  # seconds between the probe's delivery and reading the idle memory
DRAIN_TIMEOUT = 60.0  # for the last marker, queued behind the events still in flight
POLL_INTERVAL = 0.25
PROGRESS_INTERVAL = 5.0
STOP_TIMEOUT = 60.0  # a generator closes its sockets and writes its events


# What the servers logged at WARNING and above (taskql's format, then uvicorn's), and the exceptions ending
# tracebacks; ids and numbers are masked so that the same problem is counted once.
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ (?:WARNING|ERROR|CRITICAL) .*|^(?:WARNING|ERROR|CRITICAL):\s.*")
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Timeout|Disconnect)\b.*")
VARYING = re.compile(r"\b[0-9a-f]{24,32}\b|-?\d+(?:\.\d+)?")
LOG_PROBLEMS_SHOWN = 10


@dataclass(frozen=True)
class Plan:
    subscribers: int
    servers: int
    rate: float  # mutations per second
    duration: float  # seconds of mutations
    users: int  # subscribers share these users' tokens
    generators: int  # subscriber load-generator processes
    compression: str | None
    source: Path | None = None  # the TaskQL tree the servers run (None: this one)

    @property
    def mutations(self) -> int:
        return round(self.rate * self.duration)

    @property
    def connections_per_user(self) -> int:
        # The server caps WebSocket connections per user and instance; the users' share, all on one instance.
        return math.ceil(self.subscribers / self.users)


@dataclass(frozen=True)
class Server:
    index: int
    pid: int
    base_url: str
    ws_url: str
    log_path: Path


@dataclass
class Mutation:
    number: int  # the task's new title is f"m{number}"
    server: int
    sent: float = 0.0  # time.time() before the request
    acked: float = 0.0  # time.time() once the response was read
    error: str | None = None
    answered: bool = False  # False with an error: a timeout or a transport failure, applied or not


@dataclass(frozen=True)
class Cpu:
    """CPU seconds used so far, per process id and for the whole machine (busy and total, all cores)."""

    processes: dict[int, float]
    machine_busy: float
    machine_total: float
    wall: float

    @classmethod
    def sample(cls, pids: Sequence[int]) -> Cpu:
        ticks = os.sysconf("SC_CLK_TCK")
        processes = {}
        for pid in pids:
            # utime and stime are fields 14 and 15; the command name (field 2) may contain spaces.
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            processes[pid] = (int(fields[11]) + int(fields[12])) / ticks
        machine = Path("/proc/stat").read_text().splitlines()[0].split()  # "cpu user nice system idle iowait ..."
        user, nice, system, idle, iowait, *rest = (int(value) for value in machine[1:9])
        total = user + nice + system + idle + iowait + sum(rest)
        return cls(processes, (total - idle - iowait) / ticks, total / ticks, time.monotonic())


def _log_problems(path: Path) -> Counter[str]:
    problems: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        if LOG_RECORD.match(line):
            line = line.split(" ", 2)[2] if line[0].isdigit() else line  # without the timestamp
        elif not EXCEPTION_LINE.match(line):
            continue
        problems[VARYING.sub("#", line)[:200]] += 1
    return problems


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for process {pid}")


@contextlib.asynccontextmanager
async def _server(
    index: int,
    plan: Plan,
    *,
    mongodb_uri: str,
    redis_url: str,
    jwt_secret: str,
    run_dir: Path,
    profile_dir: Path | None,
) -> AsyncIterator[Server]:
    """`python -m taskql serve` with its settings in the environment, under cProfile if `profile_dir` is
    given; stopped on exit."""
    port = free_port()
    profiler = () if profile_dir is None else ("-m", "cProfile", "-o", str(profile_dir / f"server-{index}.pstats"))
    log_path = run_dir / f"server-{index}.log"
    env = {
        **os.environ,
        **({} if plan.source is None else {"PYTHONPATH": str(plan.source)}),
        "TASKQL_ENV": "development",
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DATABASE": DATABASE,
        "REDIS_URL": redis_url,
        "JWT_SECRET": jwt_secret,  # one for all instances: each accepts the others' tokens
        "DATA_DIR": str(run_dir),
        "WS_MAX_CONNECTIONS_PER_USER": str(plan.connections_per_user),
        "WS_PER_MESSAGE_DEFLATE": str(plan.compression == "deflate").lower(),
        # Throughput, not the rate limits, is measured; every request is still charged.
        **{name.upper(): str(value) for name, value in UNLIMITED_RATE.items()},
        # The users register together, from one address: each registration holds a place among the
        # failures allowed per IP until it succeeds (services/login_throttle.py).
        "LOGIN_MAX_FAILURES": "1000",
    }
    with log_path.open("wb") as log:
        # cwd=run_dir: no `.env` of the working tree changes the settings.
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, *profiler, "-m", "taskql", "serve", "--port", str(port)),
            cwd=run_dir,
            env=env,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        await wait_until_serving(process, base_url, log_path)
        yield Server(index, process.pid, base_url, f"ws://127.0.0.1:{port}/graphql", log_path)
    finally:
        # uvicorn re-raises the signal it stopped on: SIGINT ends in KeyboardInterrupt, which lets cProfile
        # write its file, where SIGTERM's default action would end the process first.
        await stop_process(process, stop_signal=signal.SIGTERM if profile_dir is None else signal.SIGINT)


async def _graphql(http: httpx.AsyncClient, query: str, variables: dict[str, Any], token: str = "") -> dict[str, Any]:
    """The payload of a one-field mutation that must succeed."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = await http.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
    answer = response.json()
    if response.status_code != 200 or answer.get("errors"):
        raise BenchError(f"HTTP {response.status_code}: {response.text[:500]}")
    [payload] = answer["data"].values()
    if payload.get("userErrors"):
        raise BenchError(f"{query.split('(')[0]}: {payload['userErrors']}")
    return payload


async def _bounded(jobs: Sequence[Any], limit: int) -> list[Any]:
    """Awaits the coroutines in `jobs` with at most `limit` running at once; results in order."""
    gate = asyncio.Semaphore(limit)

    async def run(job: Any) -> Any:
        async with gate:
            return await job

    return await asyncio.gather(*(run(job) for job in jobs))


@dataclass(frozen=True)
class Project:
    owner_token: str
    tokens: list[str]  # of every user, the owner first
    project_id: str
    task_ids: list[str]


async def _set_up(https: list[httpx.AsyncClient], plan: Plan) -> Project:
    """Users (registered over HTTP, spread over the servers), one project they all belong to, its tasks."""
    registrations = [
        _graphql(
            https[n % len(https)],
            REGISTER,
            {"i": {"email": f"subscriber-{n}@example.com", "name": f"Subscriber {n}", "password": PASSWORD}},
        )
        for n in range(plan.users)
    ]
    tokens = [payload["accessToken"] for payload in await _bounded(registrations, SETUP_CONCURRENCY)]
    owner, http = tokens[0], https[0]
    project_id = (await _graphql(http, CREATE_PROJECT, {"i": {"name": "Live"}}, owner))["project"]["id"]
    for n in range(1, plan.users):  # one at a time: each rewrites the project's member list
        member = {"projectId": project_id, "email": f"subscriber-{n}@example.com", "role": "VIEWER"}
        await _graphql(http, ADD_MEMBER, {"i": member}, owner)
    creations = [
        _graphql(http, CREATE_TASK, {"i": {"projectId": project_id, "title": f"task {n}"}}, owner)
        for n in range(TASK_POOL)
    ]
    task_ids = [payload["task"]["id"] for payload in await _bounded(creations, SETUP_CONCURRENCY)]
    return Project(owner, tokens, project_id, task_ids)


class Generator:
    """A `bench.subscribers` process and its line protocol (see that module)."""

    def __init__(self, process: asyncio.subprocess.Process, log_path: Path, output: Path, subscribers: int) -> None:
        self.process = process
        self.log_path = log_path
        self.output = output
        self.subscribers = subscribers

    @classmethod
    async def start(cls, number: int, spec: ClientSpec, run_dir: Path) -> Generator:
        spec_path = run_dir / f"generator-{number}.json"
        spec.dump(spec_path)  # the tokens go in a file, not on a command line
        log_path = run_dir / f"generator-{number}.log"
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "bench.subscribers", str(spec_path)),
                cwd=REPO_ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        return cls(process, log_path, Path(spec.output), len(spec.subscribers))

    async def answer(self, command: str | None, timeout: float) -> dict[str, Any]:
        """Sends `command` (if any), then reads one answer."""
        assert self.process.stdin is not None and self.process.stdout is not None
        if command is not None:
            self.process.stdin.write(f"{command}\n".encode())
            await self.process.stdin.drain()
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        except TimeoutError:
            raise BenchError(f"a subscriber generator did not answer within {timeout:.0f} s") from None
        if not line:
            raise BenchError(f"a subscriber generator exited:\n{log_tail(self.log_path)}")
        return orjson.loads(line)

    async def stop(self) -> None:
        await stop_process(self.process, timeout=5.0)


async def _status(generators: list[Generator], number: int) -> dict[str, int]:
    """Events received, subscribers that have the event of mutation `number`, subscriptions ended."""
    answers = await asyncio.gather(*(g.answer(f"status {number}", ANSWER_TIMEOUT) for g in generators))
    return {key: sum(answer[key] for answer in answers) for key in ("received", "reached", "ended")}


def _specs(plan: Plan, servers: list[Server], project: Project, run_dir: Path) -> list[ClientSpec]:
    # Subscriber n: server n mod S, so each server gets its share; consecutive ranges per generator process,
    # so each process talks to every server. Users rotate over the subscribers of a server.
    assignments = [
        Assignment(index=n, server=n % plan.servers, token=(n // plan.servers) % plan.users)
        for n in range(plan.subscribers)
    ]
    bounds = [plan.subscribers * g // plan.generators for g in range(plan.generators + 1)]
    return [
        ClientSpec(
            urls=[server.ws_url for server in servers],
            tokens=project.tokens,
            project_id=project.project_id,
            subscribers=assignments[bounds[g] : bounds[g + 1]],
            compression=plan.compression,
            output=str(run_dir / f"events-{g}.json"),
        )
        for g in range(plan.generators)
    ]


async def _mutate(http: httpx.AsyncClient, mutation: Mutation, task_id: str, token: str) -> None:
    body = {"query": UPDATE_TASK, "variables": {"i": {"id": task_id, "title": f"{TITLE_PREFIX}{mutation.number}"}}}
    headers = {"authorization": f"Bearer {token}"}
    mutation.sent = time.time()
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):  # httpx's own timeouts are per phase: this bounds the whole
            response = await http.post("/graphql", json=body, headers=headers)
    except (httpx.HTTPError, TimeoutError) as exc:
        mutation.error = f"no answer: {exc!r}"
        return
    mutation.acked = time.time()
    mutation.answered = True
    if response.status_code == 200:
        answer = orjson.loads(response.content)
        if not answer.get("errors") and not answer["data"]["updateTask"]["userErrors"]:
            return
    mutation.error = f"HTTP {response.status_code}: {response.text[:300]}"


async def _drive(https: list[httpx.AsyncClient], project: Project, mutations: list[Mutation], rate: float) -> None:
    """Sends `mutations` at `rate` a second, on schedule whatever the answers take (open loop)."""
    requests: list[asyncio.Task[None]] = []
    started = time.monotonic()
    for mutation in mutations:
        await asyncio.sleep(max(0.0, started + (mutation.number - 1) / rate - time.monotonic()))
        task_id = project.task_ids[mutation.number % len(project.task_ids)]
        requests.append(asyncio.create_task(_mutate(https[mutation.server], mutation, task_id, project.owner_token)))
    await asyncio.gather(*requests)  # each is bounded by REQUEST_TIMEOUT


async def _show_progress(generators: list[Generator], mutations: list[Mutation], done: asyncio.Event) -> None:
    # Stops between commands, never during one: an answer left unread would be taken for the next one's.
    started = time.monotonic()
    while not done.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), PROGRESS_INTERVAL)
            return
        status = await _status(generators, 0)
        say(
            f"  {time.monotonic() - started:3.0f} s: {sum(1 for m in mutations if m.sent):,} mutations sent, "
            f"{status['received']:,} events received, {status['ended']:,} subscriptions ended"
        )


async def _marker(
    https: list[httpx.AsyncClient], project: Project, generators: list[Generator], number: int, timeout: float
) -> dict[str, int] | None:
    """Sends mutation `number`; the status once every live subscriber has its event, None if that takes
    longer than `timeout` (or the mutation fails).

    Each subscriber receives the project's log in order, so the marker's arrival also means everything
    acknowledged before it was sent has arrived (or never will)."""
    deadline = time.monotonic() + timeout
    marker = Mutation(number=number, server=0)
    await _mutate(https[0], marker, project.task_ids[0], project.owner_token)
    if marker.error:
        say(f"marker mutation {number} failed: {marker.error}")
        return None
    while time.monotonic() < deadline:
        status = await _status(generators, number)
        if status["reached"] + status["ended"] >= sum(g.subscribers for g in generators):
            return status
        await asyncio.sleep(POLL_INTERVAL)
    return None


async def _measure(plan: Plan, servers: list[Server], run_dir: Path) -> dict[str, Any]:
    """Sets up, subscribes, measures idle memory, drives the mutations; the raw observations."""
    # Idle connections are let go before the server's keep-alive timeout (uvicorn's 5 s) closes them:
    # a request sent on a connection the server is closing fails with ReadError, and a POST is not retried.
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100, keepalive_expiry=2.0)
    async with contextlib.AsyncExitStack() as stack:
        https = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=s.base_url, timeout=REQUEST_TIMEOUT, limits=limits)
            )
            for s in servers
        ]
        say(f"registering {plan.users} users, creating a project and {TASK_POOL} tasks")
        project = await _set_up(https, plan)
        rss_before = [_rss_kib(server.pid) for server in servers]

        say(f"opening {plan.subscribers:,} subscriptions from {plan.generators} generator processes")
        opening = time.monotonic()
        generators: list[Generator] = []

        async def stop_generators() -> None:  # on success they have exited already; on failure, end them
            await asyncio.gather(*(g.stop() for g in generators))

        stack.push_async_callback(stop_generators)
        for number, spec in enumerate(_specs(plan, servers, project, run_dir)):
            generators.append(await Generator.start(number, spec, run_dir))
        opened = await asyncio.gather(*(g.answer(None, READY_TIMEOUT) for g in generators))
        failures = [reason for answer in opened for reason in answer["failed"]]
        if failures:
            raise BenchError(f"{len(failures)} subscriptions could not be opened, e.g. {failures[:3]}")
        open_seconds = time.monotonic() - opening

        # The server sends nothing when a subscription starts: one event reaching everyone proves all are live.
        # A subscriber's `subscribe` may still be on its way when the first probe is written: probes
        # (numbered after the last mutation, like every marker) are sent until one reaches them all.
        for probe in range(plan.mutations + 2, plan.mutations + 2 + round(PROBE_TIMEOUT / PROBE_EVERY)):
            status = await _marker(https, project, generators, probe, PROBE_EVERY)
            if status is not None:
                break
        if status is None or status["ended"]:
            raise BenchError(f"the probe event did not reach every subscriber within {PROBE_TIMEOUT:.0f} s")
        await asyncio.sleep(IDLE_SETTLE)
        rss_idle = [_rss_kib(server.pid) for server in servers]

        say(f"driving {plan.rate:g} mutations/s for {plan.duration:g} s")
        pids = [s.pid for s in servers] + [g.process.pid for g in generators]
        mutations = [Mutation(number=n, server=n % plan.servers) for n in range(1, plan.mutations + 1)]
        done = asyncio.Event()
        progress = asyncio.create_task(_show_progress(generators, mutations, done))
        cpu_before, own_cpu_before = Cpu.sample(pids), time.process_time()
        try:
            await _drive(https, project, mutations, plan.rate)
        finally:
            done.set()
            await progress
        say("waiting for the events still in flight")
        drained = await _marker(https, project, generators, plan.mutations + 1, DRAIN_TIMEOUT) is not None
        if not drained:
            say(f"warning: events were still in flight after {DRAIN_TIMEOUT:.0f} s: they count as lost")
        cpu_after, own_cpu = Cpu.sample(pids), time.process_time() - own_cpu_before
        say("collecting the events")

        stopped = await asyncio.gather(*(g.answer("stop", STOP_TIMEOUT) for g in generators))
        if not all(answer.get("stopped") for answer in stopped):
            raise BenchError(f"unexpected answers to stop: {stopped}")
        reports = [report for g in generators for report in orjson.loads(g.output.read_bytes())]
    return {
        "mutations": mutations,
        "subscribers": reports,
        "open_seconds": open_seconds,
        "drained": drained,
        "rss_kib": {"before": rss_before, "idle": rss_idle},
        "cpu": _cpu_shares(cpu_before, cpu_after, servers, generators, own_cpu),
    }


def _cpu_shares(
    before: Cpu, after: Cpu, servers: list[Server], generators: list[Generator], own_cpu: float
) -> dict[str, Any]:
    """Cores kept busy by each process while the mutations ran and drained (1.0 = one core all the time)."""
    wall = after.wall - before.wall

    def cores(pid: int) -> float:
        return round((after.processes[pid] - before.processes[pid]) / wall, 2)

    busy = (after.machine_busy - before.machine_busy) / (after.machine_total - before.machine_total)
    machine = busy * (os.cpu_count() or 1)
    servers = [cores(s.pid) for s in servers]
    generators = [cores(g.process.pid) for g in generators]
    return {
        "window_seconds": round(wall, 2),
        "servers": servers,
        "generators": generators,
        "driver": round(own_cpu / wall, 2),
        # SecantusDB, Redis and whatever else runs on the machine.
        "others": round(machine - sum(servers) - sum(generators) - own_cpu / wall, 2),
        "machine": round(machine, 2),
        "machine_cores": os.cpu_count(),
    }


@dataclass
class Delivery:
    """What the subscribers saw, against what the driver had acknowledged."""

    latencies: list[float] = field(default_factory=list)  # seconds, acknowledged -> received
    since_sent: list[float] = field(default_factory=list)  # seconds, request sent -> received
    delivered: int = 0  # every event after the probe, as the server sent it
    received: int = 0  # of acknowledged mutations, once each
    lost: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    unacknowledged: int = 0  # events of a mutation left unanswered (applied, but with no ack to measure from)
    mutations_seen: set[int] = field(default_factory=set)
    # Per acknowledged mutation: when its first and last subscriber received it (seconds).
    first_last: dict[int, tuple[float, float]] = field(default_factory=dict)

    def spreads(self) -> list[float]:
        """How long each event took to reach all of these subscribers once the first had it (seconds)."""
        return [last - first for first, last in self.first_last.values()]


def _cursor_key(cursor: str) -> tuple[int, int]:
    ms, _, seq = cursor.partition("-")
    return int(ms), int(seq)


def _deliveries(planned: range, acked: dict[int, Mutation], subscriber: dict[str, Any], into: Delivery) -> None:
    """Adds one subscriber's events to `into`; `acked` are the acknowledged mutations by number."""
    here: set[int] = set()
    received = 0
    newest = (-1, -1)
    for number, at, cursor in subscriber["events"]:
        key = _cursor_key(cursor)
        if number not in planned:  # a marker (the probe, the last one): only its place in the log counts
            newest = max(newest, key)
            continue
        into.delivered += 1
        if number in here:
            into.duplicates += 1
            continue
        here.add(number)
        if key <= newest:  # each subscriber must see the project's log in its order
            into.out_of_order += 1
        newest = max(newest, key)
        mutation = acked.get(number)
        if mutation is None:
            into.unacknowledged += 1
            continue
        received += 1
        into.latencies.append(at - mutation.acked)
        into.since_sent.append(at - mutation.sent)
        first, last = into.first_last.get(number, (at, at))
        into.first_last[number] = (min(first, at), max(last, at))
    into.received += received
    into.lost += len(acked) - received
    into.mutations_seen |= here


def _ms(ascending: list[float], fraction: float) -> float | None:
    return round(percentile(ascending, fraction) * 1000, 1) if ascending else None


def _latency_summary(unsorted: list[float]) -> dict[str, float | None]:
    seconds = sorted(unsorted)
    return {
        "min": _ms(seconds, 0.0),
        "p50": _ms(seconds, 0.50),
        "p95": _ms(seconds, 0.95),
        "p99": _ms(seconds, 0.99),
        "max": _ms(seconds, 1.0),
    }


def _analyse(plan: Plan, observed: dict[str, Any]) -> dict[str, Any]:
    mutations: list[Mutation] = observed["mutations"]
    acked = {m.number: m for m in mutations if m.error is None}
    by_server = [Delivery() for _ in range(plan.servers)]
    for subscriber in observed["subscribers"]:
        _deliveries(range(1, plan.mutations + 1), acked, subscriber, by_server[subscriber["server"]])
    overall = Delivery(
        latencies=[seconds for d in by_server for seconds in d.latencies],
        since_sent=[seconds for d in by_server for seconds in d.since_sent],
        mutations_seen=set().union(*(d.mutations_seen for d in by_server)),
        **{
            name: sum(getattr(d, name) for d in by_server)
            for name in ("delivered", "received", "lost", "duplicates", "out_of_order", "unacknowledged")
        },
    )
    ended = [s["error"] for s in observed["subscribers"] if s["error"]]
    sent = [m.sent for m in mutations]
    rss = observed["rss_kib"]
    cpu = observed["cpu"]
    per_server_subscribers = [len(range(s, plan.subscribers, plan.servers)) for s in range(plan.servers)]
    delivery = {
        "expected": plan.subscribers * len(acked),
        "received": overall.received,
        "lost": overall.lost,
        "duplicates": overall.duplicates,
        "out_of_order": overall.out_of_order,
        "of_unanswered_mutations": overall.unacknowledged,
        "drained": observed["drained"],  # False: the last marker did not arrive in time
        "subscriptions_ended_early": len(ended),
        "end_reasons": sorted(set(ended))[:5],
        "latency_ms": _latency_summary(overall.latencies),
        "latency_since_sent_ms": _latency_summary(overall.since_sent),
        "latency_ms_by_subscriber_server": [_latency_summary(d.latencies) for d in by_server],
        # One event, one server: from its first subscriber receiving it to its last.
        "fan_out_spread_ms_by_server": [_latency_summary(d.spreads()) for d in by_server],
    }
    window = cpu["window_seconds"]
    cpu_us_per_delivery = [
        round(cores * window / d.delivered * 1e6) if d.delivered else None
        for cores, d in zip(cpu["servers"], by_server, strict=True)
    ]
    kib_per_idle_subscription = [
        round((idle - before) / count, 1)
        for before, idle, count in zip(rss["before"], rss["idle"], per_server_subscribers, strict=True)
    ]
    return {
        "mutations": {
            "planned": plan.mutations,
            "acknowledged": len(acked),
            "rejected": sum(1 for m in mutations if m.error and m.answered),
            "unanswered": sum(1 for m in mutations if not m.answered),
            "failures": sorted({m.error for m in mutations if m.error})[:5],
            "with_events": len(overall.mutations_seen),  # applied: at least one subscriber saw its event
            "sent_per_second": round((len(sent) - 1) / (sent[-1] - sent[0]), 2),
            "round_trip_ms": _latency_summary([m.acked - m.sent for m in acked.values()]),
        },
        "delivery": delivery,
        "memory": {
            "subscriptions_per_server": per_server_subscribers,
            "rss_before_mib": [round(kib / 1024, 1) for kib in rss["before"]],
            "rss_idle_mib": [round(kib / 1024, 1) for kib in rss["idle"]],
            "kib_per_idle_subscription": kib_per_idle_subscription,
        },
        "cpu_cores": cpu,
        "events_per_second_by_server": [round(d.delivered / window) for d in by_server],
        # Includes each server's share of the mutations themselves: compare with a run of few subscribers.
        "server_cpu_us_per_event": cpu_us_per_delivery,
        "open_seconds": round(observed["open_seconds"], 1),
        "targets": _targets(plan, delivery, len(acked), cpu_us_per_delivery, kib_per_idle_subscription),
    }


def _targets(
    plan: Plan, delivery: dict[str, Any], acked: int, cpu_us: list[int | None], kib: list[float]
) -> dict[str, dict[str, Any]]:
    """Each of issue 15's targets that applies to this run: its limit, the figure, met or not."""
    targets: dict[str, dict[str, Any]] = {
        "server_cpu_us_per_delivery": {
            "at_most": TARGET_CPU_US_PER_DELIVERY,
            "measured": max((us for us in cpu_us if us is not None), default=None),
        },
        "kib_per_idle_subscription": {"at_most": TARGET_KIB_PER_IDLE_SUBSCRIPTION, "measured": max(kib)},
    }
    p99_limit = TARGET_P99_MS_BY_RATE.get(plan.rate)
    if p99_limit is not None:
        p99 = delivery["latency_since_sent_ms"]["p99"]
        targets["delivery_p99_ms_from_send"] = {"below": p99_limit, "measured": p99}
        targets["lost"] = {"at_most": 0, "measured": delivery["lost"] + delivery["subscriptions_ended_early"]}
        targets["unacknowledged_mutations"] = {"at_most": 0, "measured": plan.mutations - acked}
    for target in targets.values():
        measured = target["measured"]
        target["met"] = measured is not None and (
            measured < target["below"] if "below" in target else measured <= target["at_most"]
        )
    return targets


async def run(plan: Plan, *, redis_url: str | None, profile_dir: Path | None = None) -> dict[str, Any]:
    """Starts the database and the servers, measures `plan`; the report written as JSON."""
    # SIGTERM would end this process at once, leaving its children running: cancel instead, so they are stopped.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    with tempfile.TemporaryDirectory(prefix="taskql-bench-") as tmp:
        run_dir = Path(tmp)
        say("starting SecantusDB, Valkey (unless --redis-url) and the servers")
        # The embedded servers `taskql serve` starts, as processes of their own.
        unset = Settings(_env_file=None, data_dir=run_dir, mongodb_uri=None, redis_url=redis_url)
        with embedded_services(unset) as services:
            assert services.mongodb_uri is not None and services.redis_url is not None
            mongodb_uri, redis_url = services.mongodb_uri, services.redis_url
            machine = environment(PACKAGES, await redis_version(redis_url))
            jwt_secret = secrets.token_urlsafe(48)
            async with contextlib.AsyncExitStack() as stack:
                servers = [
                    await stack.enter_async_context(
                        _server(
                            index,
                            plan,
                            mongodb_uri=mongodb_uri,
                            redis_url=redis_url,
                            jwt_secret=jwt_secret,
                            run_dir=run_dir,
                            profile_dir=profile_dir,
                        )
                    )
                    for index in range(plan.servers)
                ]
                observed = await _measure(plan, servers, run_dir)
            # Read once the servers have stopped: everything they logged is in.
            problems = sum((_log_problems(server.log_path) for server in servers), Counter())
    return {
        "benchmark": "subscriptions",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        **machine,
        "source": _source(plan.source),
        "settings": {
            "subscribers": plan.subscribers,
            "servers": plan.servers,
            "mutations_per_second": plan.rate,
            "duration_seconds": plan.duration,
            "users": plan.users,
            "generator_processes": plan.generators,
            "sockets": "one WebSocket (graphql-transport-ws) per subscription",
            "compression": plan.compression or "none",
            "subscription": TASK_EVENTS,
            "mutation": f"{UPDATE_TASK} over {TASK_POOL} tasks in turn, alternating servers, open loop",
            "ws_max_connections_per_user": plan.connections_per_user,
        },
        **_analyse(plan, observed),
        "server_log_problems": dict(problems.most_common(LOG_PROBLEMS_SHOWN)),
    }


def _source(tree: Path | None) -> dict[str, str]:
    """Which TaskQL the servers ran: this tree or another, at which commit."""
    path = tree or REPO_ROOT
    commit = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {"tree": "this one" if tree is None else str(tree), "commit": commit or "unknown"}


def _table(report: dict[str, Any]) -> str:
    settings, mutations, delivery = report["settings"], report["mutations"], report["delivery"]
    latency, round_trip, cpu = delivery["latency_ms"], mutations["round_trip_ms"], report["cpu_cores"]
    since_sent = delivery["latency_since_sent_ms"]

    def ms_value(value: float | None) -> str:
        return "-" if value is None else f"{value:,.1f}"

    def ms(summary: dict[str, float | None]) -> str:
        return "  ".join(f"{key} {ms_value(summary[key])}" for key in ("p50", "p95", "p99", "max"))

    def numbers(values: list[Any]) -> str:
        return ", ".join("-" if value is None else f"{value:,}" for value in values)

    rows = [
        (
            "setting",
            f"{settings['subscribers']:,} subscribers on {settings['servers']} servers, "
            f"{settings['mutations_per_second']:g} mutations/s for {settings['duration_seconds']:g} s",
        ),
        ("servers' TaskQL", f"{report['source']['tree']} at {report['source']['commit']}"),
        (
            "mutations acknowledged / rejected / unanswered",
            f"{mutations['acknowledged']:,} / {mutations['rejected']:,} / {mutations['unanswered']:,} "
            f"of {mutations['planned']:,} ({mutations['with_events']:,} produced events)",
        ),
        ("mutation round trip (ms)", ms(round_trip)),
        ("delivery latency, mutation sent -> event received (ms)", ms(since_sent)),
        ("delivery latency, mutation ack -> event received (ms)", ms(latency)),
        (
            "one event reaching all of a server's subscribers (ms)",
            "p50 " + ", ".join(ms_value(spread["p50"]) for spread in delivery["fan_out_spread_ms_by_server"]),
        ),
        ("events expected / received", f"{delivery['expected']:,} / {delivery['received']:,}"),
        (
            "lost / duplicates / out of order",
            " / ".join(f"{delivery[key]:,}" for key in ("lost", "duplicates", "out_of_order")),
        ),
        ("events of unanswered mutations", f"{delivery['of_unanswered_mutations']:,}"),
        ("subscriptions ended early", f"{delivery['subscriptions_ended_early']:,}"),
        ("memory per idle subscription, per server (KiB)", numbers(report["memory"]["kib_per_idle_subscription"])),
        ("events sent per second, per server", numbers(report["events_per_second_by_server"])),
        ("server CPU per delivery, per server (us)", numbers(report["server_cpu_us_per_event"])),
        (
            "cores busy: servers | generators | driver | others | all",
            f"{numbers(cpu['servers'])} | {numbers(cpu['generators'])} | {cpu['driver']} | {cpu['others']} | "
            f"{cpu['machine']} of {cpu['machine_cores']}",
        ),
        (
            "server log: warnings, errors, exceptions (JSON for which)",
            f"{sum(report['server_log_problems'].values()):,}",
        ),
    ]
    for name, target in report["targets"].items():
        limit = f"< {target['below']:g}" if "below" in target else f"<= {target['at_most']:g}"
        verdict = "met" if target["met"] else "NOT met"
        rows.append((f"target: {name.replace('_', ' ')} {limit}", f"{target['measured']} ({verdict})"))
    return "\n".join(f"{label:<58}{value}" for label, value in rows)


def _summary(reports: list[dict[str, Any]]) -> str:
    """One line per run, for several rates or trees side by side."""
    lines = ["servers' TaskQL    rate/s  acked       round trip p50/p99 ms  delivery from send p50/p99 ms  lost  "
             "CPU us/delivery  KiB/idle sub"]  # fmt: skip
    for report in reports:
        mutations, delivery = report["mutations"], report["delivery"]
        trip, sent = mutations["round_trip_ms"], delivery["latency_since_sent_ms"]
        lines.append(
            f"{report['source']['commit']:<18} {report['settings']['mutations_per_second']:>6g}  "
            f"{mutations['acknowledged']:>5,}/{mutations['planned']:<5,} {trip['p50']!s:>10} / {trip['p99']!s:<10} "
            f"{sent['p50']!s:>14} / {sent['p99']!s:<14} {delivery['lost']:>5,}  "
            f"{max(us or 0 for us in report['server_cpu_us_per_event']):>15}  "
            f"{max(report['memory']['kib_per_idle_subscription']):>12}"
        )
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[Plan]]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.subscriptions", description="Benchmark live task events under load."
    )
    parser.add_argument("--subscribers", type=int, default=1000, help="(default: %(default)s)")
    parser.add_argument("--servers", type=int, default=2, help="server processes (default: %(default)s)")
    parser.add_argument(
        "--rate",
        type=float,
        nargs="+",
        default=[50.0],
        help="mutations per second; several: one run each (default: %(default)s)",
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of mutations (default: %(default)s)")
    parser.add_argument("--users", type=int, default=20, help="users the subscribers share (default: %(default)s)")
    parser.add_argument(
        "--generators", type=int, default=2, help="subscriber load-generator processes (default: %(default)s)"
    )
    parser.add_argument(
        "--compression",
        choices=("deflate", "none"),
        default="none",
        help="WebSocket permessage-deflate on the servers (WS_PER_MESSAGE_DEFLATE; browsers offer it) "
        "(default: %(default)s, as TaskQL's default)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="another TaskQL tree (a git worktree of an earlier commit): each rate is run with its servers too, first",
    )
    parser.add_argument("--redis-url", help="a Redis to use (default: an embedded Valkey, as `taskql serve` starts)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON report (default: %(default)s)")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run the servers under cProfile and write DIR/server-N.pstats (slows them down: diagnosis only)",
    )
    args = parser.parse_args(argv)
    if (
        min(args.subscribers, args.servers, args.users, args.generators) < 1
        or min(args.rate) <= 0
        or args.duration <= 0
    ):
        parser.error("counts must be at least 1, --rate and --duration positive")
    if args.generators > args.subscribers or min(args.rate) * args.duration < 2:
        parser.error("at least one subscriber per generator, and at least two mutations")
    if args.baseline is not None and not (args.baseline / "taskql" / "__init__.py").is_file():
        parser.error(f"--baseline {args.baseline}: not a TaskQL tree")
    sources = [None] if args.baseline is None else [args.baseline.resolve(), None]
    plans = [
        Plan(
            subscribers=args.subscribers,
            servers=args.servers,
            rate=rate,
            duration=args.duration,
            users=args.users,
            generators=args.generators,
            compression=None if args.compression == "none" else args.compression,
            source=source,
        )
        for rate in args.rate
        for source in sources
    ]
    return args, plans


def main(argv: list[str] | None = None) -> None:
    args, plans = _parse_args(argv)
    reports = []
    for plan in plans:
        try:
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
            reports.append(asyncio.run(run(plan, redis_url=args.redis_url, profile_dir=args.profile)))
        except BenchError as exc:
            raise SystemExit(f"benchmark failed: {exc}") from exc
        except asyncio.CancelledError:
            raise SystemExit("benchmark stopped by SIGTERM") from None
        print(_table(reports[-1]))
    if len(reports) > 1:
        print(_summary(reports))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    written = reports[0] if len(reports) == 1 else {"runs": reports}
    args.output.write_text(json.dumps(written, indent=2) + "\n")
    say(f"wrote {args.output}")


if __name__ == "__main__":
    main()
