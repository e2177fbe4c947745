"""Who may do what: the role matrix, and hidden objects reported exactly like missing ones."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient

from taskql.settings import Settings
from tests.conftest import (
    ADD_MEMBER,
    CREATE_TASK,
    DELETE_PROJECT,
    DELETE_TASK,
    MY_TASKS,
    UPDATE_PROJECT_MEMBER,
    GraphQLClient,
    add_member,
    create_project,
    create_task,
    make_admin,
    sign_up,
)

TASK = """
query($id: ID!) {
  task(id: $id) { id title project { id } }
}
"""
PROJECT = """
query($id: ID!) {
  project(id: $id) { id name viewerRole }
}
"""
NODE = """
query($id: ID!) {
  node(id: $id) { id ... on Task { title } ... on Project { name } }
}
"""
NODES = """
query($ids: [ID!]!) {
  nodes(ids: $ids) { id ... on Task { title } ... on Project { name } }
}
"""
TASKS = """
query($projectId: ID!) {
  tasks(projectId: $projectId) { totalCount edges { node { id } } }
}
"""
SEARCH_TASKS = """
query($query: String!, $projectId: ID) {
  searchTasks(query: $query, projectId: $projectId) { totalCount edges { node { id } } }
}
"""
PROJECTS = """
query {
  projects { totalCount edges { node { id } } }
}
"""
UPDATE_TASK = """
mutation($input: UpdateTaskInput!) {
  updateTask(input: $input) { task { id title } userErrors { code field message } }
}
"""
UPDATE_PROJECT = """
mutation($input: UpdateProjectInput!) {
  updateProject(input: $input) { project { id name } userErrors { code field message } }
}
"""
REMOVE_PROJECT_MEMBER = """
mutation($input: RemoveProjectMemberInput!) {
  removeProjectMember(input: $input) { project { id } userErrors { code field message } }
}
"""

ROLES = ["owner", "editor", "viewer", "outsider", "admin"]
# None: allowed; otherwise the userError code the role gets.
TASK_WRITERS = {"owner": None, "editor": None, "viewer": "FORBIDDEN", "outsider": "NOT_FOUND", "admin": None}
MANAGERS = {"owner": None, "editor": "FORBIDDEN", "viewer": "FORBIDDEN", "outsider": "NOT_FOUND", "admin": None}
VIEWER_ROLES = {"owner": "OWNER", "editor": "EDITOR", "viewer": "VIEWER", "admin": None}


def global_id(type_name: str, object_id: str | ObjectId) -> str:
    return base64.urlsafe_b64encode(f"{type_name}:{object_id}".encode()).decode().rstrip("=")


def object_id_of(global_id: str) -> ObjectId:
    return ObjectId(base64.urlsafe_b64decode(global_id + "=" * (-len(global_id) % 4)).decode().partition(":")[2])


def never_existed(type_name: str) -> str:
    return global_id(type_name, ObjectId())


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    assert len(body["errors"]) == 1, body["errors"]
    return body["errors"][0]


@pytest.fixture
async def actor(
    role: str, anonymous: GraphQLClient, owner_client: GraphQLClient, project_id: str, settings: Settings
) -> GraphQLClient:
    """A client for `role` on the `project_id` project; the admin is not a member of it."""
    if role == "owner":
        return owner_client
    client = await sign_up(anonymous, role.capitalize())
    if role == "admin":
        await make_admin(settings, client)
    elif role in ("editor", "viewer"):
        await add_member(owner_client, project_id, client, role.upper())
    return client


@pytest.fixture
async def task(owner_client: GraphQLClient, project_id: str) -> dict[str, Any]:
    return await create_task(owner_client, project_id, title="Quarterly report")


@pytest.fixture
async def deleted_task_id(owner_client: GraphQLClient, project_id: str) -> str:
    """The ID of a task that existed in the same project and was deleted."""
    gone = await create_task(owner_client, project_id, title="Quarterly report draft")
    data = await owner_client.execute(DELETE_TASK, {"input": {"id": gone["id"]}})
    assert data["deleteTask"]["userErrors"] == []
    return gone["id"]


@pytest.fixture
async def deleted_project_id(owner_client: GraphQLClient) -> str:
    gone = await create_project(owner_client, "Gone")
    data = await owner_client.execute(DELETE_PROJECT, {"input": {"id": gone}})
    assert data["deleteProject"]["userErrors"] == []
    return gone


# --- the role matrix ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
async def test_reading_a_task_by_role(actor: GraphQLClient, role: str, task: dict[str, Any], project_id: str) -> None:
    body = await actor.post(TASK, {"id": task["id"]})

    if role == "outsider":
        assert body["data"] == {"task": None}
        assert only_error(body)["extensions"]["code"] == "NOT_FOUND"
    else:
        assert "errors" not in body, body["errors"]
        assert body["data"]["task"] == {"id": task["id"], "title": "Quarterly report", "project": {"id": project_id}}


@pytest.mark.parametrize("role", ROLES)
async def test_reading_a_project_by_role(actor: GraphQLClient, role: str, project_id: str) -> None:
    body = await actor.post(PROJECT, {"id": project_id})

    if role == "outsider":
        assert body["data"] == {"project": None}
        assert only_error(body)["extensions"]["code"] == "NOT_FOUND"
    else:
        assert "errors" not in body, body["errors"]
        assert body["data"]["project"] == {"id": project_id, "name": "Project", "viewerRole": VIEWER_ROLES[role]}


@pytest.mark.parametrize("role", ROLES)
async def test_reading_nodes_by_role(actor: GraphQLClient, role: str, task: dict[str, Any], project_id: str) -> None:
    ids = [task["id"], project_id]

    single = [await actor.post(NODE, {"id": object_id}) for object_id in ids]
    many = await actor.post(NODES, {"ids": ids})

    if role == "outsider":
        assert [body["data"] for body in single] == [{"node": None}, {"node": None}]
        assert [only_error(body)["extensions"]["code"] for body in single] == ["NOT_FOUND", "NOT_FOUND"]
        assert many["data"] == {"nodes": [None, None]}
        assert sorted((e["path"], e["extensions"]["code"]) for e in many["errors"]) == [
            (["nodes", 0], "NOT_FOUND"),
            (["nodes", 1], "NOT_FOUND"),
        ]
    else:
        expected = [{"id": task["id"], "title": "Quarterly report"}, {"id": project_id, "name": "Project"}]
        assert all("errors" not in body for body in single), single
        assert [body["data"]["node"] for body in single] == expected
        assert "errors" not in many, many["errors"]
        assert many["data"]["nodes"] == expected


@pytest.mark.parametrize("role", ROLES)
async def test_listing_project_tasks_by_role(
    actor: GraphQLClient, role: str, task: dict[str, Any], project_id: str
) -> None:
    body = await actor.post(TASKS, {"projectId": project_id})

    if role == "outsider":
        assert body["data"] is None  # tasks is non-null, so the error nulls the whole result
        assert only_error(body)["extensions"]["code"] == "NOT_FOUND"
        assert only_error(body)["path"] == ["tasks"]
    else:
        assert "errors" not in body, body["errors"]
        assert body["data"]["tasks"] == {"totalCount": 1, "edges": [{"node": {"id": task["id"]}}]}


@pytest.mark.parametrize("role", ROLES)
async def test_searching_tasks_everywhere_by_role(actor: GraphQLClient, role: str, task: dict[str, Any]) -> None:
    body = await actor.post(SEARCH_TASKS, {"query": "quarterly"})

    assert "errors" not in body, body["errors"]
    expected = [] if role == "outsider" else [{"node": {"id": task["id"]}}]
    assert body["data"]["searchTasks"] == {"totalCount": len(expected), "edges": expected}


@pytest.mark.parametrize("role", ROLES)
async def test_searching_tasks_in_a_project_by_role(
    actor: GraphQLClient, role: str, task: dict[str, Any], project_id: str
) -> None:
    body = await actor.post(SEARCH_TASKS, {"query": "quarterly", "projectId": project_id})

    if role == "outsider":
        assert body["data"] is None
        assert only_error(body)["extensions"]["code"] == "NOT_FOUND"
    else:
        assert "errors" not in body, body["errors"]
        assert body["data"]["searchTasks"] == {"totalCount": 1, "edges": [{"node": {"id": task["id"]}}]}


@pytest.mark.parametrize("role", ROLES)
async def test_my_tasks_lists_only_own_assignments_by_role(
    actor: GraphQLClient, role: str, owner_client: GraphQLClient, editor_client: GraphQLClient, project_id: str
) -> None:
    assigned = await create_task(owner_client, project_id, title="For the editor", assigneeId=editor_client.user["id"])
    member = role in ("owner", "editor", "viewer")  # only members can be assigned
    mine = await create_task(owner_client, project_id, title="Mine", assigneeId=actor.user["id"]) if member else None

    data = await actor.execute(MY_TASKS)

    expected = [{"node": {"id": mine["id"]}}] if mine else []
    assert data["myTasks"] == {"totalCount": len(expected), "edges": expected}
    assert {"node": {"id": assigned["id"]}} not in data["myTasks"]["edges"]


async def test_a_stale_assignment_in_a_project_left_stays_hidden_from_my_tasks(
    settings: Settings, owner_client: GraphQLClient, editor_client: GraphQLClient, project_id: str
) -> None:
    """A createTask/updateTask racing the assignee's removal can commit after the removal unassigned their tasks."""
    task = await create_task(owner_client, project_id, title="Raced", assigneeId=editor_client.user["id"])
    removed = await owner_client.execute(
        REMOVE_PROJECT_MEMBER, {"input": {"projectId": project_id, "userId": editor_client.user["id"]}}
    )
    assert removed["removeProjectMember"]["userErrors"] == []
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_uri)
    await mongo[settings.mongodb_database].tasks.update_one(
        {"_id": object_id_of(task["id"])}, {"$set": {"assignee_id": object_id_of(editor_client.user["id"])}}
    )
    await mongo.close()

    data = await editor_client.execute(MY_TASKS)

    assert data["myTasks"] == {"totalCount": 0, "edges": []}
    body = await editor_client.post(TASK, {"id": task["id"]})
    assert only_error(body)["extensions"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize(("role", "code"), TASK_WRITERS.items())
async def test_creating_a_task_by_role(actor: GraphQLClient, role: str, code: str | None, project_id: str) -> None:
    data = await actor.execute(CREATE_TASK, {"input": {"projectId": project_id, "title": f"by {role}"}})

    payload = data["createTask"]
    if code is None:
        assert payload["userErrors"] == []
        assert payload["task"]["title"] == f"by {role}"
        assert payload["task"]["createdBy"]["id"] == actor.user["id"]
    else:
        assert payload["task"] is None
        assert [e["code"] for e in payload["userErrors"]] == [code]


@pytest.mark.parametrize(("role", "code"), TASK_WRITERS.items())
async def test_updating_a_task_by_role(
    actor: GraphQLClient, role: str, code: str | None, task: dict[str, Any], owner_client: GraphQLClient
) -> None:
    data = await actor.execute(UPDATE_TASK, {"input": {"id": task["id"], "title": f"by {role}"}})

    payload = data["updateTask"]
    current = (await owner_client.execute(TASK, {"id": task["id"]}))["task"]
    if code is None:
        assert payload["userErrors"] == []
        assert payload["task"]["title"] == current["title"] == f"by {role}"
    else:
        assert payload["task"] is None
        assert [e["code"] for e in payload["userErrors"]] == [code]
        assert current["title"] == "Quarterly report"


@pytest.mark.parametrize(("role", "code"), TASK_WRITERS.items())
async def test_deleting_a_task_by_role(
    actor: GraphQLClient, role: str, code: str | None, task: dict[str, Any], owner_client: GraphQLClient
) -> None:
    data = await actor.execute(DELETE_TASK, {"input": {"id": task["id"]}})

    payload = data["deleteTask"]
    still_there = await owner_client.post(TASK, {"id": task["id"]})
    if code is None:
        assert payload == {"deletedTaskId": task["id"], "userErrors": []}
        assert still_there["data"]["task"] is None
    else:
        assert payload["deletedTaskId"] is None
        assert [e["code"] for e in payload["userErrors"]] == [code]
        assert still_there["data"]["task"]["id"] == task["id"]


@pytest.mark.parametrize(("role", "code"), MANAGERS.items())
async def test_updating_a_project_by_role(
    actor: GraphQLClient, role: str, code: str | None, project_id: str, owner_client: GraphQLClient
) -> None:
    data = await actor.execute(UPDATE_PROJECT, {"input": {"id": project_id, "name": f"by {role}"}})

    payload = data["updateProject"]
    current = (await owner_client.execute(PROJECT, {"id": project_id}))["project"]
    if code is None:
        assert payload["userErrors"] == []
        assert payload["project"]["name"] == current["name"] == f"by {role}"
    else:
        assert payload["project"] is None
        assert [e["code"] for e in payload["userErrors"]] == [code]
        assert current["name"] == "Project"


@pytest.mark.parametrize(("role", "code"), MANAGERS.items())
async def test_deleting_a_project_by_role(
    actor: GraphQLClient, role: str, code: str | None, project_id: str, owner_client: GraphQLClient
) -> None:
    data = await actor.execute(DELETE_PROJECT, {"input": {"id": project_id}})

    payload = data["deleteProject"]
    still_there = await owner_client.post(PROJECT, {"id": project_id})
    if code is None:
        assert payload == {"deletedProjectId": project_id, "userErrors": []}
        assert still_there["data"]["project"] is None
        assert only_error(still_there)["extensions"]["code"] == "NOT_FOUND"
    else:
        assert payload["deletedProjectId"] is None
        assert [e["code"] for e in payload["userErrors"]] == [code]
        assert still_there["data"]["project"]["id"] == project_id


@pytest.mark.parametrize(("role", "code"), MANAGERS.items())
async def test_adding_a_member_by_role(
    actor: GraphQLClient, role: str, code: str | None, project_id: str, anonymous: GraphQLClient
) -> None:
    newcomer = await sign_up(anonymous, "Newcomer")

    data = await actor.execute(
        ADD_MEMBER, {"input": {"projectId": project_id, "email": newcomer.user["email"], "role": "VIEWER"}}
    )

    payload = data["addProjectMember"]
    newcomer_view = await newcomer.post(PROJECT, {"id": project_id})
    if code is None:
        assert payload["userErrors"] == []
        assert {"user": {"id": newcomer.user["id"]}, "role": "VIEWER"} in payload["project"]["members"]
        assert newcomer_view["data"]["project"]["viewerRole"] == "VIEWER"
    else:
        assert payload["project"] is None
        assert [e["code"] for e in payload["userErrors"]] == [code]
        assert only_error(newcomer_view)["extensions"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize(("role", "code"), MANAGERS.items())
async def test_changing_a_member_role_by_role(
    actor: GraphQLClient,
    role: str,
    code: str | None,
    project_id: str,
    anonymous: GraphQLClient,
    owner_client: GraphQLClient,
) -> None:
    target = await sign_up(anonymous, "Target")
    await add_member(owner_client, project_id, target, "VIEWER")

    data = await actor.execute(
        UPDATE_PROJECT_MEMBER, {"input": {"projectId": project_id, "userId": target.user["id"], "role": "EDITOR"}}
    )

    payload = data["updateProjectMember"]
    target_role = (await target.execute(PROJECT, {"id": project_id}))["project"]["viewerRole"]
    if code is None:
        assert payload["userErrors"] == []
        assert {"user": {"id": target.user["id"]}, "role": "EDITOR"} in payload["project"]["members"]
        assert target_role == "EDITOR"
    else:
        assert payload["project"] is None
        assert [e["code"] for e in payload["userErrors"]] == [code]
        assert target_role == "VIEWER"


@pytest.mark.parametrize(("role", "code"), MANAGERS.items())
async def test_removing_another_member_by_role(
    actor: GraphQLClient,
    role: str,
    code: str | None,
    project_id: str,
    anonymous: GraphQLClient,
    owner_client: GraphQLClient,
) -> None:
    target = await sign_up(anonymous, "Target")
    await add_member(owner_client, project_id, target, "VIEWER")

    data = await actor.execute(REMOVE_PROJECT_MEMBER, {"input": {"projectId": project_id, "userId": target.user["id"]}})

    payload = data["removeProjectMember"]
    target_view = await target.post(PROJECT, {"id": project_id})
    if code is None:
        assert payload == {"project": {"id": project_id}, "userErrors": []}
        assert only_error(target_view)["extensions"]["code"] == "NOT_FOUND"
    else:
        assert payload["project"] is None
        assert [e["code"] for e in payload["userErrors"]] == [code]
        assert target_view["data"]["project"]["viewerRole"] == "VIEWER"


# --- hidden is indistinguishable from missing --------------------------------------------------

TASK_PATHS = [
    pytest.param(TASK, lambda task_id: {"id": task_id}, id="task"),
    pytest.param(NODE, lambda task_id: {"id": task_id}, id="node"),
    pytest.param(NODES, lambda task_id: {"ids": [task_id]}, id="nodes"),
    pytest.param(UPDATE_TASK, lambda task_id: {"input": {"id": task_id, "title": "mine now"}}, id="updateTask"),
    pytest.param(UPDATE_TASK, lambda task_id: {"input": {"id": task_id, "title": ""}}, id="updateTask-invalid"),
    pytest.param(DELETE_TASK, lambda task_id: {"input": {"id": task_id}}, id="deleteTask"),
    pytest.param(
        DELETE_TASK, lambda task_id: {"input": {"id": task_id, "expectedVersion": 1}}, id="deleteTask-version"
    ),
]


@pytest.mark.parametrize(("document", "variables"), TASK_PATHS)
async def test_a_hidden_task_looks_exactly_like_a_missing_one(
    document: str,
    variables: Any,
    outsider_client: GraphQLClient,
    task: dict[str, Any],
    deleted_task_id: str,
) -> None:
    hidden = await outsider_client.post(document, variables(task["id"]))
    deleted = await outsider_client.post(document, variables(deleted_task_id))
    missing = await outsider_client.post(document, variables(never_existed("Task")))

    assert hidden == deleted == missing
    if "errors" in hidden:
        assert {e["extensions"]["code"] for e in hidden["errors"]} == {"NOT_FOUND"}
    else:
        [payload] = hidden["data"].values()
        assert [e["code"] for e in payload["userErrors"]] == ["NOT_FOUND"]


PROJECT_PATHS = [
    pytest.param(PROJECT, lambda project_id, user: {"id": project_id}, id="project"),
    pytest.param(NODE, lambda project_id, user: {"id": project_id}, id="node"),
    pytest.param(NODES, lambda project_id, user: {"ids": [project_id]}, id="nodes"),
    pytest.param(TASKS, lambda project_id, user: {"projectId": project_id}, id="tasks"),
    pytest.param(
        SEARCH_TASKS, lambda project_id, user: {"query": "quarterly", "projectId": project_id}, id="searchTasks"
    ),
    pytest.param(
        CREATE_TASK, lambda project_id, user: {"input": {"projectId": project_id, "title": "x"}}, id="createTask"
    ),
    pytest.param(
        CREATE_TASK, lambda project_id, user: {"input": {"projectId": project_id, "title": ""}}, id="createTask-invalid"
    ),
    pytest.param(
        UPDATE_PROJECT, lambda project_id, user: {"input": {"id": project_id, "name": "x"}}, id="updateProject"
    ),
    pytest.param(
        UPDATE_PROJECT, lambda project_id, user: {"input": {"id": project_id, "name": ""}}, id="updateProject-invalid"
    ),
    pytest.param(DELETE_PROJECT, lambda project_id, user: {"input": {"id": project_id}}, id="deleteProject"),
    pytest.param(
        ADD_MEMBER,
        lambda project_id, user: {"input": {"projectId": project_id, "email": user["email"]}},
        id="addProjectMember",
    ),
    pytest.param(
        UPDATE_PROJECT_MEMBER,
        lambda project_id, user: {"input": {"projectId": project_id, "userId": user["id"], "role": "OWNER"}},
        id="updateProjectMember",
    ),
    pytest.param(
        REMOVE_PROJECT_MEMBER,
        lambda project_id, user: {"input": {"projectId": project_id, "userId": user["id"]}},
        id="removeProjectMember",
    ),
]


@pytest.mark.parametrize(("document", "variables"), PROJECT_PATHS)
async def test_a_hidden_project_looks_exactly_like_a_missing_one(
    document: str,
    variables: Any,
    outsider_client: GraphQLClient,
    project_id: str,
    task: dict[str, Any],
    deleted_project_id: str,
) -> None:
    me = outsider_client.user

    hidden = await outsider_client.post(document, variables(project_id, me))
    deleted = await outsider_client.post(document, variables(deleted_project_id, me))
    missing = await outsider_client.post(document, variables(never_existed("Project"), me))

    assert hidden == deleted == missing
    if "errors" in hidden:
        assert {e["extensions"]["code"] for e in hidden["errors"]} == {"NOT_FOUND"}
    else:
        [payload] = hidden["data"].values()
        assert [e["code"] for e in payload["userErrors"]] == ["NOT_FOUND"]


async def test_nodes_nulls_only_the_entries_the_viewer_cannot_see(
    editor_client: GraphQLClient, anonymous: GraphQLClient, task: dict[str, Any], deleted_task_id: str
) -> None:
    stranger = await sign_up(anonymous, "Stranger")
    elsewhere = await create_task(stranger, await create_project(stranger, "Elsewhere"))

    body = await editor_client.post(NODES, {"ids": [task["id"], elsewhere["id"], deleted_task_id]})

    assert body["data"] == {"nodes": [{"id": task["id"], "title": "Quarterly report"}, None, None]}
    hidden, deleted = sorted(body["errors"], key=lambda error: error["path"])  # errors come in completion order
    assert hidden["path"] == ["nodes", 1]
    assert deleted["path"] == ["nodes", 2]
    assert {k: v for k, v in hidden.items() if k != "path"} == {k: v for k, v in deleted.items() if k != "path"}
    assert hidden["extensions"]["code"] == "NOT_FOUND"


async def test_outsider_search_without_a_project_finds_nothing_rather_than_failing(
    outsider_client: GraphQLClient, task: dict[str, Any]
) -> None:
    own = await create_task(outsider_client, await create_project(outsider_client, "Own"), title="Quarterly plan")

    data = await outsider_client.execute(SEARCH_TASKS, {"query": "quarterly"})

    assert data["searchTasks"] == {"totalCount": 1, "edges": [{"node": {"id": own["id"]}}]}


async def test_outsider_sees_no_projects_but_their_own(outsider_client: GraphQLClient, project_id: str) -> None:
    data = await outsider_client.execute(PROJECTS)

    assert data["projects"] == {"totalCount": 0, "edges": []}


# --- malformed IDs and missing credentials -----------------------------------------------------

BAD_TASK_IDS = [
    pytest.param(lambda project_id: "nope", id="not-base64"),
    pytest.param(lambda project_id: base64.urlsafe_b64encode(b"Task:zzz").decode(), id="bad-object-id"),
    pytest.param(lambda project_id: project_id, id="project-id"),
]
TASK_ID_PATHS = [
    pytest.param(TASK, lambda task_id: {"id": task_id}, ["task"], id="task"),
    pytest.param(
        UPDATE_TASK, lambda task_id: {"input": {"id": task_id, "title": "x"}}, ["updateTask"], id="updateTask"
    ),
    pytest.param(DELETE_TASK, lambda task_id: {"input": {"id": task_id}}, ["deleteTask"], id="deleteTask"),
]


@pytest.mark.parametrize("bad_id", BAD_TASK_IDS)
@pytest.mark.parametrize(("document", "variables", "path"), TASK_ID_PATHS)
async def test_a_malformed_task_id_is_bad_user_input(
    document: str, variables: Any, path: list[str], bad_id: Any, owner_client: GraphQLClient, project_id: str
) -> None:
    body = await owner_client.post(document, variables(bad_id(project_id)))

    error = only_error(body)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["path"] == path
    # A query's field is nullable; a mutation's payload is not, so its error nulls the whole answer.
    assert body["data"] == (None if document.lstrip().startswith("mutation") else {path[0]: None})


@pytest.mark.parametrize(
    "bad_id", ["nope", base64.urlsafe_b64encode(b"Task:zzz").decode(), global_id("Comment", ObjectId())]
)
async def test_a_malformed_node_id_is_bad_user_input(
    bad_id: str, owner_client: GraphQLClient, task: dict[str, Any]
) -> None:
    single = await owner_client.post(NODE, {"id": bad_id})
    many = await owner_client.post(NODES, {"ids": [task["id"], bad_id]})

    assert single["data"] == {"node": None}
    assert only_error(single)["extensions"]["code"] == "BAD_USER_INPUT"
    assert many["data"] == {"nodes": [{"id": task["id"], "title": "Quarterly report"}, None]}
    assert only_error(many)["path"] == ["nodes", 1]
    assert only_error(many)["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_task_id_where_a_project_id_is_expected_is_bad_user_input(
    owner_client: GraphQLClient, task: dict[str, Any]
) -> None:
    body = await owner_client.post(TASKS, {"projectId": task["id"]})

    assert body["data"] is None
    assert only_error(body)["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_malformed_id_in_a_mutation_input_is_a_top_level_error(outsider_client: GraphQLClient) -> None:
    body = await outsider_client.post(UPDATE_PROJECT, {"input": {"id": "nope", "name": "x"}})

    assert body["data"] is None  # the payload is non-null
    assert only_error(body)["extensions"]["code"] == "BAD_USER_INPUT"


@pytest.mark.parametrize(
    ("document", "variables"),
    [
        pytest.param(PROJECTS, {}, id="projects"),
        pytest.param(MY_TASKS, {}, id="myTasks"),
        pytest.param(SEARCH_TASKS, {"query": "quarterly"}, id="searchTasks"),
    ],
)
async def test_unauthenticated_queries_are_refused(
    document: str, variables: dict[str, Any], anonymous: GraphQLClient, project_id: str
) -> None:
    body = await anonymous.post(document, variables)

    assert body["data"] is None
    assert only_error(body)["extensions"]["code"] == "UNAUTHENTICATED"


async def test_unauthenticated_reads_of_an_existing_project_are_refused_not_hidden(
    anonymous: GraphQLClient, project_id: str
) -> None:
    body = await anonymous.post(PROJECT, {"id": project_id})

    assert body["data"] == {"project": None}
    assert only_error(body)["extensions"]["code"] == "UNAUTHENTICATED"


USER_NODE = "query($id: ID!) { node(id: $id) { id ... on User { name } } }"


async def test_a_user_is_a_node_to_those_who_share_a_project_with_them_only(anonymous: GraphQLClient) -> None:
    owner, member, stranger = [await sign_up(anonymous, name) for name in ("Owner", "Member", "Stranger")]
    project_id = await create_project(owner)
    await create_project(stranger)  # a project of their own, shared with no one here
    await add_member(owner, project_id, member, "VIEWER")

    seen = await owner.post(USER_NODE, {"id": member.user["id"]})
    seen_back = await member.post(USER_NODE, {"id": owner.user["id"]})
    unseen = await owner.post(USER_NODE, {"id": stranger.user["id"]})

    assert seen == {"data": {"node": {"id": member.user["id"], "name": "Member"}}}
    assert seen_back == {"data": {"node": {"id": owner.user["id"], "name": "Owner"}}}
    assert unseen["data"] == {"node": None}
    assert unseen["errors"][0]["extensions"]["code"] == "NOT_FOUND"
