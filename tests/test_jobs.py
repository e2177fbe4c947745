"""Background jobs end to end: email through a real SMTP server (aiosmtpd), retries, reminders,
cleanup, several workers, workers killed or stopped mid-job, and what /metrics and traces show."""

from __future__ import annotations

import asyncio
import re
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from bson import ObjectId

from taskql.clock import utcnow
from taskql.jobs.cleanup import cleanup
from taskql.jobs.context import CONTEXT_KEY, JobContext
from taskql.jobs.mailer import create_mailer
from taskql.jobs.reminders import send_reminders
from taskql.schema.relay import decode_id
from taskql.server import build_app
from taskql.services.common import Runtime
from taskql.settings import Settings
from tests.conftest import PASSWORD, GraphQLClient, RedisServer, add_member, create_task, sign_up, with_jobs
from tests.live import LiveServer, LiveWorker, User
from tests.mail import Inbox, html_of, text_of
from tests.test_notifications import NOTIFICATIONS, UPDATE_TASK, kinds, notifications, settle
from tests.test_tracing import Traced, traced

__all__ = ["traced"]  # a fixture, shared with test_tracing

PUBLIC_URL = "https://app.example.test"
CHANGE_PASSWORD = """
mutation($c: String!, $n: String!) {
  changePassword(input: {currentPassword: $c, newPassword: $n}) { userErrors { code } }
}
"""


@pytest.fixture
def settings(settings: Settings, inbox: Inbox) -> Settings:
    return with_jobs(
        settings,
        inbox,
        public_url=PUBLIC_URL,
        mail_from="TaskQL <robot@example.test>",
        job_max_attempts=3,
        reminder_schedule="* * * * * *",  # every second
    )


def job_context(app: Any) -> dict[str, Any]:
    """saq's context for calling a job directly, as a worker of this app would."""
    runtime: Runtime = app.state.runtime
    context = JobContext(
        settings=runtime.settings,
        db=runtime.db,
        events=runtime.events,
        outbox=runtime.outbox,
        queue=runtime.jobs,  # type: ignore[arg-type]
        mailer=create_mailer(runtime.settings),
    )
    return {CONTEXT_KEY: context}


async def sent(client: GraphQLClient, outcome: str) -> float:
    """taskql_jobs_total of send_email with this outcome, from /metrics."""
    text = (await client.http.get("/metrics")).text
    found = re.search(rf'^taskql_jobs_total\{{job="send_email",outcome="{outcome}"\}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_registering_sends_a_welcome_email_with_a_link(anonymous: GraphQLClient, inbox: Inbox) -> None:
    client = await sign_up(anonymous, "Newcomer")
    [message] = await inbox.wait_for(1)
    assert message["To"].addresses[0].addr_spec == client.user["email"]
    assert message["To"].addresses[0].display_name == "Newcomer"
    assert message["From"] == "TaskQL <robot@example.test>"
    assert message["Subject"] == "Welcome to TaskQL"
    assert message["Message-ID"].endswith("@example.test>")
    assert f"Open TaskQL: {PUBLIC_URL}" in text_of(message)
    assert f'<a href="{PUBLIC_URL}">Open TaskQL</a>' in html_of(message)


async def test_an_assignment_emails_the_assignee_and_not_the_actor(
    anonymous: GraphQLClient, owner_client: GraphQLClient, project_id: str, inbox: Inbox
) -> None:
    member = await sign_up(anonymous, "Member")
    await add_member(owner_client, project_id, member, "EDITOR")
    task = await create_task(owner_client, project_id, title="Fix <the> bug", assigneeId=member.user["id"])
    await create_task(owner_client, project_id, title="Own work", assigneeId=owner_client.user["id"])

    await inbox.wait_for(3)  # two welcomes and one assignment
    await settle()
    assert [m["Subject"] for m in inbox.to(owner_client.user["email"])] == ["Welcome to TaskQL"]
    [welcome, assigned] = inbox.to(member.user["email"])
    assert assigned["Subject"] == "Owner assigned you: Fix <the> bug"
    link = f"{PUBLIC_URL}/tasks/{task['id']}"
    assert f"Open the task: {link}" in text_of(assigned)
    html = html_of(assigned)
    assert f'<a href="{link}">' in html and "Fix &lt;the&gt; bug" in html and "<the>" not in html
    assert f"{PUBLIC_URL}/settings/notifications" in text_of(assigned)


async def test_an_email_the_smtp_server_refused_arrives_once_after_a_retry(
    anonymous: GraphQLClient, inbox: Inbox
) -> None:
    before = {outcome: await sent(anonymous, outcome) for outcome in ("retried", "complete")}
    inbox.refusals = 1
    client = await sign_up(anonymous, "Patient")
    [message] = await inbox.wait_for(1)
    await settle()
    assert (inbox.refused, len(inbox.messages)) == (1, 1)
    assert message["To"].addresses[0].addr_spec == client.user["email"]
    # (The counters are the process's: other tests' jobs count too.)
    assert await sent(anonymous, "retried") == before["retried"] + 1
    assert await sent(anonymous, "complete") == before["complete"] + 1


async def test_an_email_that_keeps_failing_is_recorded_failed(
    anonymous: GraphQLClient, inbox: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    before = {outcome: await sent(anonymous, outcome) for outcome in ("retried", "failed")}
    inbox.refusals = 100
    await sign_up(anonymous, "Unlucky")
    async with asyncio.timeout(20):  # 3 attempts, 0.2 s then up to 0.4 s apart
        while await sent(anonymous, "failed") == before["failed"]:
            await asyncio.sleep(0.1)
    assert inbox.refused == 3 and inbox.messages == []
    assert await sent(anonymous, "retried") == before["retried"] + 2
    [failure] = [r for r in caplog.records if r.name == "taskql.jobs" and r.levelname == "ERROR"]
    assert "failed for good after 3 attempts" in failure.getMessage()


async def test_a_due_date_reminds_the_assignee_once_per_due_date(
    app: Any, anonymous: GraphQLClient, owner_client: GraphQLClient, project_id: str, inbox: Inbox
) -> None:
    member = await sign_up(anonymous, "Member")
    await add_member(owner_client, project_id, member, "EDITOR")
    soon = (utcnow() + timedelta(hours=2)).isoformat()
    task = await create_task(owner_client, project_id, title="Ship it", dueAt=soon, assigneeId=member.user["id"])
    # Later than the lead time, and done: no reminder for either.
    await create_task(owner_client, project_id, dueAt=(utcnow() + timedelta(days=3)).isoformat())
    await create_task(owner_client, project_id, dueAt=soon, status="DONE")

    viewer = await notifications(member, count=3)  # added, assigned, due soon (the cron runs every second)
    assert kinds(viewer) == ["TASK_DUE_SOON", "TASK_ASSIGNED", "ADDED_TO_PROJECT"]
    # Two workers at once find it taken.
    assert (
        await asyncio.gather(send_reminders(job_context(app)), send_reminders(job_context(app)))
        == [{"due_soon": 0, "overdue": 0}] * 2
    )
    due_emails = [m for m in await inbox.wait_for(4) if m["Subject"] == "Due soon: Ship it"]
    assert [m["To"].addresses[0].addr_spec for m in due_emails] == [member.user["email"]]

    # A new due date re-arms it; past due, the task is reminded as overdue (and not as due soon).
    later = (utcnow() + timedelta(hours=5)).isoformat()
    await member.execute(UPDATE_TASK, {"i": {"id": task["id"], "dueAt": later}})
    assert kinds(await notifications(member, count=4))[0] == "TASK_DUE_SOON"
    unassigned = await create_task(
        owner_client, project_id, title="Late", dueAt=(utcnow() - timedelta(minutes=1)).isoformat()
    )
    assert kinds(await notifications(owner_client, count=1)) == ["TASK_OVERDUE"]  # the creator, as no one is assigned
    await settle()
    assert kinds(await notifications(owner_client, count=1)) == ["TASK_OVERDUE"]
    assert kinds(await notifications(member, count=4)).count("TASK_DUE_SOON") == 2
    late = (await owner_client.execute(NOTIFICATIONS))["viewer"]["notifications"]["edges"][0]["node"]
    assert late["task"]["title"] == "Late" and late["actor"] is None
    assert decode_id(unassigned["id"], "Task")


async def test_cleanup_removes_what_expired_and_nothing_else(app: Any) -> None:
    runtime: Runtime = app.state.runtime
    db, now = runtime.db, utcnow()
    old, recent = now - timedelta(days=91), now - timedelta(days=89)
    user = ObjectId()
    await db.sessions.insert_many(
        [
            {
                "_id": "expired",
                "token_hash": "a",
                "family_id": ObjectId(),
                "user_id": user,
                "expires_at": now - timedelta(seconds=1),
            },
            {
                "_id": "valid",
                "token_hash": "b",
                "family_id": ObjectId(),
                "user_id": user,
                "expires_at": now + timedelta(days=1),
            },
        ]
    )
    base = {"user_id": user, "kind": "TASK_ASSIGNED", "project_id": ObjectId(), "created_at": old}
    await db.notifications.insert_many(
        [
            {**base, "_id": "read long ago", "cause": "1", "read_at": old},
            {**base, "_id": "read lately", "cause": "2", "read_at": recent},
            {**base, "_id": "never read", "cause": "3", "read_at": None},
        ]
    )
    await db.emails.insert_many(
        [
            {"_id": "sent long ago", "state": "sent", "sent_at": old},
            {"_id": "sent lately", "state": "sent", "sent_at": recent},
            {"_id": "sending", "state": "sending", "lease_until": old},
        ]
    )
    delivery = {"webhook_id": ObjectId(), "project_id": ObjectId(), "event": "TASK_CREATED", "body": b"{}"}
    await db.webhook_deliveries.insert_many(
        [
            {**delivery, "_id": "delivered long ago", "status": "SUCCEEDED", "created_at": now - timedelta(days=31)},
            {**delivery, "_id": "failed long ago", "status": "FAILED", "created_at": now - timedelta(days=31)},
            {**delivery, "_id": "still pending", "status": "PENDING", "created_at": now - timedelta(days=31)},
            {**delivery, "_id": "delivered lately", "status": "SUCCEEDED", "created_at": now - timedelta(days=29)},
        ]
    )
    export = {"user_id": user, "project_id": ObjectId(), "format": "CSV", "query": {}, "status": "SUCCEEDED"}
    file_id = await db.files.upload_from_stream("tasks.csv", b"id,title\r\n")
    await db.exports.insert_many(
        [
            {
                **export,
                "_id": "expired",
                "file_id": file_id,
                "created_at": old,
                "expires_at": now - timedelta(minutes=1),
            },
            {**export, "_id": "kept", "created_at": now, "expires_at": now + timedelta(hours=1)},
        ]
    )
    assert await cleanup(job_context(app)) == {
        "sessions": 1,
        "notifications": 1,
        "emails": 1,
        "webhook_deliveries": 2,
        "exports": 1,
    }
    assert [doc["_id"] async for doc in db.sessions.find({}, {"_id": 1})] == ["valid"]
    assert sorted([doc["_id"] async for doc in db.notifications.find({}, {"_id": 1})]) == ["never read", "read lately"]
    assert sorted([doc["_id"] async for doc in db.emails.find({}, {"_id": 1})]) == ["sending", "sent lately"]
    remaining = sorted([doc["_id"] async for doc in db.webhook_deliveries.find({}, {"_id": 1})])
    assert remaining == ["delivered lately", "still pending"]
    assert [doc["_id"] async for doc in db.exports.find({}, {"_id": 1})] == ["kept"]
    assert [f async for f in db.files.find({"_id": file_id})] == []  # the file went with it
    assert set((await cleanup(job_context(app))).values()) == {0}


async def test_a_jobs_span_links_to_the_request_that_queued_it(traced: Traced, inbox: Inbox) -> None:
    owner = await sign_up(traced.client, "Owner")
    await inbox.wait_for(1)  # the welcome email's job is done
    await settle()
    traced.exporter.clear()
    await owner.execute(CHANGE_PASSWORD, {"c": PASSWORD, "n": "another horse battery staple"})
    [request] = [span for span in traced.spans() if span.name == "POST /graphql"]
    async with asyncio.timeout(15):
        while not [span for span in traced.spans() if span.name == "job send_email"]:
            await asyncio.sleep(0.05)
    [job] = [span for span in traced.spans() if span.name == "job send_email"]
    assert [link.context.trace_id for link in job.links] == [request.context.trace_id]
    assert job.context.trace_id != request.context.trace_id  # a trace of its own, linked
    assert job.attributes is not None and job.attributes["taskql.job.outcome"] == "complete"


# Several processes: `taskql worker` beside a server that runs no jobs itself.


class Deployment:
    """A server and workers on one database and Redis database, mailing `inbox`."""

    def __init__(self, mongodb_uri: str, redis_url: str, data_dir: Path, inbox: Inbox) -> None:
        self.mongodb_uri = mongodb_uri
        self.database = f"test_{uuid.uuid4().hex[:12]}"
        self._common = {
            "mongodb_uri": mongodb_uri,
            "redis_url": redis_url,
            "database": self.database,
            "data_dir": data_dir,
            "job_timeout_seconds": 3,  # set when a job is queued: the server's setting counts too
        }
        self._worker_settings = {"smtp_url": inbox.url, "shutdown_timeout_seconds": 10}
        self.processes: list[LiveServer | LiveWorker] = []

    def server(self, **settings: Any) -> LiveServer:
        server = LiveServer(**{**self._common, **settings})
        server.start()
        self.processes.append(server)
        return server

    def worker(self, **settings: Any) -> LiveWorker:
        worker = LiveWorker(**{**self._common, **self._worker_settings, **settings})
        worker.start()
        self.processes.append(worker)
        return worker

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


@pytest.fixture
def deployment(mongodb_uri: str, redis_url: str, tmp_path: Path, inbox: Inbox) -> Iterator[Deployment]:
    fleet = Deployment(mongodb_uri, redis_url, tmp_path, inbox)
    yield fleet
    fleet.stop()


async def wait_until_receiving(inbox: Inbox) -> None:
    async with asyncio.timeout(30):
        while not inbox.receiving.is_set():
            await asyncio.sleep(0.02)


async def test_two_workers_send_one_reminder_and_one_email(deployment: Deployment, inbox: Inbox) -> None:
    server = deployment.server()
    for _ in range(2):
        deployment.worker(reminder_schedule="* * * * * *")
    owner = await User.register(server, "Owner")
    project = await owner.execute('mutation { createProject(input: {name: "P"}) { project { id } } }')
    due = (utcnow() + timedelta(minutes=30)).isoformat()
    create = """
    mutation($p: ID!, $d: DateTime) { createTask(input: {projectId: $p, title: "Soon", dueAt: $d}) { task { id } } }
    """
    await owner.execute(create, {"p": project["createProject"]["project"]["id"], "d": due})

    async with asyncio.timeout(30):
        while len(inbox.messages) < 2:  # the welcome, and the reminder
            await asyncio.sleep(0.1)
    await asyncio.sleep(3)  # three more rounds of the cron, on either worker
    assert sorted(m["Subject"] for m in inbox.messages) == ["Due soon: Soon", "Welcome to TaskQL"]
    viewer = (await owner.execute(NOTIFICATIONS))["viewer"]
    assert [edge["node"]["kind"] for edge in viewer["notifications"]["edges"]] == ["TASK_DUE_SOON"]


async def test_a_job_whose_worker_was_killed_is_retried_and_done_once(deployment: Deployment, inbox: Inbox) -> None:
    server = deployment.server()
    inbox.stalls.append((30, False))  # the first delivery hangs (and is refused, if it ever ends)
    doomed = deployment.worker()
    await User.register(server, "Welcomed")
    await wait_until_receiving(inbox)
    doomed.signal(signal.SIGKILL)  # mid-send: its job stays marked active in Redis
    doomed.wait(10)
    deployment.worker()  # sweeps for jobs past JOB_TIMEOUT_SECONDS (3 s) every 10 s
    [message] = await inbox.wait_for(1, timeout=45)
    assert message["Subject"] == "Welcome to TaskQL"
    await asyncio.sleep(2)
    assert len(inbox.messages) == 1


async def test_sigterm_lets_a_running_job_finish(deployment: Deployment, inbox: Inbox) -> None:
    server = deployment.server()
    inbox.stalls.append((2, True))  # slow, then accepted
    worker = deployment.worker()
    await User.register(server, "Welcomed")
    await wait_until_receiving(inbox)
    worker.signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 15) == 0
    assert [m["Subject"] for m in inbox.messages] == ["Welcome to TaskQL"]
    deployment.worker()  # nothing left to do: no second copy
    await asyncio.sleep(3)
    assert len(inbox.messages) == 1


async def test_a_worker_waits_out_a_redis_outage_without_spinning(
    settings: Settings, private_redis: RedisServer, inbox: Inbox
) -> None:
    application = build_app(settings.model_copy(update={"redis_url": private_redis.url}))
    async with LifespanManager(application, shutdown_timeout=10):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://test") as http:
            private_redis.stop()
            cpu = time.process_time()
            await asyncio.sleep(3)
            assert time.process_time() - cpu < 1.0  # idle, not a loop of failing dequeues
            private_redis.start()
            await asyncio.sleep(2)  # past CACHE_RETRY_SECONDS: sign-ins use Redis again
            await sign_up(GraphQLClient(http), "After")
            [message] = await inbox.wait_for(1)
    assert message["Subject"] == "Welcome to TaskQL"
