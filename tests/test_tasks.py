"""Task mutations and reads end to end."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from taskql.schema.relay import decode_id
from taskql.settings import Settings
from tests.conftest import CREATE_TASK, DELETE_TASK, CommandLog, GraphQLClient, Instances, create_task

UPDATE_TASK = """
mutation($input: UpdateTaskInput!) {
  updateTask(input: $input) {
    task { id title description status priority dueAt tags version completedAt assignee { id } }
    userErrors { code field message }
  }
}
"""
TASK = """
query($id: ID!) {
  task(id: $id) {
    id title version
    project { id }
    activity(first: 50) { totalCount edges { node { kind changedFields actor { id } taskId at } } }
  }
}
"""


async def test_create_task_applies_defaults_and_records_activity(owner_client: GraphQLClient, project_id: str) -> None:
    task = await create_task(owner_client, project_id, title="  Write docs  ", tags=["Docs", "docs", "urgent"])

    assert task["title"] == "Write docs"
    assert (task["status"], task["priority"], task["version"]) == ("TODO", "MEDIUM", 1)
    assert task["tags"] == ["docs", "urgent"]
    assert task["createdBy"]["id"] == owner_client.user["id"]
    data = await owner_client.execute(TASK, {"id": task["id"]})
    events = data["task"]["activity"]["edges"]
    assert [e["node"]["kind"] for e in events] == ["TASK_CREATED"]
    assert events[0]["node"]["actor"]["id"] == owner_client.user["id"]


async def test_date_times_are_rfc_3339_utc_with_milliseconds_whatever_offset_came_in(
    owner_client: GraphQLClient, project_id: str
) -> None:
    task = await create_task(owner_client, project_id, dueAt="2030-01-01T09:30:00.5+02:00")

    read = await owner_client.execute("query($id: ID!) { task(id: $id) { createdAt } }", {"id": task["id"]})

    assert task["dueAt"] == "2030-01-01T07:30:00.500Z"
    created_at = read["task"]["createdAt"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", created_at), created_at


async def test_update_task_is_partial_and_bumps_version(owner_client: GraphQLClient, project_id: str) -> None:
    task = await create_task(owner_client, project_id, title="A", description="keep me", dueAt="2030-01-01T00:00:00Z")

    data = await owner_client.execute(UPDATE_TASK, {"input": {"id": task["id"], "status": "DONE", "dueAt": None}})

    updated = data["updateTask"]["task"]
    assert data["updateTask"]["userErrors"] == []
    assert (updated["title"], updated["description"], updated["status"]) == ("A", "keep me", "DONE")
    assert updated["dueAt"] is None
    assert updated["completedAt"] is not None
    assert updated["version"] == 2
    activity = (await owner_client.execute(TASK, {"id": task["id"]}))["task"]["activity"]
    assert activity["totalCount"] == 2
    assert sorted(activity["edges"][1]["node"]["changedFields"]) == ["dueAt", "status"]


async def test_stale_expected_version_is_a_version_conflict(owner_client: GraphQLClient, project_id: str) -> None:
    task = await create_task(owner_client, project_id)
    await owner_client.execute(UPDATE_TASK, {"input": {"id": task["id"], "title": "first", "expectedVersion": 1}})

    data = await owner_client.execute(
        UPDATE_TASK, {"input": {"id": task["id"], "title": "second", "expectedVersion": 1}}
    )

    assert data["updateTask"]["task"] is None
    assert data["updateTask"]["userErrors"][0]["code"] == "VERSION_CONFLICT"
    current = (await owner_client.execute(TASK, {"id": task["id"]}))["task"]
    assert (current["title"], current["version"]) == ("first", 2)


async def test_concurrent_updates_with_same_version_exactly_one_wins(
    owner_client: GraphQLClient, project_id: str
) -> None:
    task = await create_task(owner_client, project_id)

    results = await asyncio.gather(
        *(
            owner_client.execute(
                UPDATE_TASK, {"input": {"id": task["id"], "title": f"writer {i}", "expectedVersion": 1}}
            )
            for i in range(20)
        )
    )

    winners = [r["updateTask"]["task"] for r in results if r["updateTask"]["task"]]
    losers = [r["updateTask"]["userErrors"][0]["code"] for r in results if not r["updateTask"]["task"]]
    assert len(winners) == 1
    assert losers == ["VERSION_CONFLICT"] * 19
    current = (await owner_client.execute(TASK, {"id": task["id"]}))["task"]
    assert (current["title"], current["version"]) == (winners[0]["title"], 2)
    assert current["activity"]["totalCount"] == 2


@pytest.mark.parametrize("stale", [False, True], ids=["as_read", "changed_meanwhile"])
async def test_an_update_is_one_write_unless_the_task_changed_since_it_was_read(
    app: Any, owner_client: GraphQLClient, project_id: str, command_log: CommandLog, stale: bool
) -> None:
    task = await create_task(owner_client, project_id)  # cached as written: the update reads it from Redis
    if stale:  # changed behind the cache's back, as by a write the cache has not heard of yet
        await app.state.runtime.db.tasks.update_one({"_id": decode_id(task["id"], "Task")}, {"$inc": {"version": 1}})
    command_log.names.clear()

    data = await owner_client.execute(UPDATE_TASK, {"input": {"id": task["id"], "title": "renamed"}})

    assert data["updateTask"]["userErrors"] == []
    assert (data["updateTask"]["task"]["title"], data["updateTask"]["task"]["version"]) == ("renamed", 2 + stale)
    # The task (compare-and-set) and its activity entry; not counted: the outbox's insert, the commit (admin).
    if stale:  # the compare-and-set missed: the task is read (through a write that holds it), then written
        assert command_log.names == ["findAndModify", "findAndModify", "findAndModify", "insert"]
    else:
        assert command_log.names == ["findAndModify", "insert"]


async def test_concurrent_updates_without_version_lose_nothing(owner_client: GraphQLClient, project_id: str) -> None:
    task = await create_task(owner_client, project_id)

    await asyncio.gather(
        owner_client.execute(UPDATE_TASK, {"input": {"id": task["id"], "title": "new title"}}),
        owner_client.execute(UPDATE_TASK, {"input": {"id": task["id"], "priority": "URGENT"}}),
        owner_client.execute(UPDATE_TASK, {"input": {"id": task["id"], "tags": ["x"]}}),
    )

    data = await owner_client.execute(
        "query($id: ID!) { task(id: $id) { title priority tags version } }", {"id": task["id"]}
    )
    assert data["task"] == {"title": "new title", "priority": "URGENT", "tags": ["x"], "version": 4}


@pytest.mark.parametrize("transactions", [True, False], ids=["transactions", "standalone"])
async def test_many_concurrent_updates_without_version_all_apply(
    app: Any,
    instances: Instances,
    settings: Settings,
    owner_client: GraphQLClient,
    project_id: str,
    transactions: bool,
) -> None:
    # Without expectedVersion the last writer wins: 296 of 496 such updates used to fail with
    # VERSION_CONFLICT under 20 concurrent writers. Two instances: their writers meet in the
    # database, not only in one process's queue. On a standalone mongod (no transactions) too.
    [other] = await instances.start(settings, 1)
    writers = [owner_client, other.as_user(owner_client.token)]
    for instance in (app, *instances.apps):
        instance.state.runtime.db.supports_transactions = transactions
    task = await create_task(owner_client, project_id)
    changes = [{"title": f"writer {i}", "status": "DONE" if i % 2 else "IN_PROGRESS"} for i in range(20)]

    results = await asyncio.gather(
        *(
            writers[n % 2].execute(UPDATE_TASK, {"input": {"id": task["id"], **change}})
            for n, change in enumerate(changes)
        )
    )

    assert [r["updateTask"]["userErrors"] for r in results] == [[]] * 20
    versions = sorted(r["updateTask"]["task"]["version"] for r in results)
    assert versions == list(range(2, 22))  # each applied once, one after another
    read = "query($id: ID!) { task(id: $id) { title status version completedAt } }"
    current = (await owner_client.execute(read, {"id": task["id"]}))["task"]
    last = next(r["updateTask"]["task"] for r in results if r["updateTask"]["task"]["version"] == 21)
    assert (current["title"], current["status"], current["version"]) == (last["title"], last["status"], 21)
    assert (current["completedAt"] is not None) == (current["status"] == "DONE")
    for result in results:  # each answer is the state its own write made
        answered = result["updateTask"]["task"]
        assert (answered["completedAt"] is not None) == (answered["status"] == "DONE")
    activity = (await owner_client.execute(TASK, {"id": task["id"]}))["task"]["activity"]
    assert activity["totalCount"] == 21  # created, then one entry per update


async def test_invalid_fields_are_reported_per_field_and_nothing_is_written(
    owner_client: GraphQLClient, project_id: str
) -> None:
    long_title = "x" * 201
    data = await owner_client.execute(
        CREATE_TASK,
        {
            "input": {
                "projectId": project_id,
                "title": long_title,
                "description": "d" * 10_001,
                "tags": ["t"] * 1 + [f"t{i}" for i in range(20)],
                "dueAt": "2030-01-01T00:00:00",
            }
        },
    )

    errors = data["createTask"]["userErrors"]
    assert data["createTask"]["task"] is None
    assert {tuple(e["field"]) for e in errors} == {
        ("input", "title"),
        ("input", "description"),
        ("input", "tags"),
        ("input", "dueAt"),
    }
    assert {e["code"] for e in errors} == {"VALIDATION"}
    count = await owner_client.execute("query($p: ID!) { tasks(projectId: $p) { totalCount } }", {"p": project_id})
    assert count["tasks"]["totalCount"] == 0


async def test_assignee_must_be_a_project_member(
    owner_client: GraphQLClient, editor_client: GraphQLClient, outsider_client: GraphQLClient, project_id: str
) -> None:
    task = await create_task(owner_client, project_id, assigneeId=editor_client.user["id"])
    assert task["assignee"]["id"] == editor_client.user["id"]

    data = await owner_client.execute(
        UPDATE_TASK, {"input": {"id": task["id"], "assigneeId": outsider_client.user["id"]}}
    )

    assert data["updateTask"]["userErrors"] == [
        {"code": "VALIDATION", "field": ["input", "assigneeId"], "message": "must be a member of the project"}
    ]


async def test_null_for_a_required_field_is_a_validation_error(owner_client: GraphQLClient, project_id: str) -> None:
    task = await create_task(owner_client, project_id)

    data = await owner_client.execute(UPDATE_TASK, {"input": {"id": task["id"], "title": None}})

    assert data["updateTask"]["userErrors"][0]["field"] == ["input", "title"]


async def test_delete_task_keeps_its_activity_and_hides_the_task(owner_client: GraphQLClient, project_id: str) -> None:
    task = await create_task(owner_client, project_id)

    data = await owner_client.execute(DELETE_TASK, {"input": {"id": task["id"], "expectedVersion": 1}})

    assert data["deleteTask"] == {"deletedTaskId": task["id"], "userErrors": []}
    body = await owner_client.post(TASK, {"id": task["id"]})
    assert body["data"]["task"] is None
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
