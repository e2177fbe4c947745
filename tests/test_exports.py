"""Exports: 20,000 tasks as CSV and as JSON, streamed into GridFS by the job and out again through a
signed link; what the link refuses; who may read an export."""

from __future__ import annotations

import asyncio
import csv
import io
import signal
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import AutoReconnect, BulkWriteError

from taskql.auth.export_links import link_token
from taskql.clock import utcnow
from taskql.embedded import embedded_services
from taskql.public_ids import global_id
from taskql.schema.relay import decode_id
from taskql.services.common import Runtime
from taskql.services.exports import LINK_PURPOSE
from taskql.settings import Settings
from tests.conftest import GraphQLClient, add_member, create_task, sign_up, with_jobs
from tests.live import User
from tests.mail import Inbox
from tests.test_jobs import Deployment, deployment

__all__ = ["deployment"]  # a fixture

EXPORT_TASKS = """
mutation($p: ID!, $format: ExportFormat!, $filter: TaskFilter) {
  exportTasks(input: {projectId: $p, format: $format, filter: $filter}) {
    export { id status } userErrors { code field message }
  }
}
"""
EXPORT = """
query($id: ID!) {
  node(id: $id) { ... on Export { id format status progress rowCount downloadUrl error finishedAt expiresAt } }
}
"""
TASKS = 20_000


@pytest.fixture
def settings(settings: Settings, inbox: Inbox) -> Iterator[Settings]:
    # A database server of its own, a child process as `make run` starts it: the suite's shared one
    # runs inside pytest, and twenty thousand tasks stalled it past the driver's timeouts in CI.
    # The job timeout is shorter than the export of 20,000 tasks: it goes on as long as its heartbeat.
    with embedded_services(with_jobs(settings, inbox, job_timeout_seconds=3, mongodb_uri=None)) as services:
        yield services


async def export(client: GraphQLClient, project_id: str, file_format: str, **task_filter: Any) -> dict[str, Any]:
    """Requests an export and returns it once it has finished."""
    variables = {"p": project_id, "format": file_format, "filter": task_filter or None}
    payload = (await client.execute(EXPORT_TASKS, variables))["exportTasks"]
    assert payload["userErrors"] == [] and payload["export"]["status"] == "QUEUED"
    async with asyncio.timeout(120):
        while True:
            node = (await client.execute(EXPORT, {"id": payload["export"]["id"]}))["node"]
            if node["status"] in ("SUCCEEDED", "FAILED"):
                return node
            await asyncio.sleep(0.2)


async def download(client: GraphQLClient, url: str) -> Any:
    parts = urlsplit(url)
    assert parts.netloc == "test"  # the API's own origin
    return await client.http.get(f"{parts.path}?{parts.query}")


async def insert_tasks(
    tasks: AsyncCollection, project_id: str, owner_id: str, count: int, padding: str = ""
) -> list[dict[str, Any]]:
    """Many tasks at once, straight into the database (the API would take minutes)."""
    now = utcnow()
    docs = [
        {
            "_id": ObjectId(),
            "project_id": decode_id(project_id, "Project"),
            "title": f"Task {n}" if n % 1000 else f'=HYPERLINK("http://evil.example", "{n}")',
            "description": ('Line one, with a comma\nand "quotes"' if n % 7 == 0 else "") + padding,
            "status": ("TODO", "IN_PROGRESS", "DONE")[n % 3],
            "priority": "MEDIUM",
            "due_at": now + timedelta(days=n % 30) if n % 2 else None,
            "tags": ["a", "b"] if n % 5 == 0 else [],
            "assignee_id": None,
            "created_by": decode_id(owner_id, "User"),
            "created_at": now,
            "updated_at": now,
            "completed_at": None,
            "version": 1,
        }
        for n in range(count)
    ]
    for start in range(0, count, 250):
        await insert_batch(tasks, docs[start : start + 250])
    assert await tasks.count_documents({"project_id": docs[0]["project_id"]}) == count
    return docs


async def insert_batch(tasks: AsyncCollection, docs: list[dict[str, Any]]) -> None:
    """Sends the batch again while the answer is lost (a database server stalled past the driver's
    10 s socket timeout on a loaded CI machine): what an earlier try stored is refused as a duplicate."""
    for attempt in range(1, 6):
        try:
            await tasks.insert_many(docs, ordered=False)
            return
        except BulkWriteError as exc:
            assert {error["code"] for error in exc.details["writeErrors"]} == {11000}, exc.details
            return
        except AutoReconnect:
            if attempt == 5:
                raise


async def test_twenty_thousand_tasks_as_csv_and_as_json_match_the_database_past_the_job_timeout(
    app: Any, owner_client: GraphQLClient, project_id: str
) -> None:
    docs = await insert_tasks(app.state.runtime.db.tasks, project_id, owner_client.user["id"], TASKS)
    by_id = {global_id("Task", doc["_id"]): doc for doc in docs}

    done = await export(owner_client, project_id, "CSV")
    assert (done["status"], done["rowCount"], done["progress"], done["error"]) == ("SUCCEEDED", TASKS, 1.0, None)
    response = await download(owner_client, done["downloadUrl"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8; header=present"
    assert response.headers["content-length"] == str(len(response.content))
    assert response.headers["content-disposition"].startswith('attachment; filename="tasks-')
    assert response.content.count(b"\r\n") >= TASKS + 1  # RFC 4180 line ends (and some inside quoted cells)
    rows = list(csv.DictReader(io.StringIO(response.content.decode(), newline="")))
    assert len(rows) == TASKS and set(by_id) == {row["id"] for row in rows}
    for row in rows:
        doc = by_id[row["id"]]
        expected = doc["title"] if not doc["title"].startswith("=") else "'" + doc["title"]
        assert (row["title"], row["description"], row["status"]) == (expected, doc["description"], doc["status"])
        assert row["tags"] == ",".join(doc["tags"])
    assert sum(row["title"].startswith("'=HYPERLINK") for row in rows) == TASKS // 1000  # never a formula

    done = await export(owner_client, project_id, "JSON", status=["DONE"])
    tasks = orjson.loads((await download(owner_client, done["downloadUrl"])).content)
    done_ids = {gid for gid, doc in by_id.items() if doc["status"] == "DONE"}
    assert done["rowCount"] == len(tasks) == len(done_ids) and {task["id"] for task in tasks} == done_ids
    sample = next(task for task in tasks if task["tags"])
    assert sample["tags"] == ["a", "b"] and sample["title"] == by_id[sample["id"]]["title"]
    assert (await download(owner_client, done["downloadUrl"])).headers["content-type"] == "application/json"

    notifications = await owner_client.execute("{ viewer { notifications { edges { node { kind } } } } }")
    kinds = [edge["node"]["kind"] for edge in notifications["viewer"]["notifications"]["edges"]]
    assert kinds.count("EXPORT_READY") == 2


async def test_a_link_works_only_as_signed_and_until_it_expires(
    app: Any, owner_client: GraphQLClient, project_id: str
) -> None:
    await create_task(owner_client, project_id, title="one")
    done = await export(owner_client, project_id, "CSV")
    url = done["downloadUrl"]
    assert (await download(owner_client, url)).status_code == 200

    path, _, token = url.partition("?token=")
    expires, _, mac = token.partition(".")
    tampered = f"{path}?token={expires}.{mac[:-1]}{'0' if mac[-1] != '0' else '1'}"
    later = f"{path}?token={int(expires) + 60}.{mac}"
    runtime: Runtime = app.state.runtime
    export_id = decode_id(done["id"], "Export")
    stale = link_token(runtime.settings.derived_key(LINK_PURPOSE), export_id, int(time.time()) - 1)
    other = link_token(runtime.settings.derived_key(LINK_PURPOSE), ObjectId(), int(time.time()) + 60)
    for refused in (tampered, later, f"{path}?token={stale}", f"{path}?token={other}", path):
        response = await download(owner_client, refused)
        assert response.status_code == 403, refused
        assert response.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    # Past its expiry the export is gone, whatever the link.
    await runtime.db.exports.update_one({"_id": export_id}, {"$set": {"expires_at": utcnow() - timedelta(seconds=1)}})
    assert (await download(owner_client, url)).status_code == 404


async def test_exports_are_their_requesters_alone(
    anonymous: GraphQLClient, owner_client: GraphQLClient, project_id: str
) -> None:
    viewer = await sign_up(anonymous, "Viewer")
    await add_member(owner_client, project_id, viewer, "VIEWER")
    outsider = await sign_up(anonymous, "Outsider")
    await create_task(owner_client, project_id, title="one")

    mine = await export(viewer, project_id, "JSON")  # a viewer may export what they can read
    assert mine["status"] == "SUCCEEDED" and mine["rowCount"] == 1
    body = await owner_client.post(EXPORT, {"id": mine["id"]})
    assert body["data"]["node"] is None and body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    refused = (await outsider.execute(EXPORT_TASKS, {"p": project_id, "format": "CSV"}))["exportTasks"]
    assert [error["code"] for error in refused["userErrors"]] == ["NOT_FOUND"]
    listed = await viewer.execute("{ viewer { exports { totalCount edges { node { id format } } } } }")
    assert listed["viewer"]["exports"]["edges"] == [{"node": {"id": mine["id"], "format": "JSON"}}]


async def test_a_worker_killed_mid_export_is_replaced_and_its_partial_file_removed(deployment: Deployment) -> None:
    timeouts = {"job_timeout_seconds": 10}  # the retry comes once the killed attempt times out
    server = deployment.server(**timeouts)
    doomed = deployment.worker(**timeouts)
    owner = await User.register(server, "Owner")
    project = await owner.execute('mutation { createProject(input: {name: "P"}) { project { id } } }')
    project_id = project["createProject"]["project"]["id"]
    mongo: AsyncMongoClient = AsyncMongoClient(deployment.mongodb_uri)
    try:
        db = mongo[deployment.database]
        # Long rows, so that the file has chunks stored well before its end.
        await insert_tasks(db.tasks, project_id, owner.user["id"], 5_000, padding="x" * 400)
        requested = await owner.execute(EXPORT_TASKS, {"p": project_id, "format": "CSV"})
        export_id = decode_id(requested["exportTasks"]["export"]["id"], "Export")
        async with asyncio.timeout(30):
            while not await db["export_files.chunks"].find_one():
                await asyncio.sleep(0.01)
        doomed.signal(signal.SIGKILL)
        doomed.wait(10)
        killed = await db.exports.find_one({"_id": export_id})
        assert killed["status"] == "RUNNING", "the export ended before its worker was killed"
        assert await db["export_files.chunks"].count_documents({"files_id": killed["writing_file_id"]}) > 0

        deployment.worker(**timeouts)
        async with asyncio.timeout(60):
            while (done := await db.exports.find_one({"_id": export_id}))["status"] == "RUNNING":
                await asyncio.sleep(0.2)
        assert (done["status"], done["row_count"]) == ("SUCCEEDED", 5_000)
        assert done["file_id"] not in (None, killed["writing_file_id"])
        assert await db["export_files.chunks"].distinct("files_id") == [done["file_id"]]  # the partial file is gone
        assert await db["export_files.files"].distinct("_id") == [done["file_id"]]
        node = await owner.execute(EXPORT, {"id": requested["exportTasks"]["export"]["id"]})
        async with httpx.AsyncClient() as http:
            response = await http.get(node["node"]["downloadUrl"])
        assert response.status_code == 200
        assert len(list(csv.DictReader(io.StringIO(response.text, newline="")))) == 5_000
    finally:
        await mongo.close()
