"""In-app notifications: who is notified of what, the viewer's list and unread count, marking read,
visibility after leaving a project, and notificationAdded live and resumed. Jobs run in the server
process (JOBS_IN_PROCESS), as with `make run`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gql import gql

from taskql.settings import Settings
from tests.conftest import (
    REMOVE_MEMBER,
    GraphQLClient,
    add_member,
    create_project,
    create_task,
    sign_up,
    with_jobs,
)
from tests.live import LiveServer, Subscriber, User
from tests.mail import Inbox
from tests.test_subscriptions import start_server

__all__ = ["start_server"]  # a fixture, shared with test_subscriptions

NOTIFICATIONS = """
query($unreadOnly: Boolean! = false) {
  viewer {
    unreadNotificationCount
    notifications(first: 20, unreadOnly: $unreadOnly) {
      totalCount
      edges { node { id kind readAt actor { name } task { title } project { name } } }
    }
  }
}
"""
MARK_READ = """
mutation($input: MarkNotificationsReadInput!) {
  markNotificationsRead(input: $input) {
    markedCount viewer { unreadNotificationCount } userErrors { code field message }
  }
}
"""
UPDATE_TASK = "mutation($i: UpdateTaskInput!) { updateTask(input: $i) { userErrors { code } } }"
NOTIFICATION_ADDED = gql(
    """
    subscription($after: String) {
      notificationAdded(after: $after) { id kind task { title } actor { name } }
    }
    """
)


@pytest.fixture
def settings(settings: Settings, inbox: Inbox) -> Settings:
    return with_jobs(settings, inbox)


async def notifications(client: GraphQLClient, *, count: int, unread_only: bool = False) -> dict[str, Any]:
    """The viewer's notifications, once `count` of them exist (their jobs run in the background)."""
    async with asyncio.timeout(15):
        while True:
            viewer = (await client.execute(NOTIFICATIONS, {"unreadOnly": unread_only}))["viewer"]
            # (The page and the count are two reads: a notification may come between them.)
            if len(viewer["notifications"]["edges"]) >= count and viewer["notifications"]["totalCount"] >= count:
                return viewer
            await asyncio.sleep(0.05)


def kinds(viewer: dict[str, Any]) -> list[str]:
    return [edge["node"]["kind"] for edge in viewer["notifications"]["edges"]]


async def settle() -> None:
    """Long enough for any job a write queued to have run (they take milliseconds here)."""
    await asyncio.sleep(1.5)


async def test_the_assignee_is_notified_and_the_actor_is_not(
    anonymous: GraphQLClient, owner_client: GraphQLClient, project_id: str
) -> None:
    member = await sign_up(anonymous, "Member")
    await add_member(owner_client, project_id, member, "EDITOR")
    await create_task(owner_client, project_id, title="Write the docs", assigneeId=member.user["id"])
    await create_task(owner_client, project_id, title="Mine", assigneeId=owner_client.user["id"])

    viewer = await notifications(member, count=2)
    assert viewer["unreadNotificationCount"] == 2
    newest, oldest = (edge["node"] for edge in viewer["notifications"]["edges"])
    assert (newest["kind"], newest["task"]["title"], newest["actor"]["name"]) == (
        "TASK_ASSIGNED",
        "Write the docs",
        "Owner",
    )
    assert (oldest["kind"], oldest["task"], oldest["project"]["name"]) == ("ADDED_TO_PROJECT", None, "Project")
    assert oldest["readAt"] is None

    # A member reassigning a task to themselves notifies no one; to someone else, that someone.
    task = await create_task(member, project_id, title="Review")
    await member.execute(UPDATE_TASK, {"i": {"id": task["id"], "assigneeId": member.user["id"]}})
    await member.execute(UPDATE_TASK, {"i": {"id": task["id"], "assigneeId": owner_client.user["id"]}})
    owners = await notifications(owner_client, count=1)
    await settle()
    assert kinds(await notifications(owner_client, count=1)) == ["TASK_ASSIGNED"] == kinds(owners)
    assert kinds(await notifications(member, count=2)) == ["TASK_ASSIGNED", "ADDED_TO_PROJECT"]


async def test_marking_read_changes_the_unread_count(
    anonymous: GraphQLClient, owner_client: GraphQLClient, project_id: str
) -> None:
    member = await sign_up(anonymous, "Member")
    await add_member(owner_client, project_id, member, "EDITOR")
    for title in ("one", "two"):
        await create_task(owner_client, project_id, title=title, assigneeId=member.user["id"])
    ids = [edge["node"]["id"] for edge in (await notifications(member, count=3))["notifications"]["edges"]]

    marked = (await member.execute(MARK_READ, {"input": {"ids": ids[:1]}}))["markNotificationsRead"]
    assert (marked["markedCount"], marked["viewer"]["unreadNotificationCount"]) == (1, 2)
    unread = await notifications(member, count=0, unread_only=True)
    assert [edge["node"]["id"] for edge in unread["notifications"]["edges"]] == ids[1:]
    # Someone else's notification is not theirs to mark.
    other = (await owner_client.execute(MARK_READ, {"input": {"ids": ids[1:]}}))["markNotificationsRead"]
    assert other["markedCount"] == 0
    assert (await notifications(member, count=3))["unreadNotificationCount"] == 2

    marked = (await member.execute(MARK_READ, {"input": {"all": True}}))["markNotificationsRead"]
    assert (marked["markedCount"], marked["viewer"]["unreadNotificationCount"], marked["userErrors"]) == (2, 0, [])
    read = await notifications(member, count=3)
    assert all(edge["node"]["readAt"] for edge in read["notifications"]["edges"])

    for neither_or_both in ({}, {"ids": ids, "all": True}):
        refused = (await member.execute(MARK_READ, {"input": neither_or_both}))["markNotificationsRead"]
        assert [error["code"] for error in refused["userErrors"]] == ["VALIDATION"]


async def test_a_member_who_left_no_longer_sees_the_projects_notifications(
    anonymous: GraphQLClient, owner_client: GraphQLClient, project_id: str
) -> None:
    member = await sign_up(anonymous, "Member")
    await add_member(owner_client, project_id, member, "EDITOR")
    await create_task(owner_client, project_id, assigneeId=member.user["id"])
    other_project = await create_project(owner_client, "Other")
    await add_member(owner_client, other_project, member, "VIEWER")
    viewer = await notifications(member, count=3)
    [notification_id] = [
        edge["node"]["id"] for edge in viewer["notifications"]["edges"] if edge["node"]["kind"] == "TASK_ASSIGNED"
    ]

    removed = await owner_client.execute(REMOVE_MEMBER, {"p": project_id, "u": member.user["id"]})
    assert removed["removeProjectMember"]["userErrors"] == []
    viewer = (await member.execute(NOTIFICATIONS))["viewer"]
    assert [(edge["node"]["kind"], edge["node"]["project"]["name"]) for edge in viewer["notifications"]["edges"]] == [
        ("ADDED_TO_PROJECT", "Other")
    ]
    assert (viewer["notifications"]["totalCount"], viewer["unreadNotificationCount"]) == (1, 1)
    body = await member.post("query($id: ID!) { node(id: $id) { id } }", {"id": notification_id})
    assert body["data"]["node"] is None and body["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_notifications_are_read_on_viewer_only(
    anonymous: GraphQLClient, owner_client: GraphQLClient, project_id: str
) -> None:
    member = await sign_up(anonymous, "Member")
    await add_member(owner_client, project_id, member, "EDITOR")
    query = "query($id: ID!) { node(id: $id) { ... on User { name unreadNotificationCount } } }"
    body = await owner_client.post(query, {"id": member.user["id"]})
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert body["errors"][0]["path"] == ["node", "unreadNotificationCount"]


async def test_task_emails_can_be_turned_off(
    anonymous: GraphQLClient, owner_client: GraphQLClient, project_id: str, inbox: Inbox
) -> None:
    member = await sign_up(anonymous, "Member")
    await add_member(owner_client, project_id, member, "EDITOR")
    update = "mutation { updateProfile(input: {emailNotifications: false}) { user { emailNotifications } } }"
    assert (await member.execute(update))["updateProfile"]["user"] == {"emailNotifications": False}
    await create_task(owner_client, project_id, title="Quietly", assigneeId=member.user["id"])

    assert kinds(await notifications(member, count=2)) == ["TASK_ASSIGNED", "ADDED_TO_PROJECT"]
    await settle()
    # Account emails still come (the welcome); task emails do not.
    assert [message["Subject"] for message in inbox.to(member.user["email"])] == ["Welcome to TaskQL"]


async def test_notification_added_delivers_live_and_resumes_after_the_last_one(
    start_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = start_server(jobs_in_process="true")
    owner, member = await User.register(server, "Owner"), await User.register(server, "Member")
    project = await owner.execute('mutation { createProject(input: {name: "P"}) { project { id } } }')
    project_id = project["createProject"]["project"]["id"]
    add = (
        "mutation($p: ID!, $e: String!) { addProjectMember(input: {projectId: $p, email: $e}) { userErrors { code } } }"
    )
    await owner.execute(add, {"p": project_id, "e": member.user["email"]})
    create = """
    mutation($p: ID!, $t: String!, $a: ID) {
      createTask(input: {projectId: $p, title: $t, assigneeId: $a}) { task { id } }
    }
    """

    async with Subscriber(server, member.token, document=NOTIFICATION_ADDED) as live:
        await asyncio.sleep(0.5)  # subscribed before the write
        await owner.execute(create, {"p": project_id, "t": "first", "a": member.user["id"]})
        await owner.execute(create, {"p": project_id, "t": "not theirs", "a": owner.user["id"]})
        [first] = await live.wait_for(1)
    assert (first["kind"], first["task"]["title"], first["actor"]["name"]) == ("TASK_ASSIGNED", "first", "Owner")

    # Offline meanwhile: two more, then resume after the last one received.
    for title in ("second", "third"):
        await owner.execute(create, {"p": project_id, "t": title, "a": member.user["id"]})
    await asyncio.sleep(1.5)
    async with Subscriber(server, member.token, after=first["id"], document=NOTIFICATION_ADDED) as resumed:
        missed = await resumed.wait_for(2)
        await owner.execute(create, {"p": project_id, "t": "fourth", "a": member.user["id"]})
        events = await resumed.wait_for(3)
    assert [event["task"]["title"] for event in events] == ["second", "third", "fourth"]
    assert missed[0]["id"] != first["id"]
    assert resumed.error is None
