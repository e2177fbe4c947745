"""An event is executed once for all the subscribers who asked the same thing, and only for them.

Drives the schema's subscription directly, in process, so the results can be compared by identity.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from tests.conftest import GraphQLClient, create_task, subscribe

FROM_THE_START = "0-0"  # a cursor before every event: the subscription replays the project's whole log
TASK_EVENTS = """
subscription($p: ID!, $after: String, $withTitle: Boolean!) {
  taskEvents(projectId: $p, after: $after) { cursor task { title @include(if: $withTitle) project { name } } }
}
"""
WITH_VIEWER_ROLE = """
subscription($p: ID!, $after: String) { taskEvents(projectId: $p, after: $after) { task { project { viewerRole } } } }
"""
RENAME_PROJECT = "mutation($i: ID!, $n: String!) { updateProject(input: {id: $i, name: $n}) { project { name } } }"


async def events(stream: AsyncIterator[Any], count: int) -> list[dict[str, Any]]:
    received = []
    for _ in range(count):
        result = await anext(stream)
        assert result.errors is None, result.errors
        received.append(result.data["taskEvents"])
    return received


async def test_subscribers_asking_the_same_share_one_result_per_event(
    app: Any, owner_client: GraphQLClient, viewer_client: GraphQLClient, project_id: str
) -> None:
    await create_task(owner_client, project_id, title="one")
    await create_task(owner_client, project_id, title="two")
    variables = {"p": project_id, "withTitle": True}
    async with aclosing(await subscribe(app, owner_client, TASK_EVENTS, after=FROM_THE_START, **variables)) as first:
        one, two = await events(first, 2)
        # A different `after` only changes where the events start, not what an event renders to.
        second = await subscribe(app, viewer_client, TASK_EVENTS, after=one["cursor"], **variables)
        async with aclosing(second):
            [two_again] = await events(second, 1)
    assert two["task"] == {"title": "two", "project": {"name": "Project"}}
    assert two_again is two


async def test_a_different_selection_or_a_per_viewer_field_is_executed_for_each_subscriber(
    app: Any, owner_client: GraphQLClient, viewer_client: GraphQLClient, project_id: str
) -> None:
    await create_task(owner_client, project_id, title="one")
    common = {"p": project_id, "after": FROM_THE_START}
    async with (
        aclosing(await subscribe(app, owner_client, TASK_EVENTS, withTitle=True, **common)) as with_title,
        aclosing(await subscribe(app, owner_client, TASK_EVENTS, withTitle=False, **common)) as without_title,
        aclosing(await subscribe(app, owner_client, WITH_VIEWER_ROLE, **common)) as owners,
        aclosing(await subscribe(app, viewer_client, WITH_VIEWER_ROLE, **common)) as viewers,
    ):
        assert (await events(with_title, 1))[0]["task"] == {"title": "one", "project": {"name": "Project"}}
        assert (await events(without_title, 1))[0]["task"] == {"project": {"name": "Project"}}
        assert (await events(owners, 1))[0]["task"]["project"] == {"viewerRole": "OWNER"}
        assert (await events(viewers, 1))[0]["task"]["project"] == {"viewerRole": "VIEWER"}


async def test_each_event_reads_current_data(app: Any, owner_client: GraphQLClient, project_id: str) -> None:
    variables = {"p": project_id, "after": FROM_THE_START, "withTitle": True}
    async with aclosing(await subscribe(app, owner_client, TASK_EVENTS, **variables)) as stream:
        await create_task(owner_client, project_id, title="before")
        [before] = await events(stream, 1)
        await owner_client.execute(RENAME_PROJECT, {"i": project_id, "n": "Renamed"})
        await create_task(owner_client, project_id, title="after")
        [after] = await events(stream, 1)
    assert before["task"]["project"] == {"name": "Project"}
    assert after["task"]["project"] == {"name": "Renamed"}
