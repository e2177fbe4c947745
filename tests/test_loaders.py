"""Nested queries cost a constant number of database reads, whatever the page sizes (no N+1)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from taskql.settings import Settings
from tests.conftest import CommandLog, GraphQLClient, add_member, create_project, create_task, sign_up

PROJECTS_TREE = """
query($tasks: Int!) {
  projects(first: 10) { edges { node {
    owner { name }
    members { user { name } }
    tasks(first: $tasks) { edges { node { assignee { name } createdBy { name } project { name } } } }
  } } }
}
"""
MY_TASKS_TREE = """
query($tasks: Int!) {
  myTasks(first: $tasks) { edges { node {
    assignee { name } createdBy { name } project { name owner { name } members { user { name } } }
    activity(first: 5) { totalCount edges { node { kind actor { name } } } }
  } } }
}
"""
SEARCH_TREE = """
query($tasks: Int!) {
  searchTasks(query: "deploy", first: $tasks) { totalCount edges { node {
    assignee { name } createdBy { name } project { name owner { name } }
  } } }
}
"""
PROJECTS = 10
TASKS_PER_PROJECT = 50


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Loaders alone: no entity cache, so every count below is what batching achieves."""
    return settings.model_copy(update={"cache_enabled": False})


@pytest.fixture
async def team(anonymous: GraphQLClient) -> list[GraphQLClient]:
    """An owner and three members sharing ten projects of fifty tasks."""
    people = [await sign_up(anonymous, name) for name in ("Owner", "Ann", "Bob", "Cy")]
    owner, *members = people
    project_ids = [await create_project(owner, f"Project {n}") for n in range(PROJECTS)]
    for project_id in project_ids:
        for member in members:
            await add_member(owner, project_id, member, "EDITOR")
    # Written by and assigned to the members, never the owner, whose record every one of the owner's
    # requests already holds: then every page, even of one task, needs the same reads.
    # Each task's writer is another member than its assignee, for the same reason with a member viewing.
    assignees = itertools.cycle(members)
    writers = itertools.cycle(members[1:] + members[:1])
    jobs = [
        create_task(next(writers), project_id, title=f"deploy step {n}", assigneeId=next(assignees).user["id"])
        for project_id in project_ids
        for n in range(TASKS_PER_PROJECT)
    ]
    for start in range(0, len(jobs), 25):
        await asyncio.gather(*jobs[start : start + 25])
    return people


def _tasks_returned(data: dict) -> int:
    if "projects" in data:
        return sum(len(edge["node"]["tasks"]["edges"]) for edge in data["projects"]["edges"])
    return len(next(iter(data.values()))["edges"])


async def _reads(client: GraphQLClient, log: CommandLog, query: str, tasks: int) -> tuple[int, dict]:
    log.names.clear()
    data = await client.execute(query, {"tasks": tasks})
    return log.reads(), data


# Reads per request, whatever the page size. Every request: the viewer (1; the session check reads
# Redis, auth/revocations.py).
#   projects: the project page, one batch of users, one $lookup of every project's task page  = 4
#   myTasks:  membership, the task page, users (authors), projects, users (owners and members),
#             activity pages, activity counts                                                  = 8
#   search:   membership, the page, its totalCount, users, projects                            = 6
# (document, viewer: index in `team`, reads)
EXPECTED_READS = {"projects": (PROJECTS_TREE, 0, 4), "myTasks": (MY_TASKS_TREE, 1, 8), "search": (SEARCH_TREE, 0, 6)}


@pytest.mark.parametrize("name", EXPECTED_READS)
async def test_nested_reads_do_not_grow_with_page_size(
    team: list[GraphQLClient], command_log: CommandLog, name: str
) -> None:
    query, viewer, expected = EXPECTED_READS[name]

    counts = {}
    for tasks in (1, 10, 50):
        counts[tasks], data = await _reads(team[viewer], command_log, query, tasks)
        lists = PROJECTS if name == "projects" else 1
        assert _tasks_returned(data) == tasks * lists, "full pages, or the count means nothing"

    assert counts == {1: expected, 10: expected, 50: expected}


async def test_projects_tree_returns_every_nested_object(team: list[GraphQLClient], command_log: CommandLog) -> None:
    owner = team[0]

    reads, data = await _reads(owner, command_log, PROJECTS_TREE, TASKS_PER_PROJECT)

    projects = [edge["node"] for edge in data["projects"]["edges"]]
    assert len(projects) == PROJECTS
    names = {person.user["name"] for person in team}
    for project in projects:
        assert project["owner"]["name"] == "Owner"
        assert {m["user"]["name"] for m in project["members"]} == names
        tasks = [edge["node"] for edge in project["tasks"]["edges"]]
        assert len(tasks) == TASKS_PER_PROJECT
        assert len({t["project"]["name"] for t in tasks}) == 1
        assert {t["assignee"]["name"] for t in tasks} == names - {"Owner"}
        assert {t["createdBy"]["name"] for t in tasks} == names - {"Owner"}
    assert reads == EXPECTED_READS["projects"][2]
