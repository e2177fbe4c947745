"""The laptop default: with no MONGODB_URI and no REDIS_URL, `taskql serve` runs an embedded SecantusDB
and an embedded Valkey as supervised, durable child processes that all its workers share."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis
from redis.exceptions import AuthenticationError, ResponseError

from taskql.persisted_queries import document_hash
from tests.conftest import PASSWORD
from tests.live import LiveServer, Subscriber, User, post
from tests.test_subscriptions import create_project, until_live

REFRESH = "mutation($t: String!) { refreshToken(input: {refreshToken: $t}) { accessToken userErrors { code } } }"
REGISTER = """
mutation($i: RegisterInput!) { register(input: $i) { accessToken refreshToken user { email } userErrors { code } } }
"""
VIEWER = "query { viewer { email } }"
CREATE_TASK = """
mutation($p: ID!, $t: String!) { createTask(input: {projectId: $p, title: $t}) { task { id } userErrors { code } } }
"""
TASK_PAGE = """
query($p: ID!, $after: String) {
  tasks(projectId: $p, first: 100, after: $after) { edges { node { id } } pageInfo { hasNextPage endCursor } }
}
"""


def embedded_server(data_dir: Path, **settings: Any) -> LiveServer:
    """`taskql serve` as `make run` starts it: no database or Redis of its own."""
    return LiveServer(mongodb_uri=None, redis_url=None, database="taskql", data_dir=data_dir, **settings)


def children(pid: int) -> dict[int, str]:
    """The command lines of a process's children, by pid."""
    found = {}
    for thread in Path(f"/proc/{pid}/task").iterdir():
        for child in (thread / "children").read_text().split():
            found[int(child)] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return found


def alive(pid: int) -> bool:
    """Running (not a zombie that nobody has reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def child_running(server: LiveServer, program: str) -> int:
    [pid] = [pid for pid, command in children(server.pid).items() if program in command]
    return pid


async def readiness_until(server: LiveServer, status: int, timeout: float) -> float:
    """Seconds until /readyz answers `status` (polled every 0.1 s); fails after `timeout`."""
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as http:
        while (await http.get("/readyz")).status_code != status:
            assert time.monotonic() - started < timeout, f"/readyz did not answer {status} within {timeout} s"
            await asyncio.sleep(0.1)
    return time.monotonic() - started


def sockets_accepted(pid: int, port: int) -> int:
    """How many established TCP connections to `port` the process holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, state, inode = int(fields[1].rpartition(":")[2], 16), fields[3], fields[9]
        count += local_port == port and state == "01" and inode in inodes
    return count


async def test_serve_runs_a_valkey_only_its_user_can_reach_and_restarts_it_when_it_dies(tmp_path: Path) -> None:
    server = embedded_server(tmp_path)
    server.start()
    try:
        processes = children(server.pid)
        valkey = child_running(server, "valkey-server")
        address = processes[valkey].split()[-1]  # Valkey shows its address in its process title
        port = int(address.rpartition(":")[2])
        with pytest.raises((AuthenticationError, ResponseError), match="(?i)auth"):
            Redis(host="127.0.0.1", port=port, socket_timeout=1).ping()

        os.kill(valkey, signal.SIGKILL)
        unready_within = await readiness_until(server, 503, timeout=5)
        await readiness_until(server, 200, timeout=15)
        restarted = child_running(server, "valkey-server")
        restarted_address = children(server.pid)[restarted].split()[-1]
        await User.register(server, "After")  # sign-ups need Redis (the login throttle): it is back
    finally:
        server.stop()

    assert unready_within < 5
    assert address.startswith("127.0.0.1:")  # loopback only
    assert restarted != valkey and restarted_address == address  # the same port (and data)
    password = (tmp_path / "valkey-password").read_text().strip()
    assert len(password) >= 32
    assert not any(password in command for command in processes.values())  # `ps` shows every user these
    assert (tmp_path / "valkey-password").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "valkey" / "valkey.conf").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "valkey").stat().st_mode & 0o777 == (tmp_path / "db").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "valkey" / "appendonlydir").is_dir()  # durable: an append-only file
    assert any("secantus" in command and "--sync-on-commit" in command for command in processes.values())
    assert [command for pid, command in processes.items() if alive(pid)] == []  # stopped with it


def test_the_embedded_services_end_with_serve_even_when_it_is_killed(tmp_path: Path) -> None:
    server = embedded_server(tmp_path)
    server.start()
    processes = children(server.pid)
    os.kill(server.pid, signal.SIGKILL)  # no chance to stop them itself
    server.wait(10)
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in processes) and time.monotonic() < deadline:
        time.sleep(0.1)

    assert len(processes) == 2
    assert [command for pid, command in processes.items() if alive(pid)] == []


async def test_a_restart_of_serve_keeps_sign_ins_and_persisted_queries(tmp_path: Path) -> None:
    email = f"laptop-{uuid.uuid4().hex[:8]}@example.com"
    persisted = {"persistedQuery": {"version": 1, "sha256Hash": document_hash(VIEWER)}}
    first = embedded_server(tmp_path)
    first.start()
    try:
        registered = (await post(first, REGISTER, {"i": {"email": email, "name": "Ada", "password": PASSWORD}}))[
            "register"
        ]
        async with httpx.AsyncClient(base_url=first.base_url) as http:
            kept = await http.post("/graphql", json={"query": VIEWER, "extensions": persisted})
    finally:
        first.stop()
    again = embedded_server(tmp_path)
    again.start()
    try:
        refreshed = (await post(again, REFRESH, {"t": registered["refreshToken"]}))["refreshToken"]
        async with httpx.AsyncClient(base_url=again.base_url) as http:
            recalled = await http.post(
                "/graphql",
                json={"extensions": persisted},
                headers={"authorization": f"Bearer {registered['accessToken']}"},
            )
    finally:
        again.stop()

    assert kept.status_code == 200 and "errors" not in kept.json()
    assert refreshed["userErrors"] == [] and refreshed["accessToken"]
    assert recalled.json() == {"data": {"viewer": {"email": email}}}  # the document, by its hash alone


async def test_every_acknowledged_write_survives_the_database_being_killed(tmp_path: Path) -> None:
    server = embedded_server(tmp_path)
    server.start()
    try:
        owner = await User.register(server, "Owner")
        project_id = await create_project(owner)
        database = child_running(server, "secantus")
        acknowledged: list[str] = []
        failed = 0

        async def create(http: httpx.AsyncClient, n: int) -> None:
            nonlocal failed
            try:
                response = await http.post(
                    "/graphql", json={"query": CREATE_TASK, "variables": {"p": project_id, "t": f"t{n}"}}
                )
                task = (response.json().get("data") or {}).get("createTask") or {}
            except httpx.HTTPError:
                task = {}
            if task.get("task"):
                acknowledged.append(task["task"]["id"])
            else:
                failed += 1

        headers = {"authorization": f"Bearer {owner.token}"}
        async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=60) as http:
            for batch in range(50):  # 200 calls, 4 at a time; SIGKILL once 60 have started
                if batch == 15:
                    os.kill(database, signal.SIGKILL)
                await asyncio.gather(*(create(http, 4 * batch + i) for i in range(4)))
        await readiness_until(server, 200, timeout=30)
        stored: set[str] = set()
        after = None
        while True:
            page = (await owner.execute(TASK_PAGE, {"p": project_id, "after": after}))["tasks"]
            stored |= {edge["node"]["id"] for edge in page["edges"]}
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        restarted = child_running(server, "secantus")
    finally:
        server.stop()

    assert restarted != database
    assert len(acknowledged) + failed == 200 and len(acknowledged) > 100
    assert set(acknowledged) <= stored  # not one acknowledged task lost


async def test_two_workers_share_the_embedded_services(tmp_path: Path) -> None:
    server = embedded_server(tmp_path, workers=2)
    server.start()
    try:
        workers = [pid for pid, command in children(server.pid).items() if "spawn_main" in command]
        owner = await User.register(server, "Owner")
        project_id = await create_project(owner)
        async with contextlib.AsyncExitStack() as stack:
            subscribers: list[Subscriber] = []
            # The kernel spreads connections over the workers: open at least 10, more until both hold some.
            while len(subscribers) < 10 or min(sockets_accepted(pid, server.port) for pid in workers) == 0:
                assert len(subscribers) < 40, "every connection went to one worker"
                subscribers.append(await stack.enter_async_context(Subscriber(server, owner.token, project_id)))
                await until_live(owner, project_id, subscribers[-1])
            spread = [sockets_accepted(pid, server.port) for pid in workers]
            task_id = (await owner.execute(CREATE_TASK, {"p": project_id, "t": "for everyone"}))["createTask"]["task"][
                "id"
            ]
            received = [await received_task(subscriber, task_id) for subscriber in subscribers]
    finally:
        server.stop()

    assert len(workers) == 2 and all(count > 0 for count in spread)
    assert received == [True] * len(subscribers)


async def received_task(subscriber: Subscriber, task_id: str) -> bool:
    """Waits (up to 15 s) until the subscriber got the creation of the task."""
    while not any(event["taskId"] == task_id for event in subscriber.events):
        await subscriber.wait_for(len(subscriber.events) + 1)
    return True
