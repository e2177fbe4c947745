"""Webhook deliveries: each webhook's drain posts its pending deliveries one at a time, oldest first.

A delivery is tried until its receiver answers 2xx, up to WEBHOOK_MAX_ATTEMPTS times, the delays
tripling from WEBHOOK_RETRY_DELAY_SECONDS with jitter; meanwhile the webhook's later deliveries
wait, so a receiver sees its events in commit order. `410 Gone` disables the webhook; so do
DISABLE_AFTER_FAILURES failed deliveries in a row, and its owners are notified. Every attempt of a
delivery carries the same `TaskQL-Delivery` (the receiver's idempotency key): at least once, never
silently lost; an attempt is counted before it is made, so a worker killed mid-request has used it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from bson import ObjectId

from taskql import metrics
from taskql.auth.webhook_signatures import signature, webhook_secret
from taskql.clock import utcnow
from taskql.db import webhooks as webhooks_db
from taskql.db.projects import find_projects_by_ids
from taskql.db.webhooks import FAILED, PENDING, SUCCEEDED, DeliveryRecord, WebhookRecord
from taskql.jobs.context import JobContext, job_context
from taskql.outbound import RefusedUrl, resolve
from taskql.services.follow_ups import drain_request, notify_request
from taskql.services.webhooks import sync_webhook_events

DISABLE_AFTER_FAILURES = 20
MAX_RESPONSE_BYTES = 65_536  # read of a receiver's answer; the rest is not waited for
DRAIN_BATCH = 100  # deliveries one drain posts (at most) before making room for other jobs
USER_AGENT = "TaskQL-Webhooks/1.0"


@dataclass(frozen=True)
class _Answer:
    status: int | None = None  # the receiver's HTTP status
    error: str | None = None  # why there was no usable answer
    refused: bool = False  # the URL's address is not allowed: not tried again


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default context (certifi's roots), built once a process: loading the roots costs
    more CPU than a delivery's every other step together."""
    return httpx.create_ssl_context()


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=_tls_context(), follow_redirects=False, trust_env=False, timeout=None)


def retry_delay(settings_delay: float, attempts: int) -> float:
    """Before attempt `attempts + 1`: tripling from the first delay, with jitter (half to all of it)."""
    delay = settings_delay * 3 ** (attempts - 1)
    return random.uniform(delay / 2, delay)


async def _post(
    jobs: JobContext, client: httpx.AsyncClient, webhook: WebhookRecord, delivery: DeliveryRecord
) -> _Answer:
    settings = jobs.settings
    try:
        target = await resolve(
            webhook.url,
            allow_http=settings.webhook_allow_http,
            allow_private=settings.webhook_allow_private_addresses,
        )
    except RefusedUrl as refused:
        return _Answer(error=f"refused: {refused}", refused=True)
    secret = webhook_secret(settings.resolved_webhook_key(), webhook.id, webhook.secret_nonce)
    default_port = target.port == (443 if target.scheme == "https" else 80)
    host = f"[{target.host}]" if ":" in target.host else target.host
    headers = {
        "host": host if default_port else f"{host}:{target.port}",
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "taskql-event": delivery.event,
        "taskql-delivery": str(delivery.id),
        "taskql-signature": signature(secret, delivery.body, int(time.time())),
    }
    try:
        # To the address that was checked, not to a second lookup of the name; TLS still checks the name.
        async with (
            asyncio.timeout(settings.webhook_timeout_seconds),
            client.stream(
                "POST",
                target.url_to_address(),
                content=delivery.body,
                headers=headers,
                extensions={"sni_hostname": target.host},
            ) as response,
        ):
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= MAX_RESPONSE_BYTES:
                    break
            return _Answer(status=response.status_code)
    except TimeoutError:
        return _Answer(error=f"no answer within {settings.webhook_timeout_seconds:g} s")
    except httpx.HTTPError as exc:
        return _Answer(error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


class _Connections:
    """A drain's HTTP client, its connections kept alive across the posts to one URL."""

    def __init__(self) -> None:
        self._url: str | None = None
        self._client = _client()

    async def to(self, url: str) -> httpx.AsyncClient:
        if self._url not in (None, url):  # a new URL (maybe a new host on the same address): new connections
            await self._client.aclose()
            self._client = _client()
        self._url = url
        return self._client

    async def aclose(self) -> None:
        await self._client.aclose()


async def deliver_webhook(ctx: dict[str, Any], *, cause: str, webhook_id: str) -> str:
    async with contextlib.aclosing(_Connections()) as connections:
        return await _drain(job_context(ctx), connections, ObjectId(webhook_id))


async def _drain(jobs: JobContext, connections: _Connections, webhook_id: ObjectId) -> str:
    db, settings = jobs.db, jobs.settings
    # Well within the job's timeout, which would cancel it mid-request: the rest in a drain of its own.
    deadline = time.monotonic() + settings.job_timeout_seconds / 2
    posted = 0
    while posted < DRAIN_BATCH and time.monotonic() < deadline:
        pending = await webhooks_db.pending_deliveries(db, webhook_id=webhook_id, limit=DRAIN_BATCH - posted)
        if not pending:
            return f"{posted} posted"
        for number, delivery in enumerate(pending):
            if time.monotonic() >= deadline:
                break
            if number and await webhooks_db.older_pending_exists(db, delivery=delivery):
                break  # a delivery that committed since the batch was read goes first: read it again
            stopped = await _deliver(jobs, connections, delivery)
            if stopped is not None:
                return f"{posted} posted; {stopped}"
            posted += 1
    following = await webhooks_db.pending_deliveries(db, webhook_id=webhook_id, limit=1)
    if following:  # making room for other jobs
        await _drain_again(jobs, following[0], max(following[0].next_attempt_at or utcnow(), utcnow()))
    return f"{posted} posted; more to come"


async def _deliver(jobs: JobContext, connections: _Connections, delivery: DeliveryRecord) -> str | None:
    """Posts the delivery and records the outcome; why the drain stops here, or None to go on."""
    db, settings = jobs.db, jobs.settings
    webhook = await webhooks_db.find_webhook(db, webhook_id=delivery.webhook_id)  # deleted, disabled, a new URL?
    if webhook is None or not webhook.active:
        return "the webhook is deleted or disabled"
    now = utcnow()
    if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
        await _drain_again(jobs, delivery, delivery.next_attempt_at)
        return f"the next is due at {delivery.next_attempt_at:%H:%M:%S}"
    # The lease: a worker that dies mid-request leaves the delivery to be tried again after it.
    lease = now + timedelta(seconds=settings.webhook_timeout_seconds + settings.job_timeout_seconds)
    if not await webhooks_db.start_attempt(db, delivery=delivery, lease_until=lease):
        return "another drain is posting"  # or the delivery changed since it was read: the next drain sees it
    answer = await _post(jobs, await connections.to(webhook.url), webhook, delivery)
    if not await _settle(jobs, webhook, delivery, delivery.attempts + 1, answer):
        return "waiting to try again"
    return None


async def _settle(
    jobs: JobContext, webhook: WebhookRecord, delivery: DeliveryRecord, attempts: int, answer: _Answer
) -> bool:
    """Records the attempt's outcome; False when the drain must stop (a retry is due later, or the
    webhook was disabled)."""
    db, settings, now = jobs.db, jobs.settings, utcnow()
    status, error = answer.status, answer.error
    if status is not None and 200 <= status < 300:
        metrics.WEBHOOK_DELIVERIES.labels("succeeded").inc()
        await webhooks_db.finish_attempt(
            db,
            delivery_id=delivery.id,
            status=SUCCEEDED,
            response_status=status,
            error=None,
            next_attempt_at=None,
            now=now,
        )
        await webhooks_db.record_outcome(db, webhook_id=webhook.id, succeeded=True, disable_after=0, now=now)
        return True
    if status is not None:
        error = f"the receiver answered {status}"
    if status == 410:
        metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
        await webhooks_db.finish_attempt(
            db,
            delivery_id=delivery.id,
            status=FAILED,
            response_status=status,
            error=error,
            next_attempt_at=None,
            now=now,
        )
        if await webhooks_db.disable_webhook(
            db, webhook_id=webhook.id, reason="the receiver answered 410 Gone", now=now
        ):
            await sync_webhook_events(db, webhook.project_id)
        return False
    if not answer.refused and attempts < settings.webhook_max_attempts:
        metrics.WEBHOOK_DELIVERIES.labels("retried").inc()
        retry_at = now + timedelta(seconds=retry_delay(settings.webhook_retry_delay_seconds, attempts))
        await webhooks_db.finish_attempt(
            db,
            delivery_id=delivery.id,
            status=PENDING,
            response_status=status,
            error=error,
            next_attempt_at=retry_at,
            now=now,
        )
        await _drain_again(jobs, delivery, retry_at)
        return False
    metrics.WEBHOOK_DELIVERIES.labels("refused" if answer.refused else "failed").inc()
    await webhooks_db.finish_attempt(
        db, delivery_id=delivery.id, status=FAILED, response_status=status, error=error, next_attempt_at=None, now=now
    )
    disabled = await webhooks_db.record_outcome(
        db, webhook_id=webhook.id, succeeded=False, disable_after=DISABLE_AFTER_FAILURES, now=now
    )
    if disabled is not None:
        await sync_webhook_events(db, webhook.project_id)
        await _tell_owners(jobs, disabled)
        return False
    return True


async def _drain_again(jobs: JobContext, delivery: DeliveryRecord, at: datetime) -> None:
    """Queues the webhook's drain for when its next delivery is due: under a key of its own (this
    drain still holds the usual one), one per delivery and attempt."""
    drain = drain_request(delivery.webhook_id)
    await jobs.queue.enqueue(drain, cause=f"{drain.cause}:{delivery.id}:{delivery.attempts}", at=at)


async def _tell_owners(jobs: JobContext, webhook: WebhookRecord) -> None:
    projects = await find_projects_by_ids(jobs.db, ids=[webhook.project_id])
    owners = [member.user_id for project in projects for member in project.members if member.role == "OWNER"]
    for owner in owners:
        notice = notify_request("WEBHOOK_DISABLED", user_id=owner, project_id=webhook.project_id)
        await jobs.queue.enqueue(
            notice, cause=f"WEBHOOK_DISABLED:{webhook.id}:{webhook.updated_at.isoformat()}:{owner}"
        )


async def dispatch_webhooks(ctx: dict[str, Any]) -> int:
    """Cron: queues the drain of every webhook with a delivery due (one whose drain was missed)."""
    jobs = job_context(ctx)
    due = await webhooks_db.webhooks_due(jobs.db, now=utcnow(), limit=1000)
    for webhook_id in due:
        drain = drain_request(webhook_id)
        await jobs.queue.enqueue(drain, cause=drain.cause or "")
    return len(due)
