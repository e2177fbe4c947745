"""Projects and their members end to end: lifecycle, validation, listing, membership, stats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskql.settings import Settings
from tests.conftest import (
    ADD_MEMBER,
    CREATE_PROJECT,
    CREATE_TASK,
    DELETE_PROJECT,
    MY_TASKS,
    UPDATE_PROJECT_MEMBER,
    GraphQLClient,
    add_member,
    create_project,
    create_task,
    make_admin,
    sign_up,
)

PROJECT = """
query($id: ID!) {
  project(id: $id) {
    id name description viewerRole createdAt updatedAt
    owner { id }
    members { user { id } role }
  }
}
"""
PROJECTS = """
query($first: Int, $after: String) {
  projects(first: $first, after: $after) {
    totalCount
    edges { cursor node { id name } }
    pageInfo { hasNextPage hasPreviousPage endCursor }
  }
}
"""
UPDATE_PROJECT = """
mutation($input: UpdateProjectInput!) {
  updateProject(input: $input) { project { id name description updatedAt } userErrors { code field message } }
}
"""
REMOVE_PROJECT_MEMBER = """
mutation($input: RemoveProjectMemberInput!) {
  removeProjectMember(input: $input) { project { id members { user { id } role } } userErrors { code field message } }
}
"""
TASK = """
query($id: ID!) {
  task(id: $id) {
    id version assignee { id }
    activity(first: 50) { edges { node { kind changedFields actor { id } taskId } } }
  }
}
"""
TASKS = """
query($projectId: ID!) {
  tasks(projectId: $projectId) { totalCount }
}
"""
UPDATE_TASK = """
mutation($input: UpdateTaskInput!) {
  updateTask(input: $input) { task { id status } userErrors { code field message } }
}
"""
STATS = """
query($id: ID!) {
  project(id: $id) {
    stats {
      total overdue dueNext7Days
      byStatus { status count }
      byPriority { priority count }
    }
  }
}
"""


def members_of(project: dict[str, Any]) -> dict[str, str]:
    return {m["user"]["id"]: m["role"] for m in project["members"]}


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- lifecycle ---------------------------------------------------------------------------------


async def test_create_project_makes_the_creator_its_owner(owner_client: GraphQLClient) -> None:
    data = await owner_client.execute(CREATE_PROJECT, {"input": {"name": "  Launch  ", "description": "Ship it"}})

    payload = data["createProject"]
    assert payload["userErrors"] == []
    project = (await owner_client.execute(PROJECT, {"id": payload["project"]["id"]}))["project"]
    assert (project["name"], project["description"]) == ("Launch", "Ship it")
    assert project["owner"]["id"] == owner_client.user["id"]
    assert project["members"] == [{"user": {"id": owner_client.user["id"]}, "role": "OWNER"}]
    assert project["viewerRole"] == "OWNER"
    assert project["createdAt"] == project["updatedAt"]


async def test_update_project_changes_only_the_fields_sent(owner_client: GraphQLClient) -> None:
    data = await owner_client.execute(CREATE_PROJECT, {"input": {"name": "Launch", "description": "Ship it"}})
    project_id = data["createProject"]["project"]["id"]

    data = await owner_client.execute(UPDATE_PROJECT, {"input": {"id": project_id, "name": "Relaunch"}})

    payload = data["updateProject"]
    assert payload["userErrors"] == []
    assert (payload["project"]["name"], payload["project"]["description"]) == ("Relaunch", "Ship it")
    project = (await owner_client.execute(PROJECT, {"id": project_id}))["project"]
    assert (project["name"], project["description"]) == ("Relaunch", "Ship it")
    assert datetime.fromisoformat(project["updatedAt"]) > datetime.fromisoformat(project["createdAt"])


async def test_delete_project_removes_it_and_its_tasks(owner_client: GraphQLClient, project_id: str) -> None:
    tasks = [await create_task(owner_client, project_id, title=f"Task {i}") for i in range(3)]
    other_project = await create_project(owner_client, "Other")
    survivor = await create_task(owner_client, other_project, title="Survivor")

    data = await owner_client.execute(DELETE_PROJECT, {"input": {"id": project_id}})

    assert data["deleteProject"] == {"deletedProjectId": project_id, "userErrors": []}
    project = await owner_client.post(PROJECT, {"id": project_id})
    assert project["data"]["project"] is None
    assert project["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    for task in tasks:
        body = await owner_client.post(TASK, {"id": task["id"]})
        assert body["data"]["task"] is None
        assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert (await owner_client.execute(TASK, {"id": survivor["id"]}))["task"]["id"] == survivor["id"]
    listed = await owner_client.execute(PROJECTS)
    assert [e["node"]["id"] for e in listed["projects"]["edges"]] == [other_project]


async def test_deleting_a_project_twice_is_not_found(owner_client: GraphQLClient, project_id: str) -> None:
    await owner_client.execute(DELETE_PROJECT, {"input": {"id": project_id}})

    data = await owner_client.execute(DELETE_PROJECT, {"input": {"id": project_id}})

    assert data["deleteProject"]["deletedProjectId"] is None
    assert [e["code"] for e in data["deleteProject"]["userErrors"]] == ["NOT_FOUND"]


# --- validation --------------------------------------------------------------------------------

INVALID_FIELDS = [
    pytest.param({"name": ""}, ["input", "name"], "must not be empty", id="empty-name"),
    pytest.param({"name": "   "}, ["input", "name"], "must not be empty", id="blank-name"),
    pytest.param({"name": "n" * 101}, ["input", "name"], "must be at most 100 characters", id="long-name"),
    pytest.param(
        {"name": "ok", "description": "d" * 2001},
        ["input", "description"],
        "must be at most 2000 characters",
        id="long-description",
    ),
]


@pytest.mark.parametrize(("fields", "field", "message"), INVALID_FIELDS)
async def test_create_project_validates_its_fields(
    fields: dict[str, str], field: list[str], message: str, owner_client: GraphQLClient
) -> None:
    data = await owner_client.execute(CREATE_PROJECT, {"input": fields})

    assert data["createProject"] == {
        "project": None,
        "userErrors": [{"code": "VALIDATION", "field": field, "message": message}],
    }
    listed = await owner_client.execute(PROJECTS)
    assert listed["projects"]["totalCount"] == 0


@pytest.mark.parametrize(("fields", "field", "message"), INVALID_FIELDS)
async def test_update_project_validates_its_fields(
    fields: dict[str, str], field: list[str], message: str, owner_client: GraphQLClient, project_id: str
) -> None:
    data = await owner_client.execute(UPDATE_PROJECT, {"input": {"id": project_id, **fields}})

    assert data["updateProject"] == {
        "project": None,
        "userErrors": [{"code": "VALIDATION", "field": field, "message": message}],
    }
    project = (await owner_client.execute(PROJECT, {"id": project_id}))["project"]
    assert (project["name"], project["description"]) == ("Project", "")


async def test_every_invalid_field_is_reported_at_once(owner_client: GraphQLClient) -> None:
    data = await owner_client.execute(CREATE_PROJECT, {"input": {"name": "", "description": "d" * 2001}})

    errors = data["createProject"]["userErrors"]
    assert {tuple(e["field"]) for e in errors} == {("input", "name"), ("input", "description")}
    assert {e["code"] for e in errors} == {"VALIDATION"}


async def test_limits_are_inclusive(owner_client: GraphQLClient) -> None:
    data = await owner_client.execute(CREATE_PROJECT, {"input": {"name": "n" * 100, "description": "d" * 2000}})

    assert data["createProject"]["userErrors"] == []
    assert data["createProject"]["project"]["name"] == "n" * 100


# --- listing -----------------------------------------------------------------------------------


async def test_projects_lists_member_projects_newest_first(
    owner_client: GraphQLClient, anonymous: GraphQLClient
) -> None:
    stranger = await sign_up(anonymous, "Stranger")
    first = await create_project(owner_client, "First")
    await create_project(stranger, "Not shared")
    second = await create_project(owner_client, "Second")
    shared = await create_project(stranger, "Shared with owner")
    await add_member(stranger, shared, owner_client, "VIEWER")
    third = await create_project(owner_client, "Third")

    data = await owner_client.execute(PROJECTS)

    assert data["projects"]["totalCount"] == 4
    assert [e["node"]["id"] for e in data["projects"]["edges"]] == [third, shared, second, first]


async def test_projects_pages_with_cursors(owner_client: GraphQLClient) -> None:
    ids = [await create_project(owner_client, f"P{i}") for i in range(5)]

    page_one = (await owner_client.execute(PROJECTS, {"first": 2}))["projects"]
    page_two = (await owner_client.execute(PROJECTS, {"first": 2, "after": page_one["pageInfo"]["endCursor"]}))[
        "projects"
    ]
    page_three = (await owner_client.execute(PROJECTS, {"first": 2, "after": page_two["pageInfo"]["endCursor"]}))[
        "projects"
    ]

    seen = [e["node"]["id"] for page in (page_one, page_two, page_three) for e in page["edges"]]
    assert seen == ids[::-1]
    assert [page["totalCount"] for page in (page_one, page_two, page_three)] == [5, 5, 5]
    assert [page["pageInfo"]["hasNextPage"] for page in (page_one, page_two, page_three)] == [True, True, False]
    assert page_two["pageInfo"]["hasPreviousPage"] is True


async def test_admin_sees_every_project(
    owner_client: GraphQLClient, anonymous: GraphQLClient, settings: Settings, project_id: str
) -> None:
    stranger = await sign_up(anonymous, "Stranger")
    other = await create_project(stranger, "Other")
    admin = await sign_up(anonymous, "Admin")
    await make_admin(settings, admin)

    data = await admin.execute(PROJECTS)

    assert data["projects"]["totalCount"] == 2
    assert [e["node"]["id"] for e in data["projects"]["edges"]] == [other, project_id]
    roles = [(await admin.execute(PROJECT, {"id": pid}))["project"]["viewerRole"] for pid in (other, project_id)]
    assert roles == [None, None]


async def test_viewer_role_is_the_viewers_own_role(
    owner_client: GraphQLClient, editor_client: GraphQLClient, viewer_client: GraphQLClient, project_id: str
) -> None:
    roles = [
        (await client.execute(PROJECT, {"id": project_id}))["project"]["viewerRole"]
        for client in (owner_client, editor_client, viewer_client)
    ]

    assert roles == ["OWNER", "EDITOR", "VIEWER"]


# --- members -----------------------------------------------------------------------------------


async def test_add_member_by_email_gives_them_the_role(
    owner_client: GraphQLClient, anonymous: GraphQLClient, project_id: str
) -> None:
    member = await sign_up(anonymous, "Member")

    data = await owner_client.execute(
        ADD_MEMBER,
        {"input": {"projectId": project_id, "email": f"  {member.user['email'].upper()} ", "role": "VIEWER"}},
    )

    payload = data["addProjectMember"]
    assert payload["userErrors"] == []
    assert members_of(payload["project"]) == {owner_client.user["id"]: "OWNER", member.user["id"]: "VIEWER"}
    seen = (await member.execute(PROJECT, {"id": project_id}))["project"]
    assert seen["viewerRole"] == "VIEWER"


async def test_add_member_defaults_to_editor(
    owner_client: GraphQLClient, anonymous: GraphQLClient, project_id: str
) -> None:
    member = await sign_up(anonymous, "Member")

    data = await owner_client.execute(ADD_MEMBER, {"input": {"projectId": project_id, "email": member.user["email"]}})

    assert members_of(data["addProjectMember"]["project"])[member.user["id"]] == "EDITOR"


async def test_add_member_with_an_unknown_email_is_not_found(owner_client: GraphQLClient, project_id: str) -> None:
    data = await owner_client.execute(
        ADD_MEMBER, {"input": {"projectId": project_id, "email": "nobody@example.com", "role": "EDITOR"}}
    )

    payload = data["addProjectMember"]
    assert payload["project"] is None
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [("NOT_FOUND", ["input", "email"])]


@pytest.mark.parametrize("who", ["editor", "owner"])
async def test_adding_an_existing_member_is_a_conflict(
    who: str, owner_client: GraphQLClient, editor_client: GraphQLClient, project_id: str
) -> None:
    existing = {"editor": editor_client, "owner": owner_client}[who]

    data = await owner_client.execute(
        ADD_MEMBER, {"input": {"projectId": project_id, "email": existing.user["email"], "role": "VIEWER"}}
    )

    payload = data["addProjectMember"]
    assert payload["project"] is None
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [("CONFLICT", ["input", "email"])]
    project = (await owner_client.execute(PROJECT, {"id": project_id}))["project"]
    assert members_of(project) == {owner_client.user["id"]: "OWNER", editor_client.user["id"]: "EDITOR"}


async def test_demoted_editor_can_no_longer_write_tasks(
    owner_client: GraphQLClient, editor_client: GraphQLClient, project_id: str
) -> None:
    await create_task(editor_client, project_id, title="While an editor")

    data = await owner_client.execute(
        UPDATE_PROJECT_MEMBER,
        {"input": {"projectId": project_id, "userId": editor_client.user["id"], "role": "VIEWER"}},
    )

    payload = data["updateProjectMember"]
    assert payload["userErrors"] == []
    assert members_of(payload["project"])[editor_client.user["id"]] == "VIEWER"
    attempt = await editor_client.execute(CREATE_TASK, {"input": {"projectId": project_id, "title": "After demotion"}})
    assert attempt["createTask"]["task"] is None
    assert [e["code"] for e in attempt["createTask"]["userErrors"]] == ["FORBIDDEN"]
    seen = await editor_client.execute(PROJECT, {"id": project_id})
    assert seen["project"]["viewerRole"] == "VIEWER"
    assert (await editor_client.execute(TASKS, {"projectId": project_id}))["tasks"]["totalCount"] == 1


async def test_promoted_viewer_can_write_tasks(
    owner_client: GraphQLClient, viewer_client: GraphQLClient, project_id: str
) -> None:
    data = await owner_client.execute(
        UPDATE_PROJECT_MEMBER,
        {"input": {"projectId": project_id, "userId": viewer_client.user["id"], "role": "EDITOR"}},
    )

    assert data["updateProjectMember"]["userErrors"] == []
    task = await create_task(viewer_client, project_id, title="Now allowed")
    assert task["createdBy"]["id"] == viewer_client.user["id"]


async def test_changing_the_role_of_a_non_member_is_not_found(
    owner_client: GraphQLClient, outsider_client: GraphQLClient, project_id: str
) -> None:
    data = await owner_client.execute(
        UPDATE_PROJECT_MEMBER,
        {"input": {"projectId": project_id, "userId": outsider_client.user["id"], "role": "EDITOR"}},
    )

    assert [(e["code"], e["field"]) for e in data["updateProjectMember"]["userErrors"]] == [
        ("NOT_FOUND", ["input", "userId"])
    ]


async def test_removed_member_immediately_loses_access(
    owner_client: GraphQLClient, editor_client: GraphQLClient, project_id: str
) -> None:
    task = await create_task(editor_client, project_id, title="Written before removal")

    data = await owner_client.execute(
        REMOVE_PROJECT_MEMBER, {"input": {"projectId": project_id, "userId": editor_client.user["id"]}}
    )

    payload = data["removeProjectMember"]
    assert payload["userErrors"] == []
    assert members_of(payload["project"]) == {owner_client.user["id"]: "OWNER"}
    for document, variables in (
        (PROJECT, {"id": project_id}),
        (TASK, {"id": task["id"]}),
        (TASKS, {"projectId": project_id}),
    ):
        body = await editor_client.post(document, variables)
        assert [e["extensions"]["code"] for e in body["errors"]] == ["NOT_FOUND"]
    listed = await editor_client.execute(PROJECTS)
    assert listed["projects"]["totalCount"] == 0
    attempt = await editor_client.execute(CREATE_TASK, {"input": {"projectId": project_id, "title": "After removal"}})
    assert [e["code"] for e in attempt["createTask"]["userErrors"]] == ["NOT_FOUND"]


async def test_removing_a_member_unassigns_their_tasks(
    owner_client: GraphQLClient, editor_client: GraphQLClient, viewer_client: GraphQLClient, project_id: str
) -> None:
    theirs = [
        await create_task(owner_client, project_id, title=f"Editor's {i}", assigneeId=editor_client.user["id"])
        for i in range(2)
    ]
    others = await create_task(owner_client, project_id, title="Viewer's", assigneeId=viewer_client.user["id"])
    assert (await editor_client.execute(MY_TASKS))["myTasks"]["totalCount"] == 2

    data = await owner_client.execute(
        REMOVE_PROJECT_MEMBER, {"input": {"projectId": project_id, "userId": editor_client.user["id"]}}
    )

    assert data["removeProjectMember"]["userErrors"] == []
    for task in theirs:
        current = (await owner_client.execute(TASK, {"id": task["id"]}))["task"]
        assert current["assignee"] is None
        assert current["version"] == 2
        events = [e["node"] for e in current["activity"]["edges"]]
        assert [e["kind"] for e in events] == ["TASK_CREATED", "TASK_UPDATED"]
        assert events[-1] == {
            "kind": "TASK_UPDATED",
            "changedFields": ["assignee"],
            "actor": {"id": owner_client.user["id"]},
            "taskId": task["id"],
        }
    untouched = (await owner_client.execute(TASK, {"id": others["id"]}))["task"]
    assert (untouched["assignee"], untouched["version"]) == ({"id": viewer_client.user["id"]}, 1)
    assert (await editor_client.execute(MY_TASKS))["myTasks"] == {"totalCount": 0, "edges": []}


async def test_a_member_can_leave_a_project(
    owner_client: GraphQLClient, viewer_client: GraphQLClient, editor_client: GraphQLClient, project_id: str
) -> None:
    data = await viewer_client.execute(
        REMOVE_PROJECT_MEMBER, {"input": {"projectId": project_id, "userId": viewer_client.user["id"]}}
    )

    assert data["removeProjectMember"]["userErrors"] == []
    body = await viewer_client.post(PROJECT, {"id": project_id})
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    project = (await owner_client.execute(PROJECT, {"id": project_id}))["project"]
    assert members_of(project) == {owner_client.user["id"]: "OWNER", editor_client.user["id"]: "EDITOR"}


async def test_a_member_cannot_remove_someone_else(
    editor_client: GraphQLClient, viewer_client: GraphQLClient, owner_client: GraphQLClient, project_id: str
) -> None:
    data = await editor_client.execute(
        REMOVE_PROJECT_MEMBER, {"input": {"projectId": project_id, "userId": viewer_client.user["id"]}}
    )

    assert [e["code"] for e in data["removeProjectMember"]["userErrors"]] == ["FORBIDDEN"]
    assert (await viewer_client.execute(PROJECT, {"id": project_id}))["project"]["viewerRole"] == "VIEWER"


async def test_removing_a_non_member_is_not_found(
    owner_client: GraphQLClient, outsider_client: GraphQLClient, project_id: str
) -> None:
    data = await owner_client.execute(
        REMOVE_PROJECT_MEMBER, {"input": {"projectId": project_id, "userId": outsider_client.user["id"]}}
    )

    assert [(e["code"], e["field"]) for e in data["removeProjectMember"]["userErrors"]] == [
        ("NOT_FOUND", ["input", "userId"])
    ]


@pytest.mark.parametrize("by", ["owner", "admin"])
@pytest.mark.parametrize(
    ("document", "extra"),
    [
        pytest.param(REMOVE_PROJECT_MEMBER, {}, id="remove"),
        pytest.param(UPDATE_PROJECT_MEMBER, {"role": "EDITOR"}, id="demote"),
        pytest.param(UPDATE_PROJECT_MEMBER, {"role": "VIEWER"}, id="demote-to-viewer"),
    ],
)
async def test_the_project_owner_cannot_be_removed_or_demoted(
    document: str,
    extra: dict[str, str],
    by: str,
    owner_client: GraphQLClient,
    anonymous: GraphQLClient,
    settings: Settings,
    project_id: str,
) -> None:
    actor = owner_client
    if by == "admin":
        actor = await sign_up(anonymous, "Admin")
        await make_admin(settings, actor)

    data = await actor.execute(
        document, {"input": {"projectId": project_id, "userId": owner_client.user["id"], **extra}}
    )

    [payload] = data.values()
    assert payload["project"] is None
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [("CONFLICT", ["input", "userId"])]
    project = (await owner_client.execute(PROJECT, {"id": project_id}))["project"]
    assert project["viewerRole"] == "OWNER"


# --- stats -------------------------------------------------------------------------------------


async def test_stats_of_an_empty_project_list_every_value_with_zero(
    owner_client: GraphQLClient, project_id: str
) -> None:
    data = await owner_client.execute(STATS, {"id": project_id})

    assert data["project"]["stats"] == {
        "total": 0,
        "overdue": 0,
        "dueNext7Days": 0,
        "byStatus": [{"status": s, "count": 0} for s in ("TODO", "IN_PROGRESS", "DONE")],
        "byPriority": [{"priority": p, "count": 0} for p in ("LOW", "MEDIUM", "HIGH", "URGENT")],
    }


async def test_stats_count_tasks_by_status_priority_and_due_date(
    owner_client: GraphQLClient, viewer_client: GraphQLClient, project_id: str
) -> None:
    now = datetime.now(UTC)
    cases = [
        ("TODO", "HIGH", now - timedelta(days=1)),  # overdue
        ("IN_PROGRESS", "URGENT", now - timedelta(hours=2)),  # overdue
        ("DONE", "HIGH", now - timedelta(days=1)),  # done: not overdue
        ("TODO", "MEDIUM", now + timedelta(days=3)),  # due soon
        ("IN_PROGRESS", "MEDIUM", now + timedelta(hours=1)),  # due soon
        ("DONE", "HIGH", now + timedelta(days=2)),  # done: not due soon
        ("TODO", "MEDIUM", now + timedelta(days=10)),  # later
        ("TODO", "URGENT", None),  # no due date
    ]
    for status, priority, due in cases:
        await create_task(owner_client, project_id, status=status, priority=priority, dueAt=iso(due) if due else None)
    elsewhere = await create_project(owner_client, "Elsewhere")
    await create_task(owner_client, elsewhere, priority="LOW", dueAt=iso(now - timedelta(days=1)))

    data = await viewer_client.execute(STATS, {"id": project_id})

    assert data["project"]["stats"] == {
        "total": 8,
        "overdue": 2,
        "dueNext7Days": 2,
        "byStatus": [
            {"status": "TODO", "count": 4},
            {"status": "IN_PROGRESS", "count": 2},
            {"status": "DONE", "count": 2},
        ],
        "byPriority": [
            {"priority": "LOW", "count": 0},
            {"priority": "MEDIUM", "count": 3},
            {"priority": "HIGH", "count": 3},
            {"priority": "URGENT", "count": 2},
        ],
    }


async def test_stats_follow_task_changes(owner_client: GraphQLClient, project_id: str) -> None:
    yesterday = iso(datetime.now(UTC) - timedelta(days=1))
    task = await create_task(owner_client, project_id, dueAt=yesterday)
    before = (await owner_client.execute(STATS, {"id": project_id}))["project"]["stats"]["overdue"]

    data = await owner_client.execute(UPDATE_TASK, {"input": {"id": task["id"], "status": "DONE"}})
    assert data["updateTask"]["userErrors"] == []

    after = (await owner_client.execute(STATS, {"id": project_id}))["project"]["stats"]
    assert (before, after["overdue"]) == (1, 0)
    assert {"status": "DONE", "count": 1} in after["byStatus"]
