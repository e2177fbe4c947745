"""Keyset pagination of task connections: complete, ordered, stable under writes, strict about arguments."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from taskql.schema.relay import decode_id
from tests.conftest import DELETE_TASK, GraphQLClient, add_member, create_project, create_task, sign_up

TASKS = """
query(
  $projectId: ID!, $filter: TaskFilter, $orderBy: TaskOrder, $first: Int, $after: String, $last: Int, $before: String
) {
  tasks(
    projectId: $projectId, filter: $filter, orderBy: $orderBy
    first: $first, after: $after, last: $last, before: $before
  ) {
    edges { cursor node { id createdAt updatedAt dueAt priority } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""
COUNTED_TASKS = """
query($projectId: ID!, $filter: TaskFilter, $first: Int) {
  tasks(projectId: $projectId, filter: $filter, first: $first) { totalCount edges { node { id } } }
}
"""
MY_TASKS = """
query($first: Int, $after: String) {
  myTasks(first: $first, after: $after) {
    totalCount
    edges { cursor node { id createdAt assignee { id } project { id } } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""
UPDATE_TASK = """
mutation($input: UpdateTaskInput!) {
  updateTask(input: $input) { task { id updatedAt } userErrors { code field message } }
}
"""

PAGE_SIZE = 37
SEEDED = 250
PRIORITIES = ("LOW", "MEDIUM", "HIGH", "URGENT")
PRIORITY_RANK = {name: rank for rank, name in enumerate(PRIORITIES)}
# Few distinct due dates, so many tasks tie on dueAt (and on priority).
DUE_DATES = tuple(f"2030-01-0{day}T09:00:00Z" for day in range(1, 6))
ORDER_FIELDS = ("CREATED_AT", "UPDATED_AT", "DUE_AT", "PRIORITY")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def order_key(field: str, node: dict[str, Any]) -> tuple[Any, ...]:
    """The value a task is ordered by; tasks without a due date after all dated ones (ascending)."""
    if field == "CREATED_AT":
        return (parse_time(node["createdAt"]),)
    if field == "UPDATED_AT":
        return (parse_time(node["updatedAt"]),)
    if field == "DUE_AT":
        return (node["dueAt"] is None, parse_time(node["dueAt"]) if node["dueAt"] else None)
    return (PRIORITY_RANK[node["priority"]],)


def sort_position(field: str, node: dict[str, Any]) -> tuple[Any, ...]:
    """Order key, then the task's own id as the tie-breaker."""
    return (*order_key(field, node), decode_id(node["id"], "Task"))


def expected_order(field: str, direction: str, nodes: list[dict[str, Any]]) -> list[str]:
    ordered = sorted(nodes, key=lambda node: sort_position(field, node), reverse=direction == "DESC")
    return [node["id"] for node in ordered]


def seed_fields(i: int) -> dict[str, Any]:
    """Every 3rd task has no due date; the rest share a handful of due dates and priorities."""
    fields: dict[str, Any] = {"title": f"Task {i:03}", "priority": PRIORITIES[i % len(PRIORITIES)]}
    if i % 3:
        fields["dueAt"] = DUE_DATES[i % len(DUE_DATES)]
    return fields


async def seed_tasks(
    client: GraphQLClient, project_id: str, count: int, fields: Callable[[int], dict[str, Any]] = seed_fields
) -> list[dict[str, Any]]:
    """Creates `count` tasks through the API, 25 at a time."""
    tasks: list[dict[str, Any]] = []
    for start in range(0, count, 25):
        chunk = range(start, min(start + 25, count))
        tasks += await asyncio.gather(*(create_task(client, project_id, **fields(i)) for i in chunk))
    return tasks


async def touch_some(client: GraphQLClient, tasks: list[dict[str, Any]]) -> None:
    """Updates every 9th task, oldest ones included, so UPDATED_AT order differs from CREATED_AT order."""
    results = await asyncio.gather(
        *(
            client.execute(UPDATE_TASK, {"input": {"id": t["id"], "title": f"{t['title']} (edited)"}})
            for t in tasks[::9]
        )
    )
    assert all(result["updateTask"]["userErrors"] == [] for result in results)


async def walk_forward(client: GraphQLClient, variables: dict[str, Any], size: int = PAGE_SIZE) -> list[dict[str, Any]]:
    """Every page of a connection, following endCursor from the start."""
    pages = []
    after = None
    while True:
        data = await client.execute(TASKS, {**variables, "first": size, "after": after})
        pages.append(data["tasks"])
        if not data["tasks"]["pageInfo"]["hasNextPage"]:
            return pages
        after = data["tasks"]["pageInfo"]["endCursor"]
        assert len(pages) <= SEEDED, "the walk does not end"


async def walk_backward(
    client: GraphQLClient, variables: dict[str, Any], size: int = PAGE_SIZE
) -> list[dict[str, Any]]:
    """Every page of a connection, following startCursor back from the end."""
    pages = []
    before = None
    while True:
        data = await client.execute(TASKS, {**variables, "last": size, "before": before})
        pages.append(data["tasks"])
        if not data["tasks"]["pageInfo"]["hasPreviousPage"]:
            return pages
        before = data["tasks"]["pageInfo"]["startCursor"]
        assert len(pages) <= SEEDED, "the walk does not end"


def nodes_of(pages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [edge["node"] for page in pages for edge in page["edges"]]


def assert_page_cursors(page: dict[str, Any]) -> None:
    assert page["pageInfo"]["startCursor"] == page["edges"][0]["cursor"]
    assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]


def assert_forward_page_info(pages: list[dict[str, Any]], total: int) -> None:
    assert [len(page["edges"]) for page in pages] == [min(PAGE_SIZE, total - i * PAGE_SIZE) for i in range(len(pages))]
    for number, page in enumerate(pages):
        assert_page_cursors(page)
        assert page["pageInfo"]["hasPreviousPage"] is (number > 0)
        assert page["pageInfo"]["hasNextPage"] is (number < len(pages) - 1)


def assert_backward_page_info(pages: list[dict[str, Any]], total: int) -> None:
    assert [len(page["edges"]) for page in pages] == [min(PAGE_SIZE, total - i * PAGE_SIZE) for i in range(len(pages))]
    for number, page in enumerate(pages):
        assert_page_cursors(page)
        assert page["pageInfo"]["hasNextPage"] is (number > 0)
        assert page["pageInfo"]["hasPreviousPage"] is (number < len(pages) - 1)


@pytest.mark.parametrize("direction", ["ASC", "DESC"])
async def test_walks_visit_every_task_once_in_order_both_ways(
    owner_client: GraphQLClient, project_id: str, direction: str
) -> None:
    # given 250 tasks with tied due dates and priorities, a third without a due date, some edited
    tasks = await seed_tasks(owner_client, project_id, SEEDED)
    await touch_some(owner_client, tasks)
    seeded_ids = {task["id"] for task in tasks}

    for field in ORDER_FIELDS:
        variables = {"projectId": project_id, "orderBy": {"field": field, "direction": direction}}

        # when walking forward with first/after, then backward with last/before from the end
        forward = await walk_forward(owner_client, variables)
        backward = await walk_backward(owner_client, variables)

        # then the forward walk has every task once, in (key, id) order
        walked = [node["id"] for node in nodes_of(forward)]
        assert len(walked) == len(set(walked)) == SEEDED, field
        assert set(walked) == seeded_ids, field
        assert walked == expected_order(field, direction, nodes_of(forward)), field
        assert_forward_page_info(forward, SEEDED)
        # and the backward walk yields exactly its reverse
        backward_ids = [edge["node"]["id"] for page in backward for edge in reversed(page["edges"])]
        assert backward_ids == walked[::-1], field
        assert_backward_page_info(backward, SEEDED)


async def test_due_at_order_puts_undated_tasks_last_ascending_and_first_descending(
    owner_client: GraphQLClient, project_id: str
) -> None:
    # given dated and undated tasks
    await seed_tasks(owner_client, project_id, 12)

    # when listing by due date both ways
    ascending = await owner_client.execute(
        TASKS, {"projectId": project_id, "orderBy": {"field": "DUE_AT", "direction": "ASC"}, "first": 100}
    )
    descending = await owner_client.execute(
        TASKS, {"projectId": project_id, "orderBy": {"field": "DUE_AT", "direction": "DESC"}, "first": 100}
    )

    # then the 4 undated tasks come after all dated ones ascending, before them descending
    asc_due = [edge["node"]["dueAt"] for edge in ascending["tasks"]["edges"]]
    desc_due = [edge["node"]["dueAt"] for edge in descending["tasks"]["edges"]]
    assert asc_due[8:] == [None] * 4 and None not in asc_due[:8]
    assert desc_due[:4] == [None] * 4 and None not in desc_due[4:]
    assert asc_due[:8] == sorted(asc_due[:8]) and desc_due[4:] == sorted(desc_due[4:], reverse=True)


async def test_default_order_is_newest_first(owner_client: GraphQLClient, project_id: str) -> None:
    # given tasks created in sequence
    tasks = [await create_task(owner_client, project_id, title=f"T{i}") for i in range(5)]

    # when listing without orderBy, in pages of 2
    pages = await walk_forward(owner_client, {"projectId": project_id}, size=2)

    # then the newest task comes first
    assert [node["id"] for node in nodes_of(pages)] == [task["id"] for task in reversed(tasks)]
    explicit = await walk_forward(
        owner_client, {"projectId": project_id, "orderBy": {"field": "CREATED_AT", "direction": "DESC"}}, size=2
    )
    assert [page["edges"] for page in explicit] == [page["edges"] for page in pages]


async def test_walk_survives_inserts_and_deletes_between_pages(owner_client: GraphQLClient, project_id: str) -> None:
    # given 100 tasks, walked by due date in pages of 20
    field, direction = "DUE_AT", "ASC"
    tasks = await seed_tasks(owner_client, project_id, 100)
    by_id = {task["id"]: task for task in tasks}
    variables = {"projectId": project_id, "orderBy": {"field": field, "direction": direction}, "first": 20}
    walked: list[dict[str, Any]] = []
    deleted_unseen: set[str] = set()
    deleted_seen: set[str] = set()
    inserted: list[dict[str, Any]] = []
    must_appear: set[str] = set()
    after = None
    for round_number in range(100):
        data = await owner_client.execute(TASKS, {**variables, "after": after})
        walked += [edge["node"] for edge in data["tasks"]["edges"]]
        if not data["tasks"]["pageInfo"]["hasNextPage"]:
            break
        after = data["tasks"]["pageInfo"]["endCursor"]

        # when, between pages, some unseen and some seen tasks are deleted and new ones are inserted
        seen = {node["id"] for node in walked}
        unseen = [task_id for task_id in by_id if task_id not in seen and task_id not in deleted_unseen]
        seen_alive = [node["id"] for node in walked if node["id"] not in deleted_seen]
        victims_unseen = unseen[round_number::7][:2]
        victims_seen = seen_alive[round_number::5][:2]
        results = await asyncio.gather(
            *(
                owner_client.execute(DELETE_TASK, {"input": {"id": task_id}})
                for task_id in victims_unseen + victims_seen
            )
        )
        assert all(result["deleteTask"]["userErrors"] == [] for result in results)
        deleted_unseen.update(victims_unseen)
        deleted_seen.update(victims_seen)
        new_tasks = await asyncio.gather(
            create_task(owner_client, project_id, title=f"early {round_number}", dueAt="2029-06-01T00:00:00Z"),
            create_task(owner_client, project_id, title=f"tie {round_number}", dueAt=walked[-1]["dueAt"]),
            create_task(owner_client, project_id, title=f"middle {round_number}", dueAt=DUE_DATES[2]),
            create_task(owner_client, project_id, title=f"undated {round_number}"),
        )
        inserted += new_tasks
        # A task inserted past the cursor exists for the rest of the walk, so the walk must reach it.
        cursor_position = sort_position(field, walked[-1])
        must_appear.update(task["id"] for task in new_tasks if sort_position(field, task) > cursor_position)

    # then nothing that existed for the whole walk is missed or repeated, and deleted unseen tasks never show
    walked_ids = [node["id"] for node in walked]
    assert len(walked_ids) == len(set(walked_ids))
    survivors = set(by_id) - deleted_unseen - deleted_seen
    assert survivors <= set(walked_ids)
    assert deleted_seen <= set(walked_ids)
    assert not deleted_unseen & set(walked_ids)
    assert must_appear and must_appear <= set(walked_ids)
    assert set(walked_ids) <= set(by_id) | {task["id"] for task in inserted}
    positions = [sort_position(field, node) for node in walked]
    assert positions == sorted(positions)
    assert len(deleted_unseen) >= 6 and len(deleted_seen) >= 6


async def test_total_count_and_edges_follow_each_filter(
    owner_client: GraphQLClient, editor_client: GraphQLClient, project_id: str
) -> None:
    # given tasks with varied status, priority, assignee, tags and due dates
    editor_id = editor_client.user["id"]
    statuses = ("TODO", "IN_PROGRESS", "DONE")

    def fields(i: int) -> dict[str, Any]:
        values: dict[str, Any] = {
            "title": f"Task {i}",
            "status": statuses[i % 3],
            "priority": PRIORITIES[i % 4],
            "tags": ["backend"] if i % 2 else ["frontend", "ux"],
        }
        if i % 5:
            values["dueAt"] = f"2030-03-{i + 1:02}T12:00:00Z"
        if i % 3 == 1:
            values["assigneeId"] = editor_id
        return values

    tasks = await seed_tasks(owner_client, project_id, 24, fields)
    values = [fields(i) | {"id": task["id"]} for i, task in enumerate(tasks)]

    def ids_where(predicate: Callable[[dict[str, Any]], bool]) -> set[str]:
        return {value["id"] for value in values if predicate(value)}

    def due(value: dict[str, Any]) -> datetime | None:
        return parse_time(value["dueAt"]) if "dueAt" in value else None

    cases = [
        ({}, ids_where(lambda v: True)),
        ({"status": ["TODO", "DONE"]}, ids_where(lambda v: v["status"] in ("TODO", "DONE"))),
        ({"priority": ["HIGH", "URGENT"]}, ids_where(lambda v: v["priority"] in ("HIGH", "URGENT"))),
        ({"assigneeId": editor_id}, ids_where(lambda v: v.get("assigneeId") == editor_id)),
        ({"tag": "Backend"}, ids_where(lambda v: "backend" in v["tags"])),
        ({"tag": "ux"}, ids_where(lambda v: "ux" in v["tags"])),
        (
            {"dueBefore": "2030-03-10T00:00:00Z"},
            ids_where(lambda v: due(v) is not None and due(v) < parse_time("2030-03-10T00:00:00Z")),
        ),
        (
            {"dueAfter": "2030-03-10T00:00:00Z"},
            ids_where(lambda v: due(v) is not None and due(v) > parse_time("2030-03-10T00:00:00Z")),
        ),
        (
            {"dueAfter": "2030-03-05T00:00:00Z", "dueBefore": "2030-03-20T00:00:00Z"},
            ids_where(
                lambda v: (
                    due(v) is not None
                    and parse_time("2030-03-05T00:00:00Z") < due(v) < parse_time("2030-03-20T00:00:00Z")
                )
            ),
        ),
        (
            {"status": ["TODO", "IN_PROGRESS"], "priority": ["LOW", "HIGH"], "assigneeId": editor_id},
            ids_where(
                lambda v: (
                    v["status"] != "DONE" and v["priority"] in ("LOW", "HIGH") and v.get("assigneeId") == editor_id
                )
            ),
        ),
        ({"tag": "nothing-has-this"}, set()),
    ]
    for task_filter, expected in cases:
        # when listing with the filter
        data = await owner_client.execute(COUNTED_TASKS, {"projectId": project_id, "filter": task_filter, "first": 100})

        # then totalCount and the edges are exactly the matching tasks
        assert data["tasks"]["totalCount"] == len(expected), task_filter
        assert {edge["node"]["id"] for edge in data["tasks"]["edges"]} == expected, task_filter
        assert 0 < len(expected) < len(values) or task_filter in ({}, {"tag": "nothing-has-this"}), task_filter


async def test_total_count_covers_all_pages(owner_client: GraphQLClient, project_id: str) -> None:
    # given 7 tasks
    await seed_tasks(owner_client, project_id, 7)

    # when asking for a page of 2
    data = await owner_client.execute(COUNTED_TASKS, {"projectId": project_id, "first": 2})

    # then totalCount counts the whole list
    assert data["tasks"]["totalCount"] == 7
    assert len(data["tasks"]["edges"]) == 2


@pytest.mark.parametrize(
    "arguments",
    [
        {"first": 0},
        {"first": 101},
        {"first": -1},
        {"last": 0},
        {"last": 101},
        {"first": 5, "last": 5},
        {"after": "garbage"},
        {"before": "garbage"},
        {"after": "eyJub3QiOiJhIGN1cnNvciJ9"},  # base64 of a JSON object, not a cursor
    ],
    ids=lambda arguments: ",".join(f"{k}={v}" for k, v in arguments.items()),
)
async def test_out_of_range_sizes_and_bad_cursors_are_bad_user_input(
    owner_client: GraphQLClient, project_id: str, arguments: dict[str, Any]
) -> None:
    # given a project with a task
    await create_task(owner_client, project_id)

    # when paging with invalid arguments
    body = await owner_client.post(TASKS, {"projectId": project_id, **arguments})

    # then the request fails with BAD_USER_INPUT
    assert body["data"] is None
    assert [error["extensions"]["code"] for error in body["errors"]] == ["BAD_USER_INPUT"]


async def test_cursor_from_another_order_is_bad_user_input(owner_client: GraphQLClient, project_id: str) -> None:
    # given a cursor from the default order
    await seed_tasks(owner_client, project_id, 3)
    data = await owner_client.execute(TASKS, {"projectId": project_id, "first": 1})
    cursor = data["tasks"]["pageInfo"]["endCursor"]

    for order in ({"field": "DUE_AT", "direction": "DESC"}, {"field": "CREATED_AT", "direction": "ASC"}):
        for arguments in ({"first": 1, "after": cursor}, {"last": 1, "before": cursor}):
            # when it is used with another order
            body = await owner_client.post(TASKS, {"projectId": project_id, "orderBy": order, **arguments})

            # then it is refused
            assert [error["extensions"]["code"] for error in body["errors"]] == ["BAD_USER_INPUT"], (order, arguments)


async def test_page_sizes_one_and_a_hundred_are_accepted(owner_client: GraphQLClient, project_id: str) -> None:
    # given 3 tasks
    await seed_tasks(owner_client, project_id, 3)

    # when asking for the smallest and the largest pages
    smallest = await owner_client.execute(TASKS, {"projectId": project_id, "first": 1})
    largest = await owner_client.execute(TASKS, {"projectId": project_id, "first": 100})
    last = await owner_client.execute(TASKS, {"projectId": project_id, "last": 100})

    # then both are served
    assert len(smallest["tasks"]["edges"]) == 1
    assert smallest["tasks"]["pageInfo"]["hasNextPage"] is True
    assert len(largest["tasks"]["edges"]) == 3
    assert (largest["tasks"]["pageInfo"]["hasNextPage"], largest["tasks"]["pageInfo"]["hasPreviousPage"]) == (
        False,
        False,
    )
    assert last["tasks"]["edges"] == largest["tasks"]["edges"]


async def test_empty_list_has_no_cursors(owner_client: GraphQLClient, project_id: str) -> None:
    # when listing a project without tasks
    data = await owner_client.execute(TASKS, {"projectId": project_id, "first": 10})

    # then there are no edges, cursors or further pages
    assert data["tasks"] == {
        "edges": [],
        "pageInfo": {"hasNextPage": False, "hasPreviousPage": False, "startCursor": None, "endCursor": None},
    }


async def test_my_tasks_lists_only_the_viewers_assignments_across_projects(
    anonymous: GraphQLClient, owner_client: GraphQLClient, editor_client: GraphQLClient, project_id: str
) -> None:
    # given two projects where the editor is a member, with tasks assigned to the editor, the owner and nobody
    other_project = await create_project(owner_client, "Other")
    await add_member(owner_client, other_project, editor_client, "EDITOR")
    bystander = await sign_up(anonymous, "Bystander")
    bystander_project = await create_project(bystander, "Elsewhere")
    await create_task(bystander, bystander_project, title="not shared", assigneeId=bystander.user["id"])
    assignees = (editor_client.user["id"], owner_client.user["id"], None)

    def fields(i: int) -> dict[str, Any]:
        return {"title": f"Task {i}", "assigneeId": assignees[i % 3]}

    tasks = await seed_tasks(owner_client, project_id, 12, fields) + await seed_tasks(
        owner_client, other_project, 12, fields
    )
    mine = [task for task in tasks if task["assignee"] and task["assignee"]["id"] == editor_client.user["id"]]

    # when the editor walks myTasks in pages of 3
    pages = []
    after = None
    while True:
        data = await editor_client.execute(MY_TASKS, {"first": 3, "after": after})
        pages.append(data["myTasks"])
        if not data["myTasks"]["pageInfo"]["hasNextPage"]:
            break
        after = data["myTasks"]["pageInfo"]["endCursor"]

    # then exactly the editor's tasks of both projects come back, once each, newest first
    nodes = nodes_of(pages)
    assert len(mine) == 8
    assert len(pages) == 3
    assert [node["id"] for node in nodes] == expected_order("CREATED_AT", "DESC", nodes)
    assert sorted(node["id"] for node in nodes) == sorted(task["id"] for task in mine)
    assert {node["assignee"]["id"] for node in nodes} == {editor_client.user["id"]}
    assert {node["project"]["id"] for node in nodes} == {project_id, other_project}
    assert {page["totalCount"] for page in pages} == {8}
    assert [(page["pageInfo"]["hasPreviousPage"], page["pageInfo"]["hasNextPage"]) for page in pages] == [
        (False, True),
        (True, True),
        (True, False),
    ]
    owners = await owner_client.execute(MY_TASKS, {"first": 100})
    assert owners["myTasks"]["totalCount"] == 8
    assert {edge["node"]["assignee"]["id"] for edge in owners["myTasks"]["edges"]} == {owner_client.user["id"]}
