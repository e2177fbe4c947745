"""searchTasks: word matching, ranking, pagination, visibility, and the index behind it."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from taskql.db.search_terms import MAX_TERM_LENGTH, terms_of
from taskql.settings import Settings
from tests.conftest import GraphQLClient, add_member, create_project, create_task, sign_up

SEARCH = """
query($query: String!, $projectId: ID, $first: Int, $after: String) {
  searchTasks(query: $query, projectId: $projectId, first: $first, after: $after) {
    totalCount
    edges { cursor node { id title project { id } } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""
TASKS = """
query($projectId: ID!) { tasks(projectId: $projectId, first: 1) { pageInfo { endCursor } } }
"""
UPDATE_TASK = """
mutation($input: UpdateTaskInput!) {
  updateTask(input: $input) { task { id title } userErrors { code field message } }
}
"""


async def search(client: GraphQLClient, query: str, **arguments: Any) -> dict[str, Any]:
    return (await client.execute(SEARCH, {"query": query, "first": 100, **arguments}))["searchTasks"]


def found(connection: dict[str, Any]) -> list[str]:
    return [edge["node"]["id"] for edge in connection["edges"]]


async def test_search_matches_title_and_description_words_ignoring_case_and_accents(
    owner_client: GraphQLClient, project_id: str
) -> None:
    # given tasks mentioning a café in their title, their description, or not at all
    in_title = await create_task(owner_client, project_id, title="Café opening")
    in_description = await create_task(
        owner_client, project_id, title="Staff party", description="Book the CAFE for Friday."
    )
    await create_task(owner_client, project_id, title="Cafeteria menu", description="Not the same word.")
    await create_task(owner_client, project_id, title="Unrelated", description="Nothing to see here.")

    # when searching in lower case without the accent, and in upper case with it
    plain = await search(owner_client, "cafe")
    accented = await search(owner_client, "CAFÉ")

    # then both find the title and the description match, and only those
    assert set(found(plain)) == set(found(accented)) == {in_title["id"], in_description["id"]}
    assert plain["totalCount"] == accented["totalCount"] == 2


async def test_search_requires_every_word(owner_client: GraphQLClient, project_id: str) -> None:
    # given tasks that share some words
    both = await create_task(owner_client, project_id, title="Fix login bug", description="Seen on mobile")
    await create_task(owner_client, project_id, title="Fix signup bug")
    await create_task(owner_client, project_id, title="Login page redesign")
    split = await create_task(owner_client, project_id, title="Mobile release", description="Fix the login crash")

    # when searching for several words
    fix_login = await search(owner_client, "fix LOGIN")
    login_mobile = await search(owner_client, "login mobile")
    none = await search(owner_client, "login unicorn")

    # then only tasks containing all of them match, in the title or description or across both
    assert set(found(fix_login)) == {both["id"], split["id"]}
    assert set(found(login_mobile)) == {both["id"], split["id"]}
    assert (found(none), none["totalCount"]) == ([], 0)


async def test_title_matches_rank_before_description_only_matches(owner_client: GraphQLClient, project_id: str) -> None:
    # given title and description matches created alternately, so creation order alone would mix them
    title_matches, description_matches = [], []
    for i in range(4):
        title_matches.append(await create_task(owner_client, project_id, title=f"Invoice run {i}"))
        description_matches.append(
            await create_task(owner_client, project_id, title=f"Chore {i}", description="Remember the invoice run.")
        )

    # when searching
    result = await search(owner_client, "invoice run")

    # then every title match comes before every description-only match
    ids = found(result)
    assert set(ids[:4]) == {task["id"] for task in title_matches}
    assert set(ids[4:]) == {task["id"] for task in description_matches}
    assert result["totalCount"] == 8


async def test_search_paginates_without_duplicates_or_gaps(owner_client: GraphQLClient, project_id: str) -> None:
    # given 30 matching tasks (half in the title, half in the description) and 10 others
    matching = await asyncio.gather(
        *(
            create_task(owner_client, project_id, title=f"Deploy step {i}")
            if i % 2
            else create_task(owner_client, project_id, title=f"Step {i}", description="Part of the deploy.")
            for i in range(30)
        ),
        *(create_task(owner_client, project_id, title=f"Other {i}") for i in range(10)),
    )
    expected = {task["id"] for task in matching[:30]}

    # when walking the results 7 at a time
    pages = []
    after = None
    while True:
        data = await owner_client.execute(SEARCH, {"query": "deploy", "first": 7, "after": after})
        pages.append(data["searchTasks"])
        if not data["searchTasks"]["pageInfo"]["hasNextPage"]:
            break
        after = data["searchTasks"]["pageInfo"]["endCursor"]

    # then every match comes exactly once, title matches first, with a consistent totalCount and pageInfo
    ids = [task_id for page in pages for task_id in found(page)]
    assert len(ids) == len(set(ids)) == 30
    assert set(ids) == expected
    titles = [edge["node"]["title"] for page in pages for edge in page["edges"]]
    assert all(title.startswith("Deploy") for title in titles[:15])
    assert not any(title.startswith("Deploy") for title in titles[15:])
    assert [len(page["edges"]) for page in pages] == [7, 7, 7, 7, 2]
    assert {page["totalCount"] for page in pages} == {30}
    assert [page["pageInfo"]["hasPreviousPage"] for page in pages] == [False, True, True, True, True]
    assert all(page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"] for page in pages)


async def test_search_is_restricted_to_the_given_project(owner_client: GraphQLClient, project_id: str) -> None:
    # given matching tasks in two of the viewer's projects
    other_project = await create_project(owner_client, "Other")
    here = await create_task(owner_client, project_id, title="Budget review")
    there = await create_task(owner_client, other_project, title="Budget review")

    # when searching with and without a project
    scoped = await search(owner_client, "budget", projectId=project_id)
    everywhere = await search(owner_client, "budget")

    # then projectId limits the results to that project
    assert (found(scoped), scoped["totalCount"]) == ([here["id"]], 1)
    assert set(found(everywhere)) == {here["id"], there["id"]}
    assert everywhere["totalCount"] == 2


async def test_search_never_returns_tasks_of_projects_the_viewer_is_not_a_member_of(
    anonymous: GraphQLClient, owner_client: GraphQLClient, viewer_client: GraphQLClient, project_id: str
) -> None:
    # given a matching task in the viewer's project and in a stranger's project
    stranger = await sign_up(anonymous, "Stranger")
    strangers_project = await create_project(stranger, "Secret")
    await create_task(stranger, strangers_project, title="Secret roadmap")
    visible = await create_task(owner_client, project_id, title="Public roadmap")

    # when the viewer searches everywhere, and in the stranger's project
    everywhere = await search(viewer_client, "roadmap")
    body = await viewer_client.post(SEARCH, {"query": "roadmap", "projectId": strangers_project})

    # then only tasks of the viewer's projects come back; the other project is reported as not found
    assert (found(everywhere), everywhere["totalCount"]) == ([visible["id"]], 1)
    assert body["data"] is None
    assert [error["extensions"]["code"] for error in body["errors"]] == ["NOT_FOUND"]
    # and the stranger, a member of only their own project, sees only their task
    assert [edge["node"]["title"] for edge in (await search(stranger, "roadmap"))["edges"]] == ["Secret roadmap"]


async def test_search_follows_membership_changes(
    anonymous: GraphQLClient, owner_client: GraphQLClient, project_id: str
) -> None:
    # given a user who is not yet a member of the project
    newcomer = await sign_up(anonymous, "Newcomer")
    task = await create_task(owner_client, project_id, title="Onboarding checklist")
    assert (await search(newcomer, "onboarding"))["totalCount"] == 0

    # when they are added to it
    await add_member(owner_client, project_id, newcomer, "VIEWER")

    # then its tasks become searchable for them
    assert found(await search(newcomer, "onboarding")) == [task["id"]]


@pytest.mark.parametrize(
    "query",
    ["", "   ", "\t\n", "?!.,;:-", "— … «»"],
    ids=["empty", "spaces", "whitespace", "punctuation", "unicode-punctuation"],
)
async def test_query_without_words_is_bad_user_input(owner_client: GraphQLClient, project_id: str, query: str) -> None:
    # given a project with a task
    await create_task(owner_client, project_id, title="Anything")

    # when searching for no word at all
    body = await owner_client.post(SEARCH, {"query": query})

    # then the request fails with BAD_USER_INPUT
    assert body["data"] is None
    assert [error["extensions"]["code"] for error in body["errors"]] == ["BAD_USER_INPUT"]


async def test_cursor_from_a_task_list_is_refused_by_search(owner_client: GraphQLClient, project_id: str) -> None:
    # given a cursor from the project's task list
    await create_task(owner_client, project_id, title="Alpha")
    await create_task(owner_client, project_id, title="Alpha two")
    cursor = (await owner_client.execute(TASKS, {"projectId": project_id}))["tasks"]["pageInfo"]["endCursor"]

    # when it is used to page search results
    body = await owner_client.post(SEARCH, {"query": "alpha", "first": 1, "after": cursor})

    # then it is refused
    assert [error["extensions"]["code"] for error in body["errors"]] == ["BAD_USER_INPUT"]


async def test_updating_a_title_updates_what_search_finds(owner_client: GraphQLClient, project_id: str) -> None:
    # given a task found by a word of its title
    task = await create_task(owner_client, project_id, title="Quarterly report", description="Numbers for the board")
    assert found(await search(owner_client, "quarterly")) == [task["id"]]

    # when the title changes
    data = await owner_client.execute(UPDATE_TASK, {"input": {"id": task["id"], "title": "Annual report"}})
    assert data["updateTask"]["userErrors"] == []

    # then the old word no longer finds it, the new word and the untouched description still do
    assert (await search(owner_client, "quarterly"))["totalCount"] == 0
    assert found(await search(owner_client, "annual")) == [task["id"]]
    assert found(await search(owner_client, "report board")) == [task["id"]]


def test_terms_of_folds_case_and_accents_and_keeps_distinct_words_in_order() -> None:
    assert terms_of("Café CAFE café-au-lait") == ["cafe", "au", "lait"]
    assert terms_of("Ünïcödé Straße ﬁle") == ["unicode", "strasse", "file"]
    assert terms_of("Fix bug #42 in v2_final (again!)") == ["fix", "bug", "42", "in", "v2_final", "again"]
    assert terms_of("Zürich, Ζυρίχη; 東京") == ["zurich", "ζυριχη", "東京"]


def test_terms_of_is_empty_without_words_and_truncates_long_words() -> None:
    assert terms_of("") == []
    assert terms_of("  ?!.,;:-  — … ") == []
    long_word = "a" * (MAX_TERM_LENGTH + 10)
    assert terms_of(f"{long_word} {long_word[:-1]}") == ["a" * MAX_TERM_LENGTH]


def winning_plan_stages(explain: Any, in_plan: bool = False) -> list[str]:
    """Stage names in every winning plan of an explain result (find or aggregate, classic or SBE)."""
    stages: list[str] = []
    if isinstance(explain, dict):
        for key, value in explain.items():
            if key == "stage" and in_plan:
                stages.append(value)
            elif key != "rejectedPlans":
                stages += winning_plan_stages(value, in_plan or key == "winningPlan")
    elif isinstance(explain, list):
        for item in explain:
            stages += winning_plan_stages(item, in_plan)
    return stages


async def test_search_reads_through_an_index_not_a_collection_scan(
    owner_client: GraphQLClient, project_id: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given matching and non-matching tasks in two projects
    other_project = await create_project(owner_client, "Other")
    await asyncio.gather(
        *(create_task(owner_client, project_id, title=f"Cafe menu {i}") for i in range(5)),
        *(create_task(owner_client, other_project, title="Menu", description="for the cafe") for i in range(5)),
        *(create_task(owner_client, project_id, title=f"Unrelated {i}") for i in range(20)),
    )
    # and a record of every read the app sends to the tasks collection
    reads: list[dict[str, Any]] = []
    aggregate, count_documents = AsyncCollection.aggregate, AsyncCollection.count_documents

    async def recording_aggregate(self: AsyncCollection, pipeline: list[Any], *args: Any, **kwargs: Any) -> Any:
        if self.name == "tasks":
            reads.append(
                {"pipeline": copy.deepcopy(pipeline), **({"hint": kwargs["hint"]} if "hint" in kwargs else {})}
            )
        return await aggregate(self, pipeline, *args, **kwargs)

    async def recording_count(self: AsyncCollection, filter: dict[str, Any], *args: Any, **kwargs: Any) -> int:
        if self.name == "tasks":
            pipeline = [{"$match": copy.deepcopy(filter)}, {"$group": {"_id": 1, "n": {"$sum": 1}}}]
            reads.append({"pipeline": pipeline, **({"hint": kwargs["hint"]} if "hint" in kwargs else {})})
        return await count_documents(self, filter, *args, **kwargs)

    monkeypatch.setattr(AsyncCollection, "aggregate", recording_aggregate)
    monkeypatch.setattr(AsyncCollection, "count_documents", recording_count)

    # when searching within a project and across the viewer's projects, with totals and a cursor
    first_page = await owner_client.execute(SEARCH, {"query": "Café menu", "projectId": project_id, "first": 2})
    after = first_page["searchTasks"]["pageInfo"]["endCursor"]
    await owner_client.execute(SEARCH, {"query": "cafe MENU", "projectId": project_id, "first": 2, "after": after})
    everywhere = await owner_client.execute(SEARCH, {"query": "menu cafe", "first": 4})
    await owner_client.execute(
        SEARCH, {"query": "menu cafe", "first": 4, "after": everywhere["searchTasks"]["pageInfo"]["endCursor"]}
    )
    monkeypatch.undo()

    # then the server's query planner serves each of those reads from an index scan, never a collection scan
    assert first_page["searchTasks"]["totalCount"] == 5 and everywhere["searchTasks"]["totalCount"] == 10
    assert len(reads) >= 8
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_uri)
    try:
        db = mongo[settings.mongodb_database]
        for read in reads:
            explain = await db.command("explain", {"aggregate": "tasks", "cursor": {}, **read})
            stages = winning_plan_stages(explain)
            assert "IXSCAN" in stages and "COLLSCAN" not in stages, (read, stages)
    finally:
        await mongo.close()
