"""Background jobs under load (issue 17): from a task assignment to its assignee's live notification and email.

`python -m bench.jobs` (or `make bench-jobs`) starts the embedded database and Valkey, then for each
configuration (`--workers 0`: the server runs the jobs in-process; `--workers N`: N separate
`taskql worker` processes and none in the server) a TaskQL server, its workers and an SMTP inbox
(aiosmtpd, in this process) on a database and a job queue of its own. It registers an owner and
`--members` members of one project, subscribes every member to `notificationAdded` (one WebSocket
each, graphql-transport-ws), then creates `--tasks` tasks at `--rate` a second (open loop), each with
a unique title and assigned to the members in turn. Each assignment queues a `notify` job (the
notification, published live) which queues a `send_email` job ("Owner assigned you: <title>").

Per configuration it reports the mutations' round trips, the latency from each mutation's send to its
notification and to its email, the notifications and emails lost or duplicated, the jobs completed per
second, and the CPU per assignment of the server, the workers and the database with Redis.
`--baseline DIR` also measures another TaskQL tree (one without jobs) at the same rate: the mutation
round trip and the server CPU only. Prints a table; writes bench/results/jobs_issue17.json.

    .venv/bin/python -m bench.jobs [--rate 20] [--tasks 400] [--members 20] [--workers 0 1] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import os
import re
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
from aiosmtpd.controller import Controller
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from bench.common import BenchError, environment, log_tail, redis_version, say, stop_process, wait_until_serving
from bench.http import _taskql_env
from bench.loadgen import percentile
from taskql.embedded import embedded_services
from taskql.embedded.child import free_port
from taskql.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "jobs_issue17.json"
PACKAGES = ("strawberry-graphql", "starlette", "uvicorn", "pymongo", "redis", "saq", "secantusdb", "aiosmtpd")
PASSWORD = "correct horse battery staple"
OWNER = "Owner"  # the actor's name in every email's subject
SUBJECT = re.compile(rf"^{OWNER} assigned you: (.+)$")

REGISTER = "mutation($i: RegisterInput!) { register(input: $i) { accessToken user { id } userErrors { code } } }"
CREATE_PROJECT = "mutation($i: CreateProjectInput!) { createProject(input: $i) { project { id } userErrors { code } } }"
ADD_MEMBER = "mutation($i: AddProjectMemberInput!) { addProjectMember(input: $i) { userErrors { code message } } }"
CREATE_TASK = "mutation($i: CreateTaskInput!) { createTask(input: $i) { task { id } userErrors { code message } } }"
NOTIFICATION_ADDED = "subscription { notificationAdded { id kind task { id title } } }"
PROTOCOL = Subprotocol("graphql-transport-ws")

REQUEST_TIMEOUT = 30.0  # a mutation unanswered for this long counts as failed
SETUP_CONCURRENCY = 5
PROBE_EVERY = 3.0  # seconds before members still without a probe notification get another probe task
PROBE_ROUNDS = 10
STALL_TIMEOUT = 20.0  # after the last mutation: give up once nothing more arrived for this long
DRAIN_TIMEOUT = 90.0  # and in any case after this long
DUPLICATE_SETTLE = 2.0  # seconds to wait after the last expected arrival, for duplicates
POLL_INTERVAL = 0.1
PROGRESS_INTERVAL = 5.0
JOB_METRIC = re.compile(r'^taskql_jobs_total\{(?=.*job="(\w+)")(?=.*outcome="(\w+)").*\}\s+([0-9.e+]+)$', re.MULTILINE)


@dataclass(frozen=True)
class Plan:
    rate: float
    tasks: int
    members: int


@dataclass
class Assignment:
    number: int
    title: str
    member: int
    sent: float = 0.0  # time.perf_counter() before the request
    acked: float | None = None  # once its successful answer was read
    error: str | None = None
    notified: list[float] = field(default_factory=list)  # arrival of each copy of its notification
    emailed: list[float] = field(default_factory=list)  # arrival of each copy of its email


class Inbox:
    """aiosmtpd's handler (it runs in its own thread): the subject, recipient and arrival of every message."""

    def __init__(self) -> None:
        self.received: list[tuple[float, str, str]] = []  # (time.perf_counter(), subject, To)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        arrived = time.perf_counter()
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.received.append((arrived, str(message["Subject"]), str(message["To"])))
        return "250 2.0.0 OK"


@contextlib.contextmanager
def smtp_inbox() -> Any:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, f"smtp://127.0.0.1:{port}"
    finally:
        controller.stop()


# CPU seconds from /proc (no psutil): whole process trees, so a server's or worker's children count too.


def _processes() -> dict[int, tuple[int, float]]:
    """Every process: pid -> (parent pid, CPU seconds so far)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                # After the command name (which may hold spaces): state, ppid, ..., utime (14th), stime (15th).
                fields = Path(entry.path, "stat").read_text().rpartition(")")[2].split()
                found[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    return found


def _tree(processes: dict[int, tuple[int, float]], root: int) -> set[int]:
    members, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _) in processes.items() if ppid == parent and pid not in members]
        members.update(children)
        frontier.extend(children)
    return members & processes.keys()


def _cpu(roles: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds of each role's process trees; "services": this process's other children (database, Valkey)."""
    processes = _processes()
    trees = {role: set().union(*(_tree(processes, pid) for pid in pids)) for role, pids in roles.items()}
    taken = set().union(*trees.values()) | {os.getpid()}
    trees["services"] = _tree(processes, os.getpid()) - taken
    return {role: sum(processes[pid][1] for pid in pids) for role, pids in trees.items()}


@dataclass
class Process:
    process: asyncio.subprocess.Process
    log_path: Path


@contextlib.asynccontextmanager
async def _started(name: str, command: Sequence[str], env: dict[str, str], run_dir: Path) -> AsyncIterator[Process]:
    log_path = run_dir / f"{name}.log"
    with log_path.open("wb") as log:
        # cwd=run_dir: no `.env` of a working tree changes the settings.
        process = await asyncio.create_subprocess_exec(
            *command, cwd=run_dir, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
        )
    try:
        yield Process(process, log_path)
    finally:
        await stop_process(process)


async def _wait_for_metrics(worker: Process, url: str) -> None:
    """A worker serves /metrics once it has started (its queue fills meanwhile anyway)."""
    async with httpx.AsyncClient(timeout=1.0) as http:
        for _ in range(300):
            if worker.process.returncode is not None:
                raise BenchError(f"a worker exited early:\n{log_tail(worker.log_path)}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise BenchError(f"a worker did not start:\n{log_tail(worker.log_path)}")


async def _job_counts(http: httpx.AsyncClient, urls: list[str]) -> Counter[str] | None:
    """Job attempts so far by "job/outcome", summed over the processes' /metrics; None if one is unreadable."""
    counts: Counter[str] = Counter()
    for url in urls:
        try:
            text = (await http.get(url)).text
        except httpx.HTTPError:
            return None
        for job, outcome, value in JOB_METRIC.findall(text):
            counts[f"{job}/{outcome}"] += round(float(value))
    return counts


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


@dataclass(frozen=True)
class Team:
    owner_token: str
    tokens: list[str]  # the members'
    member_ids: list[str]
    emails: list[str]
    project_id: str


async def _set_up(http: httpx.AsyncClient, members: int, label: str) -> Team:
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def register(name: str, address: str) -> dict[str, Any]:
        async with gate:
            return await _graphql(http, REGISTER, {"i": {"email": address, "name": name, "password": PASSWORD}})

    emails = [f"member-{n}-{label}@example.com" for n in range(members)]
    owner, *registered = await asyncio.gather(
        register(OWNER, f"owner-{label}@example.com"),
        *(register(f"Member {n}", address) for n, address in enumerate(emails)),
    )
    token = owner["accessToken"]
    project_id = (await _graphql(http, CREATE_PROJECT, {"i": {"name": "Jobs"}}, token))["project"]["id"]
    for address in emails:  # one at a time: each rewrites the project's member list
        await _graphql(http, ADD_MEMBER, {"i": {"projectId": project_id, "email": address, "role": "EDITOR"}}, token)
    return Team(
        token,
        [r["accessToken"] for r in registered],
        [r["user"]["id"] for r in registered],
        emails,
        project_id,
    )


class Subscribers:
    """One notificationAdded subscription per member; arrivals stamped before parsing."""

    def __init__(self, ws_url: str, team: Team) -> None:
        self.ws_url = ws_url
        self.team = team
        self.by_title: dict[str, Assignment] = {}
        self.misrouted = 0  # a notification for someone else's assignment
        self.unknown = 0  # TASK_ASSIGNED notifications of titles the bench did not send
        self.probes: dict[int, set[str]] = {n: set() for n in range(len(team.tokens))}  # probe titles received
        self.errors: list[str] = []
        self._connections: list[ClientConnection] = []
        self._readers: list[asyncio.Task[None]] = []
        self._stopping = False

    async def open(self) -> None:
        self._connections = await asyncio.gather(*(self._open(token) for token in self.team.tokens))
        self._readers = [asyncio.create_task(self._read(n, c)) for n, c in enumerate(self._connections)]

    async def _open(self, token: str) -> ClientConnection:
        connection = await connect(self.ws_url, subprotocols=[PROTOCOL], proxy=None)
        init = {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
        await connection.send(orjson.dumps(init).decode())  # text frames: graphql-transport-ws refuses binary
        ack = orjson.loads(await connection.recv())
        if ack.get("type") != "connection_ack":
            raise BenchError(f"expected connection_ack, got {ack}")
        subscribe = {"id": "1", "type": "subscribe", "payload": {"query": NOTIFICATION_ADDED}}
        await connection.send(orjson.dumps(subscribe).decode())
        return connection

    async def _read(self, member: int, connection: ClientConnection) -> None:
        try:
            async for raw in connection:
                arrived = time.perf_counter()
                message = orjson.loads(raw)
                kind = message.get("type")
                if kind == "ping":
                    await connection.send('{"type":"pong"}')
                elif kind == "next" and not message["payload"].get("errors"):
                    notification = message["payload"]["data"]["notificationAdded"]
                    if notification["kind"] == "TASK_ASSIGNED" and notification["task"] is not None:
                        self._arrived(member, notification["task"]["title"], arrived)
                elif kind in ("next", "error", "complete"):
                    self.errors.append(f"member {member}: subscription ended: {raw[:300]!r}")
                    return
        except ConnectionClosed as exc:
            if not self._stopping:
                self.errors.append(f"member {member}: connection closed: {exc}")

    def _arrived(self, member: int, title: str, arrived: float) -> None:
        if title.startswith("probe "):
            self.probes[member].add(title)
        elif (assignment := self.by_title.get(title)) is None:
            self.unknown += 1
        elif assignment.member != member:
            self.misrouted += 1
        else:
            assignment.notified.append(arrived)

    async def close(self) -> None:
        self._stopping = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(c.close() for c in self._connections)), 10)
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


async def _create(http: httpx.AsyncClient, team: Team, assignment: Assignment) -> None:
    task = {"projectId": team.project_id, "title": assignment.title, "assigneeId": team.member_ids[assignment.member]}
    body = orjson.dumps({"query": CREATE_TASK, "variables": {"i": task}})
    headers = {"authorization": f"Bearer {team.owner_token}", "content-type": "application/json"}
    assignment.sent = time.perf_counter()
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            response = await http.post("/graphql", content=body, headers=headers)
    except (httpx.HTTPError, TimeoutError) as exc:
        assignment.error = f"no answer: {exc!r}"
        return
    answered = time.perf_counter()
    if response.status_code == 200:
        answer = orjson.loads(response.content)
        if not answer.get("errors") and not answer["data"]["createTask"]["userErrors"]:
            assignment.acked = answered
            return
    assignment.error = f"HTTP {response.status_code}: {response.text[:300]}"


async def _drive(http: httpx.AsyncClient, team: Team, assignments: list[Assignment], rate: float) -> None:
    """Sends the createTask mutations at `rate` a second, on schedule whatever the answers take (open loop)."""
    requests = []
    started = time.perf_counter()
    next_report = started + PROGRESS_INTERVAL
    for assignment in assignments:
        await asyncio.sleep(max(0.0, started + assignment.number / rate - time.perf_counter()))
        requests.append(asyncio.create_task(_create(http, team, assignment)))
        if time.perf_counter() >= next_report:
            next_report += PROGRESS_INTERVAL
            delivered = sum(1 for a in assignments if a.notified)
            say(f"  {time.perf_counter() - started:3.0f} s: {len(requests)} sent, {delivered} notified")
    await asyncio.gather(*requests)


def _collect_emails(inbox: Inbox, seen: int, by_title: dict[str, Assignment], team: Team) -> tuple[int, int]:
    """Files the inbox's messages from `seen` on; (messages now seen, emails to the wrong member)."""
    misaddressed = 0
    received = inbox.received[seen:]
    for arrived, subject, to in received:
        match = SUBJECT.match(subject)
        assignment = by_title.get(match[1]) if match else None
        if assignment is None:
            continue
        if team.emails[assignment.member] not in to:
            misaddressed += 1
        else:
            assignment.emailed.append(arrived)
    return seen + len(received), misaddressed


async def _probe(http: httpx.AsyncClient, team: Team, subscribers: Subscribers, inbox: Inbox, label: str) -> None:
    """A task assigned to each member until every member's subscription has delivered one: the server says
    nothing when a subscription starts. Also the warm-up of every path (jobs, SMTP, caches)."""
    sent: dict[int, list[str]] = {n: [] for n in range(len(team.tokens))}
    for round_number in range(PROBE_ROUNDS):
        waiting = [n for n, titles in subscribers.probes.items() if not titles]
        if not waiting:
            break
        for member in waiting:
            title = f"probe {label} {member} {round_number}"
            sent[member].append(title)
            task = {"projectId": team.project_id, "title": title, "assigneeId": team.member_ids[member]}
            await _graphql(http, CREATE_TASK, {"i": task}, team.owner_token)
        deadline = time.perf_counter() + PROBE_EVERY
        while time.perf_counter() < deadline and not all(subscribers.probes.values()):
            await asyncio.sleep(POLL_INTERVAL)
    if not all(subscribers.probes.values()) or subscribers.errors:
        raise BenchError(f"the probe notifications did not reach every member: {subscribers.errors[:3]}")
    expected = sum(len(titles) for titles in sent.values())
    deadline = time.perf_counter() + 30
    while sum(1 for _, subject, _ in inbox.received if ": probe " in subject) < expected:
        if time.perf_counter() > deadline:
            raise BenchError("the probe emails did not all arrive within 30 s")
        await asyncio.sleep(POLL_INTERVAL)


async def _drain(
    assignments: list[Assignment], inbox: Inbox, seen: int, team: Team, by_title: dict[str, Assignment]
) -> None:
    """Waits for the notification and email of every acknowledged assignment, or until nothing has arrived
    for STALL_TIMEOUT; files the inbox's messages from `seen` on meanwhile."""
    expected = [a for a in assignments if a.acked is not None]
    started = last_progress = time.perf_counter()
    arrived = -1
    while True:
        seen, _ = _collect_emails(inbox, seen, by_title, team)
        now_arrived = sum(len(a.notified) + len(a.emailed) for a in expected)
        if all(a.notified and a.emailed for a in expected):
            break
        now = time.perf_counter()
        if now_arrived != arrived:
            arrived, last_progress = now_arrived, now
        elif now - last_progress > STALL_TIMEOUT or now - started > DRAIN_TIMEOUT:
            say(f"warning: gave up waiting after {now - started:.0f} s: what has not arrived counts as lost")
            break
        await asyncio.sleep(POLL_INTERVAL)


def _ms(values: list[float], fraction: float) -> float | None:
    return round(percentile(sorted(values), fraction) * 1000, 1) if values else None


def _latency(values: list[float]) -> dict[str, Any]:
    return {
        "p50_ms": _ms(values, 0.50),
        "p99_ms": _ms(values, 0.99),
        "max_ms": round(max(values) * 1000, 1) if values else None,
    }


def _round_trips(assignments: list[Assignment]) -> dict[str, Any]:
    acked = [a for a in assignments if a.acked is not None]
    errors = Counter(a.error for a in assignments if a.error)
    return {
        "mutations_sent": len(assignments),
        "mutations_acknowledged": len(acked),
        "mutation_errors": dict(errors.most_common(5)),
        "mutation_round_trip": _latency([a.acked - a.sent for a in acked if a.acked is not None]),
        "sending_seconds": round(max(a.sent for a in assignments) - min(a.sent for a in assignments), 2),
    }


def _label(workers: int | None) -> str:
    return "baseline" if workers is None else f"workers-{workers}"


async def run_configuration(
    plan: Plan,
    services: Settings,
    inbox: Inbox,
    smtp_url: str,
    run_dir: Path,
    *,
    workers: int | None,
    source: Path | None,
) -> dict[str, Any]:
    """`workers`: separate worker processes (0: in the server; None: the baseline, which has no jobs)."""
    label = _label(workers)
    config_dir = run_dir / label
    config_dir.mkdir()
    database = f"taskql_bench_jobs_{label.replace('-', '_')}"
    env = _taskql_env(
        services,
        config_dir,
        TASKQL_ENV="development",
        MONGODB_DATABASE=database,
        JOBS_QUEUE=f"bench-{label}-{os.getpid()}",  # nothing left over from another configuration or run
        SMTP_URL=smtp_url,
        JOBS_IN_PROCESS=str(workers == 0).lower(),
        LOGIN_MAX_FAILURES="1000",  # the registrations come together, from one address
    )
    env.pop("METRICS_PORT", None)  # the server's /metrics on its API port
    if source is not None:
        env["PYTHONPATH"] = str(source)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    async with contextlib.AsyncExitStack() as stack:
        say(f"{label}: starting the server" + (f" and {workers} worker(s)" if workers else ""))
        server = await stack.enter_async_context(
            _started(f"{label}-server", [sys.executable, "-m", "taskql", "serve", "--port", str(port)], env, config_dir)
        )
        await wait_until_serving(server.process, base_url, server.log_path)
        metrics_urls = [f"{base_url}/metrics"] if workers == 0 else []
        worker_pids = []
        for n in range(workers or 0):
            metrics_port = free_port()
            worker = await stack.enter_async_context(
                _started(
                    f"{label}-worker-{n}",
                    [sys.executable, "-m", "taskql", "worker"],
                    {**env, "METRICS_PORT": str(metrics_port)},
                    config_dir,
                )
            )
            metrics_urls.append(f"http://127.0.0.1:{metrics_port}/metrics")
            await _wait_for_metrics(worker, metrics_urls[-1])
            worker_pids.append(worker.process.pid)
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200, keepalive_expiry=2.0)
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT, limits=limits)
        )

        say(f"{label}: registering an owner and {plan.members} members")
        team = await _set_up(http, plan.members, label)
        assignments = [
            Assignment(number=n, title=f"{label} task {n}", member=n % plan.members) for n in range(plan.tasks)
        ]
        by_title = {a.title: a for a in assignments}
        subscribers: Subscribers | None = None
        if workers is not None:
            subscribers = Subscribers(f"ws://127.0.0.1:{port}/graphql", team)
            subscribers.by_title = by_title
            stack.push_async_callback(subscribers.close)
            await subscribers.open()
            say(f"{label}: {plan.members} subscriptions open; probing them")
            await _probe(http, team, subscribers, inbox, label)
        else:  # the same warm-up, without notifications to wait for
            for n in range(plan.members):
                task = {"projectId": team.project_id, "title": f"probe {n}", "assigneeId": team.member_ids[n]}
                await _graphql(http, CREATE_TASK, {"i": task}, team.owner_token)

        roles = {"server": [server.process.pid], "workers": worker_pids}
        jobs_before = await _job_counts(http, metrics_urls) if workers is not None else None
        inbox_seen = len(inbox.received)
        cpu_before = _cpu(roles)
        say(f"{label}: {plan.tasks} assignments at {plan.rate:g}/s")
        await _drive(http, team, assignments, plan.rate)
        if workers is not None:
            say(f"{label}: waiting for the notifications and emails still in flight")
            await _drain(assignments, inbox, inbox_seen, team, by_title)
        cpu_after = _cpu(roles)
        jobs_after = await _job_counts(http, metrics_urls) if workers is not None else None
        misaddressed = 0
        if workers is not None:
            await asyncio.sleep(DUPLICATE_SETTLE)  # the subscriptions stay open meanwhile
            for assignment in assignments:  # the emails again, from the start: with any late duplicates
                assignment.emailed.clear()
            misaddressed = _collect_emails(inbox, inbox_seen, by_title, team)[1]
        problems = _log_problems(
            [server.log_path, *(config_dir / f"{label}-worker-{n}.log" for n in range(workers or 0))]
        )

    acked = [a for a in assignments if a.acked is not None]
    result: dict[str, Any] = {
        "workers": workers,
        "source": str(source) if source else None,
        **_round_trips(assignments),
    }
    cpu = {role: cpu_after[role] - cpu_before[role] for role in cpu_before}
    per = max(len(acked), 1)
    result["cpu_ms_per_assignment"] = {role: round(seconds * 1000 / per, 2) for role, seconds in cpu.items()}
    result["cpu_ms_per_assignment"]["server_and_workers"] = round((cpu["server"] + cpu["workers"]) * 1000 / per, 2)
    result["log_problems"] = problems
    if workers is None or subscribers is None:
        return result
    first_sent = min(a.sent for a in assignments)
    arrivals = [t for a in acked for t in (*a.notified, *a.emailed)]
    window = (max(arrivals) - first_sent) if arrivals else 0.0
    jobs = None
    if jobs_before is not None and jobs_after is not None:
        jobs = {
            key: jobs_after[key] - jobs_before[key] for key in sorted(jobs_after) if jobs_after[key] - jobs_before[key]
        }
    completed = sum(v for k, v in (jobs or {}).items() if k in ("notify/complete", "send_email/complete"))
    result.update(
        {
            "notification_latency_from_send": _latency([a.notified[0] - a.sent for a in acked if a.notified]),
            "email_latency_from_send": _latency([a.emailed[0] - a.sent for a in acked if a.emailed]),
            "notification_latency_from_ack": _latency(
                [a.notified[0] - a.acked for a in acked if a.notified and a.acked]
            ),
            "notifications_lost": sum(1 for a in acked if not a.notified),
            "notifications_duplicated": sum(len(a.notified) - 1 for a in acked if len(a.notified) > 1),
            "notifications_misrouted": subscribers.misrouted,
            "emails_lost": sum(1 for a in acked if not a.emailed),
            "emails_duplicated": sum(len(a.emailed) - 1 for a in acked if len(a.emailed) > 1),
            "emails_misaddressed": misaddressed,
            "subscription_errors": subscribers.errors[:5],
            "window_seconds": round(window, 2),
            "job_attempts": jobs,
            # notify and send_email jobs completed, from the first send to the last arrival.
            "jobs_per_second": round(completed / window, 1) if window and jobs is not None else None,
        }
    )
    return result


LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ (?:WARNING|ERROR|CRITICAL) .*|^(?:WARNING|ERROR|CRITICAL):\s.*")
VARYING = re.compile(r"\b[0-9a-f]{24,32}\b|-?\d+(?:\.\d+)?")


def _log_problems(paths: list[Path]) -> dict[str, int]:
    """What the processes logged at WARNING and above, ids and numbers masked; the most frequent few."""
    problems: Counter[str] = Counter()
    for path in paths:
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            if LOG_RECORD.match(line):
                problems[VARYING.sub("#", line.split(" ", 2)[2] if line[0].isdigit() else line)[:200]] += 1
    return dict(problems.most_common(5))


async def run(plan: Plan, workers: list[int], baseline: Path | None) -> dict[str, Any]:
    configurations: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="taskql-bench-jobs-") as tmp, smtp_inbox() as (inbox, smtp_url):
        run_dir = Path(tmp)
        unset = Settings(_env_file=None, data_dir=run_dir / "services", mongodb_uri=None, redis_url=None)
        with embedded_services(unset) as services:
            assert services.redis_url is not None
            machine = environment(PACKAGES, await redis_version(services.redis_url))
            runs: list[tuple[int | None, Path | None]] = [(n, None) for n in workers]
            if baseline is not None:
                runs.append((None, baseline))
            for count, source in runs:
                configurations[_label(count)] = await run_configuration(
                    plan, services, inbox, smtp_url, run_dir, workers=count, source=source
                )
    return {
        "benchmark": "jobs",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        **machine,
        "settings": {"rate_per_second": plan.rate, "tasks": plan.tasks, "members": plan.members},
        "configurations": configurations,
    }


def _cell(latency: dict[str, Any] | None, keys: Sequence[str] = ("p50_ms", "p99_ms", "max_ms")) -> str:
    if not latency or latency.get(keys[0]) is None:
        return "–"
    return " / ".join(f"{latency[key]:,.0f}" if latency[key] >= 100 else f"{latency[key]:.1f}" for key in keys)


def table(report: dict[str, Any]) -> str:
    rows = [
        "| configuration | mutations acked | mutation p50 / p99 ms | notification p50 / p99 / max ms "
        "| email p50 / p99 / max ms | lost (notif. / email) | duplicated (notif. / email) | jobs/s "
        "| CPU ms per assignment: server + workers (db + Redis) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in report["configurations"].items():
        cpu = row["cpu_ms_per_assignment"]
        jobs = row.get("jobs_per_second")
        has_jobs = row["workers"] is not None
        rows.append(
            f"| {name} | {row['mutations_acknowledged']} / {row['mutations_sent']} "
            f"| {_cell(row['mutation_round_trip'], ('p50_ms', 'p99_ms'))} "
            f"| {_cell(row.get('notification_latency_from_send'))} | {_cell(row.get('email_latency_from_send'))} "
            + (
                f"| {row['notifications_lost']} / {row['emails_lost']} "
                f"| {row['notifications_duplicated']} / {row['emails_duplicated']} "
                if has_jobs
                else "| – | – "
            )
            + f"| {'–' if jobs is None else jobs} "
            f"| {cpu['server']:.1f} + {cpu['workers']:.1f} = {cpu['server_and_workers']:.1f} ({cpu['services']:.1f}) |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.jobs", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="createTask mutations per second")
    parser.add_argument("--tasks", type=int, default=400, help="assignments per configuration")
    parser.add_argument("--members", type=int, default=20, help="assignees, each subscribed to notificationAdded")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[0, 1],
        help="`taskql worker` processes; 0: the server's in-process worker (default: 0 then 1)",
    )
    parser.add_argument("--baseline", type=Path, help="another TaskQL tree (without jobs): mutation round trip only")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON report (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.tasks < 1 or args.members < 1 or min(args.workers) < 0:
        parser.error("--rate must be positive, --tasks and --members at least 1, --workers at least 0")
    if len(set(args.workers)) != len(args.workers):
        parser.error("--workers: each count once")
    try:
        report = asyncio.run(run(Plan(args.rate, args.tasks, args.members), args.workers, args.baseline))
    except BenchError as exc:
        raise SystemExit(f"benchmark failed: {exc}") from exc
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    print(table(report))
    say(f"wrote {args.output}")


if __name__ == "__main__":
    main()
