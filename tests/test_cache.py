"""The entity cache: hot reads from Redis, never stale after a write, across instances and outages."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from taskql.db.tasks import find_tasks_by_ids
from taskql.embedded.child import free_port
from taskql.loaders.cache import EntityCache, PutEntry, RedisBackend
from taskql.outage import RedisOutage
from taskql.settings import Settings
from tests.conftest import (
    DELETE_PROJECT,
    DELETE_TASK,
    MY_TASKS,
    PASSWORD,
    REGISTER,
    REMOVE_MEMBER,
    CommandLog,
    GraphQLClient,
    Instances,
    RedisServer,
    add_member,
    create_project,
    create_task,
    sign_up,
)

pytestmark = pytest.mark.redis  # also run against Redis itself (Makefile)

TASK = "query($id: ID!) { task(id: $id) { id title version createdBy { name } } }"
PROJECT = "query($id: ID!) { project(id: $id) { id name } }"
UPDATE_TITLE = """
mutation($id: ID!, $title: String!) {
  updateTask(input: {id: $id, title: $title}) { task { version } userErrors { code message } }
}
"""
RENAME_PROJECT = """
mutation($id: ID!, $name: String!) { updateProject(input: {id: $id, name: $name}) { userErrors { code } } }
"""


def object_id(global_id: str) -> ObjectId:
    return ObjectId(base64.urlsafe_b64decode(global_id + "=" * (-len(global_id) % 4)).decode().split(":")[1])


async def test_hot_reads_are_served_from_redis(
    instances: Instances, settings: Settings, command_log: CommandLog
) -> None:
    [client] = await instances.start(settings, 1)
    owner = await sign_up(client, "Owner")
    task = await create_task(owner, await create_project(owner))
    await owner.execute(TASK, {"id": task["id"]})  # the first read fills the cache

    command_log.names.clear()
    data = await owner.execute(TASK, {"id": task["id"]})

    assert data["task"]["title"] == "Task"
    # Nothing reaches the database: the entities come from the cache, the session check from Redis.
    assert command_log.names == []
    redis = Redis.from_url(settings.redis_url or "")
    assert await redis.exists(EntityCache.key("task", object_id(task["id"])))
    await redis.aclose()
    assert instances.cache(0).stats.hits >= 3  # viewer, task, its author


async def test_a_write_through_one_instance_is_seen_by_the_other(instances: Instances, settings: Settings) -> None:
    a, b = await instances.start(settings, 2)
    owner_a = await sign_up(a, "Owner")
    owner_b = b.as_user(owner_a.token)
    project_id = await create_project(owner_a, "Before")
    task = await create_task(owner_a, project_id)
    await owner_b.execute(TASK, {"id": task["id"]})
    await owner_b.execute(PROJECT, {"id": project_id})  # both now cached

    await owner_a.execute(UPDATE_TITLE, {"id": task["id"], "title": "After"})
    await owner_a.execute(RENAME_PROJECT, {"id": project_id, "name": "Renamed"})

    assert (await owner_b.execute(TASK, {"id": task["id"]}))["task"]["title"] == "After"
    assert (await owner_b.execute(PROJECT, {"id": project_id}))["project"]["name"] == "Renamed"


async def test_removing_a_member_takes_effect_on_their_next_request_anywhere(
    instances: Instances, settings: Settings
) -> None:
    a, b = await instances.start(settings, 2)
    owner = await sign_up(a, "Owner")
    member = await sign_up(a, "Member")
    project_id = await create_project(owner)
    await add_member(owner, project_id, member, "EDITOR")
    member_on_b = b.as_user(member.token)
    assert (await member_on_b.execute(PROJECT, {"id": project_id}))["project"]["id"] == project_id

    await owner.execute(REMOVE_MEMBER, {"p": project_id, "u": member.user["id"]})

    body = await member_on_b.post(PROJECT, {"id": project_id})
    assert body["data"]["project"] is None
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_no_read_after_an_acknowledged_update_returns_an_older_version(
    instances: Instances, settings: Settings
) -> None:
    # Two instances share Redis. Entries expire all the time, so reads keep missing and writing back
    # what they read, racing the writers: the window in which a stale write-back could land.
    writer, reader = await instances.start(settings.model_copy(update={"cache_task_ttl_seconds": 1}), 2)
    owner = await sign_up(writer, "Owner")
    project_id = await create_project(owner)
    tasks = [await create_task(owner, project_id, title=f"t{n}") for n in range(10)]
    reading = reader.as_user(owner.token)
    stale: list[tuple[int, int]] = []
    done = asyncio.Event()

    async def pairs(task_id: str) -> None:
        for n in range(20):
            payload = (await owner.execute(UPDATE_TITLE, {"id": task_id, "title": f"v{n}"}))["updateTask"]
            acknowledged = payload["task"]["version"]
            seen = (await reading.execute(TASK, {"id": task_id}))["task"]["version"]
            if seen < acknowledged:
                stale.append((acknowledged, seen))

    async def racing_reader(task_id: str) -> None:
        # Cache misses that read an old version race the writers' cache updates.
        while not done.is_set():
            await reading.execute(TASK, {"id": task_id})

    noise = [asyncio.create_task(racing_reader(task["id"])) for task in tasks]
    await asyncio.gather(*(pairs(task["id"]) for task in tasks))
    done.set()
    await asyncio.gather(*noise)

    assert stale == []
    versions = [(await reading.execute(TASK, {"id": t["id"]}))["task"]["version"] for t in tasks]
    assert versions == [21] * 10


async def test_a_write_back_of_a_version_read_before_an_update_is_refused(
    instances: Instances, settings: Settings
) -> None:
    # The race above, made deterministic: a reader fetched v1 from MongoDB, then a writer committed
    # and cached v2, then the slow reader writes its v1 back.
    [client] = await instances.start(settings, 1)
    owner = await sign_up(client, "Owner")
    task = await create_task(owner, await create_project(owner))
    cache = instances.cache(0)
    [read_before_update] = await find_tasks_by_ids(instances.apps[0].state.runtime.db, ids=[object_id(task["id"])])

    await owner.execute(UPDATE_TITLE, {"id": task["id"], "title": "v2"})
    await cache.put_many("task", [read_before_update.to_doc()])

    read = (await owner.execute(TASK, {"id": task["id"]}))["task"]
    assert (read["title"], read["version"]) == ("v2", 2)


async def cached_task(
    instances: Instances, settings: Settings, private_redis: RedisServer
) -> tuple[GraphQLClient, dict[str, Any]]:
    """An instance on the test's own Redis (retrying it quickly), and a task of its owner, read once: cached."""
    redis_settings = settings.model_copy(update={"redis_url": private_redis.url, "cache_retry_seconds": 0.2})
    [client] = await instances.start(redis_settings, 1)
    owner = await sign_up(client, "Owner")
    task = await create_task(owner, await create_project(owner))
    await owner.execute(TASK, {"id": task["id"]})
    return owner, task


def skipped_cache_reads() -> float:
    return REGISTRY.get_sample_value("taskql_redis_skipped_operations_total", {"part": "cache"}) or 0.0


async def test_requests_survive_a_redis_outage_and_the_cache_resumes(
    instances: Instances, settings: Settings, private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    owner, task = await cached_task(instances, settings, private_redis)
    caplog.set_level(logging.WARNING, logger="taskql.redis")
    skipped_before = skipped_cache_reads()

    private_redis.stop()
    during = [await owner.execute(TASK, {"id": task["id"]}) for _ in range(5)]
    updated = await owner.execute(UPDATE_TITLE, {"id": task["id"], "title": "written during the outage"})
    private_redis.start()
    await asyncio.sleep(0.3)
    after = await owner.execute(TASK, {"id": task["id"]})
    again = await owner.execute(TASK, {"id": task["id"]})

    assert all(d["task"]["title"] == "Task" for d in during)
    assert updated["updateTask"]["task"]["version"] == 2
    assert after["task"]["title"] == again["task"]["title"] == "written during the outage"
    # One line when the outage starts, one when it ends, whatever every part did meanwhile.
    logged = [r.getMessage() for r in caplog.records if r.name == "taskql.redis"]
    assert len(logged) == 2, logged
    assert logged[0].startswith("Redis unreachable (ConnectionError")
    assert logged[1].startswith("Redis reachable again after")
    assert skipped_cache_reads() > skipped_before  # in /metrics: what went without Redis
    redis = Redis.from_url(private_redis.url)
    assert await redis.exists(EntityCache.key("task", object_id(task["id"])))
    await redis.aclose()


async def test_writes_during_an_outage_never_let_the_old_entry_be_served(
    instances: Instances, settings: Settings, private_redis: RedisServer
) -> None:
    # The cache keeps its data (a pause, not a restart): the entry cached before the outage is older
    # than the database, and the instance must not serve it once Redis answers again.
    owner, task = await cached_task(instances, settings, private_redis)
    admin = Redis.from_url(private_redis.url)

    await admin.execute_command("CLIENT", "PAUSE", 1500, "ALL")
    await owner.execute(UPDATE_TITLE, {"id": task["id"], "title": "new"})
    await asyncio.sleep(1.6)
    read = await owner.execute(TASK, {"id": task["id"]})

    assert read["task"]["title"] == "new"
    assert read["task"]["version"] == 2
    await admin.aclose()


def _entry(key: str, version: int, payload: str = "x") -> PutEntry:
    return PutEntry(key, version, f"{version}|{payload}", 60)


@pytest.fixture
async def backend(redis_url: str) -> AsyncIterator[RedisBackend]:
    client = Redis.from_url(redis_url)
    yield RedisBackend(client)
    await client.aclose()


async def test_redis_only_replaces_entries_with_newer_versions(backend: RedisBackend) -> None:
    key = f"taskql:test:{ObjectId()}"

    await backend.put_many([_entry(key, 2, "two")])
    await backend.put_many([_entry(key, 1, "one")])  # a late write-back of an older read
    await backend.put_many([_entry(key, 2, "two again")])

    assert await backend.get_many([key]) == ["2|two"]
    await backend.put_many([_entry(key, 3, "three")])
    assert await backend.get_many([key]) == ["3|three"]


async def test_redis_lets_a_marker_be_filled_only_by_its_version_or_newer(backend: RedisBackend) -> None:
    key = f"taskql:test:{ObjectId()}"
    await backend.put_many([_entry(key, 5, "")])  # "version 5 exists, value unknown"

    await backend.put_many([_entry(key, 4, "four")])
    assert await backend.get_many([key]) == ["5|"]
    await backend.put_many([_entry(key, 5, "five")])
    assert await backend.get_many([key]) == ["5|five"]


async def test_deleted_entities_stay_deleted_in_the_cache(backend: RedisBackend) -> None:
    cache = EntityCache(backend, ttl_seconds={"task": 60}, outage=RedisOutage(retry_seconds=1))
    task_id = ObjectId()
    await cache.put_many("task", [{"_id": task_id, "version": 3, "title": "x"}])

    await cache.delete("task", task_id)
    await cache.put_many("task", [{"_id": task_id, "version": 4, "title": "late write-back"}])

    assert await cache.get_many("task", [task_id]) == {task_id: None}


async def test_a_wrong_redis_url_costs_the_cache_and_sign_ins_not_the_api(
    instances: Instances, settings: Settings
) -> None:
    nowhere = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    [client] = await instances.start(nowhere, 1)
    [healthy] = await instances.start(settings, 1)  # same database, with Redis: signs the user up

    owner = client.as_user((await sign_up(healthy, "Owner")).token or "")
    task = await create_task(owner, await create_project(owner))
    data = await owner.execute(TASK, {"id": task["id"]})
    refused = await client.post(
        REGISTER, {"input": {"email": "late@example.com", "name": "Late", "password": PASSWORD}}
    )

    assert data["task"]["createdBy"]["name"] == "Owner"
    assert instances.cache(0).stats.errors >= 1
    assert instances.cache(0).stats.hits == 0
    # Failed sign-ins cannot be counted without Redis, so sign-ins stop (services/login_throttle.py).
    assert refused["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"


BOARD = """
query($id: ID!) {
  project(id: $id) {
    tasks(first: 20) { totalCount edges { node { id title version } } }
    stats { total byStatus { status count } overdue dueNext7Days }
  }
}
"""
SET_STATUS = """
mutation($id: ID!, $status: TaskStatus!) { updateTask(input: {id: $id, status: $status}) { userErrors { code } } }
"""


def board_titles(data: dict[str, Any]) -> dict[str, str]:
    return {edge["node"]["id"]: edge["node"]["title"] for edge in data["project"]["tasks"]["edges"]}


async def test_a_warm_board_reads_nothing_from_mongodb(
    instances: Instances, settings: Settings, command_log: CommandLog
) -> None:
    [client] = await instances.start(settings, 1)
    owner = await sign_up(client, "Owner")
    project_id = await create_project(owner)
    for n in range(5):
        await create_task(owner, project_id, title=f"t{n}")
    cold = await owner.execute(BOARD, {"id": project_id})  # fills the cache

    command_log.names.clear()
    warm = await owner.execute(BOARD, {"id": project_id})

    assert warm == cold and len(board_titles(warm)) == 5
    assert warm["project"]["tasks"]["totalCount"] == 5 and warm["project"]["stats"]["total"] == 5
    assert command_log.names == []  # the page, its totalCount and the stats came from Redis


async def test_no_board_read_after_an_acknowledged_write_misses_it(instances: Instances, settings: Settings) -> None:
    # Two instances; readers on the second keep refilling the cache while the first writes: every
    # read that starts after a write was acknowledged must show it (its page, the page's totalCount
    # and the project's stats), 200 times over: new tasks, new titles, tasks done and reopened.
    writer, reader = await instances.start(settings, 2)
    owner = await sign_up(writer, "Owner")
    project_id = await create_project(owner)
    tasks = [await create_task(owner, project_id, title="t") for _ in range(4)]
    reading = reader.as_user(owner.token)
    done = asyncio.Event()

    async def keep_reading() -> None:
        while not done.is_set():
            await reading.execute(BOARD, {"id": project_id})

    background = [asyncio.create_task(keep_reading()) for _ in range(2)]
    missed = []
    finished: set[str] = set()
    for n in range(200):
        task = tasks[-1 - n % 4]  # among the newest: on the first page
        if n % 3 == 0:
            tasks.append(await create_task(owner, project_id, title=f"new {n}"))
            expected: tuple[Any, ...] = ("count", len(tasks))
        elif n % 3 == 1:
            await writer.as_user(owner.token).execute(UPDATE_TITLE, {"id": task["id"], "title": f"v{n}"})
            expected = ("title", f"v{n}")
        else:
            status = "TODO" if task["id"] in finished else "DONE"
            await owner.execute(SET_STATUS, {"id": task["id"], "status": status})
            finished.symmetric_difference_update({task["id"]})
            expected = ("done", len(finished))
        board = await reading.execute(BOARD, {"id": project_id})
        seen = {
            "count": (board["project"]["tasks"]["totalCount"], board["project"]["stats"]["total"]),
            "title": board_titles(board).get(task["id"]),
            "done": done_count(board),
        }[expected[0]]
        wanted = (expected[1], expected[1]) if expected[0] == "count" else expected[1]
        if seen != wanted:
            missed.append((n, expected[0], seen, wanted))
    done.set()
    await asyncio.gather(*background)

    assert missed == []
    assert instances.cache(1).stats.hits > 0  # the board was served from the cache in between


def done_count(data: dict[str, Any]) -> int:
    return next(row["count"] for row in data["project"]["stats"]["byStatus"] if row["status"] == "DONE")


ASSIGN = """
mutation($id: ID!, $to: ID) { updateTask(input: {id: $id, assigneeId: $to}) { userErrors { code message } } }
"""


async def test_an_update_that_waited_its_turn_refreshes_the_list_of_the_assignee_it_replaced(
    instances: Instances, settings: Settings
) -> None:
    # An update reads the task (to authorize it), then waits its turn while another instance hands
    # the task to Bob and Bob's list is cached. The waiting update then hands it to Cy: Bob's list,
    # not Ada's (whom it read first), is the one it must refresh.
    here, there = await instances.start(settings, 2)
    owner = await sign_up(here, "Owner")
    project_id = await create_project(owner)
    ada, bob, cy = [await sign_up(here, name) for name in ("Ada", "Bob", "Cy")]
    for member in (ada, bob, cy):
        await add_member(owner, project_id, member, "EDITOR")
    task = await create_task(owner, project_id, assigneeId=ada.user["id"])
    bob_reads = there.as_user(bob.token)

    async with instances.apps[0].state.runtime.task_writes.hold(object_id(task["id"])):
        to_cy = asyncio.create_task(owner.execute(ASSIGN, {"id": task["id"], "to": cy.user["id"]}))
        await asyncio.sleep(0.5)  # it has read the task (Ada's) and waits for its turn
        await there.as_user(owner.token).execute(ASSIGN, {"id": task["id"], "to": bob.user["id"]})
        bob_before = (await bob_reads.execute(MY_TASKS))["myTasks"]["totalCount"]
        assert not to_cy.done()
    assert (await to_cy)["updateTask"]["userErrors"] == []
    bob_after = (await bob_reads.execute(MY_TASKS))["myTasks"]["totalCount"]
    cy_after = (await there.as_user(cy.token).execute(MY_TASKS))["myTasks"]["totalCount"]

    assert (bob_before, bob_after, cy_after) == (1, 0, 1)


async def test_my_tasks_are_served_from_redis_and_follow_every_write_on_another_instance(
    instances: Instances, settings: Settings, command_log: CommandLog
) -> None:
    writer, reader = await instances.start(settings, 2)
    owner = await sign_up(writer, "Owner")
    ada, bob = await sign_up(writer, "Ada"), await sign_up(writer, "Bob")
    projects = [await create_project(owner, "One"), await create_project(owner, "Two")]
    for project_id in projects:
        await add_member(owner, project_id, ada, "EDITOR")
        await add_member(owner, project_id, bob, "EDITOR")
    ada_id, bob_id = ada.user["id"], bob.user["id"]
    first, second, third = [
        await create_task(owner, project_id, title=title, assigneeId=ada_id)
        for project_id, title in ((projects[0], "a"), (projects[0], "b"), (projects[1], "c"))
    ]
    ada_reads, bob_reads = reader.as_user(ada.token), reader.as_user(bob.token)

    async def mine(client: GraphQLClient) -> tuple[int, set[str]]:
        data = (await client.execute(MY_TASKS))["myTasks"]
        ids = {edge["node"]["id"] for edge in data["edges"]}
        assert data["totalCount"] == len(ids)
        return data["totalCount"], ids

    command_log.names.clear()
    assert await mine(ada_reads) == (3, {first["id"], second["id"], third["id"]})
    assert command_log.names == ["find", "aggregate", "aggregate"]  # cold: membership once, the page, its count
    assert await mine(bob_reads) == (0, set())
    command_log.names.clear()
    assert await mine(ada_reads) == (3, {first["id"], second["id"], third["id"]})
    assert command_log.names == []  # warm: the page and its count came from Redis

    await owner.execute(ASSIGN, {"id": first["id"], "to": bob_id})  # handed from Ada to Bob
    assert await mine(ada_reads) == (2, {second["id"], third["id"]})
    assert await mine(bob_reads) == (1, {first["id"]})
    await owner.execute(DELETE_TASK, {"input": {"id": second["id"]}})
    assert await mine(ada_reads) == (1, {third["id"]})
    await owner.execute(REMOVE_MEMBER, {"p": projects[0], "u": bob_id})  # first is unassigned
    assert await mine(bob_reads) == (0, set())
    await owner.execute(DELETE_PROJECT, {"input": {"id": projects[1]}})
    assert await mine(ada_reads) == (0, set())


async def test_stats_change_when_a_task_falls_due_without_any_write(instances: Instances, settings: Settings) -> None:
    [client] = await instances.start(settings, 1)
    owner = await sign_up(client, "Owner")
    project_id = await create_project(owner)
    due = datetime.now(UTC) + timedelta(seconds=2)
    await create_task(owner, project_id, title="soon", dueAt=due.isoformat())
    await create_task(owner, project_id, title="later", dueAt=(due + timedelta(days=30)).isoformat())

    before = (await owner.execute(BOARD, {"id": project_id}))["project"]["stats"]
    cached = (await owner.execute(BOARD, {"id": project_id}))["project"]["stats"]
    await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 0.1)
    after = (await owner.execute(BOARD, {"id": project_id}))["project"]["stats"]

    assert (before["overdue"], before["dueNext7Days"]) == (0, 1)
    assert cached == before
    assert (after["overdue"], after["dueNext7Days"]) == (1, 0)  # the cached stats expired when the task fell due


async def test_a_board_write_while_redis_pauses_is_never_hidden_by_an_older_page(
    instances: Instances, settings: Settings, private_redis: RedisServer
) -> None:
    owner, task = await cached_task(instances, settings, private_redis)
    project_id = (await owner.execute("query($id: ID!) { task(id: $id) { project { id } } }", {"id": task["id"]}))[
        "task"
    ]["project"]["id"]
    await owner.execute(BOARD, {"id": project_id})  # the page with the old title is cached
    admin = Redis.from_url(private_redis.url)

    await admin.execute_command("CLIENT", "PAUSE", 1500, "ALL")
    await owner.execute(UPDATE_TITLE, {"id": task["id"], "title": "new"})  # its bump times out
    await asyncio.sleep(1.6)
    read = await owner.execute(BOARD, {"id": project_id})
    await create_task(owner, project_id, title="second")  # the next bump goes through
    counted = await owner.execute(BOARD, {"id": project_id})
    await admin.aclose()

    assert board_titles(read)[task["id"]] == "new"
    assert counted["project"]["tasks"]["totalCount"] == counted["project"]["stats"]["total"] == 2
