"""The README's frontend snippets (Apollo Client, urql, graphql-ws), run as written with Node against live servers."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live import LiveServer, User
from tests.test_subscriptions import NODE_CLIENT, create_project, create_task, node_client, start_server

README = Path(__file__).resolve().parent.parent / "README.md"
SNIPPET = re.compile(r"```js\n// clients/(?P<name>[\w-]+\.mjs)\n(?P<code>.*?)```", re.DOTALL)
HARNESS = NODE_CLIENT / "clients.mjs"
__all__ = ["node_client", "start_server"]  # fixtures, shared with test_subscriptions


@pytest.fixture
def snippets(node_client: Path) -> Iterator[Path]:
    """The README's snippets as files, beside the Node packages they import."""
    found = {match["name"]: match["code"] for match in SNIPPET.finditer(README.read_text())}
    assert set(found) == {"apollo.mjs", "urql.mjs", "task-events.mjs"}, "the README's client snippets changed"
    directory = Path(tempfile.mkdtemp(prefix=".readme-", dir=NODE_CLIENT))
    try:
        for name, code in found.items():
            (directory / name).write_text(code)
        yield directory
    finally:
        shutil.rmtree(directory)


async def harness(snippets: Path, server: LiveServer, token: str, project_id: str, mode: str) -> Any:
    return await asyncio.create_subprocess_exec(
        "node",
        str(HARNESS),
        str(snippets),
        server.base_url + "/graphql",
        token,
        project_id,
        mode,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.parametrize("client", ["apollo", "urql"])
async def test_a_readme_client_queries_mutates_and_subscribes(
    start_server: Callable[..., LiveServer], snippets: Path, client: str
) -> None:
    server = start_server()
    owner = await User.register(server, "Owner")
    project_id = await create_project(owner)

    node = await harness(snippets, server, owner.token, project_id, client)
    stdout, stderr = await asyncio.wait_for(node.communicate(), 90)

    assert node.returncode == 0, stderr.decode()
    # The harness waits for the event of the task it created itself.
    assert json.loads(stdout) == {"viewer": "Owner", "created": f"from {client}", "event": "TASK_CREATED"}


async def test_watched_task_events_resume_after_a_reconnect_with_nothing_lost_or_repeated(
    start_server: Callable[..., LiveServer], snippets: Path
) -> None:
    watched, other = start_server(), start_server()  # the client's instance goes away; writes go on at the other
    owner = await User.register(other, "Owner")
    project_id = await create_project(owner)
    node = await harness(snippets, watched, owner.token, project_id, "watch")
    assert node.stdout is not None
    seen: list[str] = []

    async def until_seen(title: str, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while title not in seen:
                line = await node.stdout.readline()
                assert line, "the Node client ended"
                seen.append(json.loads(line)["task"]["title"])

    try:
        for attempt in range(30):  # until the subscription is live (the first probe may come before it)
            await create_task(owner, project_id, f"probe {attempt}")
            try:
                await until_seen(f"probe {attempt}", timeout=1)
                break
            except TimeoutError:
                continue
        probes = len(seen)
        await create_task(owner, project_id, "live")
        await until_seen("live")
        watched.stop()  # the client's connection drops; graphql-ws keeps retrying
        await create_task(owner, project_id, "while away 1")
        await create_task(owner, project_id, "while away 2")
        watched.start()  # same port: the client reconnects and resubscribes from its last cursor
        await until_seen("while away 2", timeout=60)
        await create_task(owner, project_id, "after")
        await until_seen("after")
        await create_task(owner, project_id, "last")  # anything repeated would come before it
        await until_seen("last")
    finally:
        node.kill()
        await node.wait()

    assert seen[probes:] == ["live", "while away 1", "while away 2", "after", "last"]
    assert len(seen) == len(set(seen))  # nothing twice, probes included
