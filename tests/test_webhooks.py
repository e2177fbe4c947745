"""Webhooks end to end: a real HTTP receiver (uvicorn on a loopback port), signed deliveries retried
until they succeed, commit order, timeouts, 410, SSRF refusals, owners only, a worker killed
mid-delivery."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager

from taskql.auth.webhook_signatures import signature
from taskql.server import build_app
from taskql.settings import Settings
from tests.conftest import GraphQLClient, add_member, create_task, sign_up, with_jobs
from tests.live import User
from tests.mail import Inbox
from tests.receiver import Received, Receiver
from tests.test_jobs import Deployment, deployment

__all__ = ["deployment"]  # a fixture, shared with test_jobs

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
CREATE_WEBHOOK = """
mutation($p: ID!, $url: String!, $events: [TaskEventKind!]!) {
  createWebhook(input: {projectId: $p, url: $url, events: $events, description: "CI"}) {
    webhook { id url events active } secret userErrors { code field message }
  }
}
"""
UPDATE_WEBHOOK = """
mutation($i: UpdateWebhookInput!) {
  updateWebhook(input: $i) { webhook { active disabledReason } secret userErrors { code field message } }
}
"""
DELIVERIES = """
query($id: ID!) {
  node(id: $id) {
    ... on Webhook {
      active disabledReason
      deliveries(first: 100) {
        totalCount
        edges { node { id event status attempts responseStatus lastError deliveredAt } }
      }
    }
  }
}
"""
UPDATE_TASK = "mutation($i: UpdateTaskInput!) { updateTask(input: $i) { task { version } userErrors { code } } }"


@pytest.fixture
def settings(settings: Settings, inbox: Inbox) -> Settings:
    return with_jobs(
        settings,
        inbox,
        webhook_allow_http=True,
        webhook_allow_private_addresses=True,  # the receiver is on loopback
        webhook_retry_delay_seconds=0.2,
        webhook_timeout_seconds=1,
    )


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as running:
        yield running


async def create_webhook(
    owner: GraphQLClient, project_id: str, url: str, events: tuple[str, ...] = ("TASK_CREATED",)
) -> dict[str, Any]:
    payload = (await owner.execute(CREATE_WEBHOOK, {"p": project_id, "url": url, "events": list(events)}))[
        "createWebhook"
    ]
    assert payload["userErrors"] == []
    return payload


def readme_block(language: str, containing: str) -> str:
    return next(block for block in re.findall(rf"```{language}\n(.*?)```", README, re.DOTALL) if containing in block)


_README_PYTHON: dict[str, Any] = {}
exec(readme_block("python", "def verify_taskql_signature"), _README_PYTHON)


def verify(request: Received, secret: str) -> bool:
    """With the README's own check, as a receiver would."""
    return _README_PYTHON["verify_taskql_signature"](secret, request.headers["taskql-signature"], request.body)


async def test_the_readmes_node_check_accepts_a_signature_and_refuses_a_forged_or_stale_one(tmp_path: Path) -> None:
    (tmp_path / "verify.mjs").write_text(readme_block("js", "verifyTaskqlSignature"))
    (tmp_path / "main.mjs").write_text(
        'import { verifyTaskqlSignature } from "./verify.mjs";\n'
        "const [secret, header, body] = process.argv.slice(2);\n"
        'console.log(verifyTaskqlSignature(secret, header, Buffer.from(body, "utf8")));\n'
    )
    body, now = b'{"type":"TASK_CREATED"}', int(time.time())

    async def node(secret: str, header: str) -> str:
        run = await asyncio.create_subprocess_exec(
            "node", str(tmp_path / "main.mjs"), secret, header, body.decode(), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await run.communicate()
        return out.decode().strip()

    assert await node("whsec_s", signature("whsec_s", body, now)) == "true"
    assert await node("whsec_other", signature("whsec_s", body, now)) == "false"
    assert await node("whsec_s", signature("whsec_s", body, now - 3600)) == "false"  # a replay, an hour late


async def deliveries(owner: GraphQLClient, webhook_id: str, *, settled: int) -> dict[str, Any]:
    """The webhook with its deliveries, once `settled` of them are no longer PENDING."""
    async with asyncio.timeout(20):
        while True:
            webhook = (await owner.execute(DELIVERIES, {"id": webhook_id}))["node"]
            edges = webhook["deliveries"]["edges"]
            if sum(edge["node"]["status"] != "PENDING" for edge in edges) >= settled:
                return webhook
            await asyncio.sleep(0.05)


async def test_a_delivery_that_failed_twice_succeeds_on_the_third_attempt_signed_alike(
    owner_client: GraphQLClient, project_id: str, receiver: Receiver
) -> None:
    created = await create_webhook(owner_client, project_id, receiver.url)
    assert created["webhook"]["events"] == ["TASK_CREATED"] and created["secret"].startswith("whsec_")
    receiver.answers = [500, 500]
    task = await create_task(owner_client, project_id, title="Ship it")

    first, second, third = await receiver.wait_for(3)
    assert {r.headers["taskql-delivery"] for r in (first, second, third)} == {first.headers["taskql-delivery"]}
    assert all(verify(r, created["secret"]) for r in (first, second, third))
    assert not verify(first, created["secret"] + "x")
    assert first.headers["taskql-event"] == "TASK_CREATED" and first.path == "/hooks/taskql"
    assert first.headers["content-type"] == "application/json" and first.headers["host"] == f"127.0.0.1:{receiver.port}"
    body = orjson.loads(third.body)
    assert (body["type"], body["projectId"], body["taskId"]) == ("TASK_CREATED", project_id, task["id"])
    assert (body["task"]["title"], body["actor"]["name"]) == ("Ship it", "Owner")
    assert body["occurredAt"].endswith("Z") and body["id"]

    webhook = await deliveries(owner_client, created["webhook"]["id"], settled=1)
    [delivery] = [edge["node"] for edge in webhook["deliveries"]["edges"]]
    assert (delivery["status"], delivery["attempts"], delivery["responseStatus"]) == ("SUCCEEDED", 3, 200)
    assert delivery["id"] == first.headers["taskql-delivery"] or delivery["deliveredAt"]
    await asyncio.sleep(0.5)
    assert len(receiver.requests) == 3


async def test_a_hundred_writes_arrive_in_commit_order(
    owner_client: GraphQLClient, project_id: str, receiver: Receiver
) -> None:
    await create_webhook(owner_client, project_id, receiver.url, ("TASK_UPDATED",))
    task = await create_task(owner_client, project_id)
    receiver.answers = [503]  # the first one waits for its retry, and everything after it waits too
    for n in range(100):
        await owner_client.execute(UPDATE_TASK, {"i": {"id": task["id"], "title": f"v{n}"}})

    received = await receiver.wait_for(101, timeout=60)
    bodies = [orjson.loads(r.body) for r in received]
    titles = [body["task"]["title"] for body in bodies]
    assert titles == ["v0", *(f"v{n}" for n in range(100))]  # the first twice: refused, then retried
    assert [body["task"]["version"] for body in bodies[1:]] == list(range(2, 102))


async def test_a_receiver_that_hangs_is_cut_at_the_timeout(
    owner_client: GraphQLClient, project_id: str, receiver: Receiver
) -> None:
    created = await create_webhook(owner_client, project_id, receiver.url)
    receiver.answers = [("hang", 30.0)]
    started = time.monotonic()
    await create_task(owner_client, project_id)
    webhook = await deliveries(owner_client, created["webhook"]["id"], settled=1)
    [delivery] = [edge["node"] for edge in webhook["deliveries"]["edges"]]
    assert (delivery["status"], delivery["attempts"]) == ("SUCCEEDED", 2)
    assert time.monotonic() - started < 10  # cut after WEBHOOK_TIMEOUT_SECONDS (1), not after 30 s


async def test_410_gone_disables_the_webhook(owner_client: GraphQLClient, project_id: str, receiver: Receiver) -> None:
    created = await create_webhook(owner_client, project_id, receiver.url)
    webhook_id = created["webhook"]["id"]
    receiver.answers = [410]
    await create_task(owner_client, project_id)
    webhook = await deliveries(owner_client, webhook_id, settled=1)
    [delivery] = [edge["node"] for edge in webhook["deliveries"]["edges"]]
    assert (delivery["status"], delivery["responseStatus"], webhook["active"]) == ("FAILED", 410, False)
    assert webhook["disabledReason"] == "the receiver answered 410 Gone"

    await create_task(owner_client, project_id)  # nothing for a disabled webhook
    await asyncio.sleep(1)
    assert len(receiver.requests) == 1
    assert (await owner_client.execute(DELIVERIES, {"id": webhook_id}))["node"]["deliveries"]["totalCount"] == 1

    enabled = (
        await owner_client.execute(UPDATE_WEBHOOK, {"i": {"id": webhook_id, "active": True, "rotateSecret": True}})
    )["updateWebhook"]
    assert enabled["webhook"] == {"active": True, "disabledReason": None}
    await create_task(owner_client, project_id)
    [_, again] = await receiver.wait_for(2)
    assert verify(again, enabled["secret"]) and enabled["secret"] != created["secret"]


async def test_only_a_projects_owners_see_and_manage_its_webhooks(
    anonymous: GraphQLClient, owner_client: GraphQLClient, project_id: str, receiver: Receiver
) -> None:
    editor = await sign_up(anonymous, "Editor")
    await add_member(owner_client, project_id, editor, "EDITOR")
    created = await create_webhook(owner_client, project_id, receiver.url)

    refused = await editor.execute(CREATE_WEBHOOK, {"p": project_id, "url": receiver.url, "events": ["TASK_CREATED"]})
    assert [e["code"] for e in refused["createWebhook"]["userErrors"]] == ["FORBIDDEN"]
    body = await editor.post("query($p: ID!) { project(id: $p) { webhooks { id } } }", {"p": project_id})
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    body = await editor.post(DELIVERIES, {"id": created["webhook"]["id"]})
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    owners = await owner_client.execute("query($p: ID!) { project(id: $p) { webhooks { id url } } }", {"p": project_id})
    assert owners["project"]["webhooks"] == [{"id": created["webhook"]["id"], "url": receiver.url}]


async def test_addresses_off_the_public_internet_are_refused_by_default(settings: Settings) -> None:
    strict = settings.model_copy(update={"webhook_allow_http": False, "webhook_allow_private_addresses": False})
    application = build_app(strict)
    async with LifespanManager(application, shutdown_timeout=10):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            owner = await sign_up(GraphQLClient(http), "Owner")
            project = await owner.execute('mutation { createProject(input: {name: "P"}) { project { id } } }')
            project_id = project["createProject"]["project"]["id"]
            for url, reason in (
                ("http://example.com/hook", "must start with https://"),
                ("https://127.0.0.1:8443/hook", "resolves to 127.0.0.1, a loopback address"),
                ("https://localhost/hook", "a loopback address"),
                ("https://169.254.169.254/latest/meta-data", "a cloud metadata address"),
                ("https://10.0.0.7/hook", "a private address"),
                ("https://user:pw@example.com/hook", "must not hold credentials"),
            ):
                payload = (
                    await owner.execute(CREATE_WEBHOOK, {"p": project_id, "url": url, "events": ["TASK_CREATED"]})
                )["createWebhook"]
                [error] = payload["userErrors"]
                assert (error["code"], error["field"]) == ("VALIDATION", ["input", "url"]) and reason in error[
                    "message"
                ]


async def test_a_worker_killed_mid_delivery_loses_nothing(deployment: Deployment, receiver: Receiver) -> None:
    webhook_settings = {
        "webhook_allow_http": "true",
        "webhook_allow_private_addresses": "true",
        "webhook_timeout_seconds": 2,
    }
    server = deployment.server(**webhook_settings)
    doomed = deployment.worker(**webhook_settings)
    owner = await User.register(server, "Owner")
    project = await owner.execute('mutation { createProject(input: {name: "P"}) { project { id } } }')
    project_id = project["createProject"]["project"]["id"]
    created = await owner.execute(CREATE_WEBHOOK, {"p": project_id, "url": receiver.url, "events": ["TASK_CREATED"]})
    receiver.answers = [("hang", 30.0)]
    await owner.execute(
        'mutation($p: ID!) { createTask(input: {projectId: $p, title: "T"}) { task { id } } }', {"p": project_id}
    )

    [hanging] = await receiver.wait_for(1)
    doomed.signal(signal.SIGKILL)  # mid-request: its attempt is counted, its result never recorded
    doomed.wait(10)
    deployment.worker(**webhook_settings)
    [_, delivered] = await receiver.wait_for(2, timeout=45)
    assert delivered.headers["taskql-delivery"] == hanging.headers["taskql-delivery"]
    assert verify(delivered, created["createWebhook"]["secret"])
    await asyncio.sleep(2)
    assert len(receiver.requests) == 2


async def test_an_address_refused_at_delivery_fails_the_delivery_with_its_reason(
    app: Any, owner_client: GraphQLClient, project_id: str, receiver: Receiver
) -> None:
    created = await create_webhook(owner_client, project_id, receiver.url)
    app.state.runtime.settings.webhook_allow_private_addresses = False  # as if the name now led inside
    await create_task(owner_client, project_id)
    webhook = await deliveries(owner_client, created["webhook"]["id"], settled=1)
    [delivery] = [edge["node"] for edge in webhook["deliveries"]["edges"]]
    assert (delivery["status"], delivery["attempts"], delivery["responseStatus"]) == ("FAILED", 1, None)
    assert delivery["lastError"] == "refused: its host 127.0.0.1 resolves to 127.0.0.1, a loopback address"
    assert receiver.requests == []


async def test_twenty_failed_deliveries_in_a_row_disable_the_webhook_and_tell_its_owners(
    settings: Settings, receiver: Receiver
) -> None:
    application = build_app(settings.model_copy(update={"webhook_max_attempts": 1}))
    async with LifespanManager(application, shutdown_timeout=10):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            owner = await sign_up(GraphQLClient(http), "Owner")
            project = await owner.execute('mutation { createProject(input: {name: "P"}) { project { id } } }')
            project_id = project["createProject"]["project"]["id"]
            created = await create_webhook(owner, project_id, receiver.url)
            receiver.answers = [500] * 25
            for n in range(21):
                await create_task(owner, project_id, title=f"t{n}")
            async with asyncio.timeout(20):  # disabled right after the 20th failure is recorded
                while (webhook := await deliveries(owner, created["webhook"]["id"], settled=20))["active"]:
                    await asyncio.sleep(0.05)
            assert webhook["disabledReason"] == "20 deliveries in a row failed"
            statuses = [edge["node"]["status"] for edge in webhook["deliveries"]["edges"]]
            assert statuses.count("FAILED") == 20 and len(receiver.requests) == 20
            async with asyncio.timeout(10):
                while True:
                    viewer = await owner.execute(
                        "{ viewer { notifications { edges { node { kind project { name } } } } } }"
                    )
                    kinds = [edge["node"] for edge in viewer["viewer"]["notifications"]["edges"]]
                    if kinds:
                        break
                    await asyncio.sleep(0.1)
            assert kinds == [{"kind": "WEBHOOK_DISABLED", "project": {"name": "P"}}]
