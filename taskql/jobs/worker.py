"""The job worker: saq's Worker with TaskQL's jobs, cron schedules, logs, metrics and traces.

It runs as `taskql worker`, or inside a server process (JOBS_IN_PROCESS). Stopping it (SIGTERM)
takes no new jobs, lets running ones finish for up to SHUTDOWN_TIMEOUT_SECONDS, then interrupts
the rest, which saq puts back in the queue for the next worker. A worker killed outright leaves
its jobs marked active: another worker's sweep retries them once JOB_TIMEOUT_SECONDS has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, Tracer
from saq import CronJob, Worker
from saq.job import Status as JobStatus

from taskql import logs, metrics
from taskql.db.client import Database, create_client
from taskql.db.indexes import ensure_indexes
from taskql.events.broker import EventBroker
from taskql.events.store import create_event_store
from taskql.jobs.cleanup import cleanup
from taskql.jobs.context import CONTEXT_KEY, JobContext
from taskql.jobs.exports import export_tasks
from taskql.jobs.mailer import create_mailer
from taskql.jobs.notify import notify
from taskql.jobs.queue import DEQUEUE_TIMEOUT_SECONDS, TRACE_CONTEXT, JobQueue
from taskql.jobs.reminders import send_reminders
from taskql.jobs.send_email import send_email
from taskql.jobs.webhooks import deliver_webhook, dispatch_webhooks
from taskql.outage import RedisOutage
from taskql.redis_client import create_redis
from taskql.services.follow_ups import DELIVER_WEBHOOK, EXPORT_TASKS, NOTIFY, SEND_EMAIL
from taskql.services.outbox import Outbox
from taskql.settings import Settings
from taskql.tracing import create_tracer_provider, instrument_redis, mongo_listeners

logger = logging.getLogger("taskql.jobs")
SWEEP_SECONDS = 10  # how often one worker looks for jobs whose worker died (saq: 60)
OUTCOMES = {
    JobStatus.COMPLETE: "complete",
    JobStatus.QUEUED: "retried",
    JobStatus.FAILED: "failed",
    JobStatus.ABORTED: "aborted",
}


class _Worker(Worker[dict[str, Any]]):
    SIGNALS = []  # the process's own shutdown stops it: cli.py for `taskql worker`, the lifespan in a server

    def __init__(self, *args: Any, drain_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._drain_seconds = drain_seconds

    async def stop(self) -> None:
        """Takes no new job; waits for the running ones, then saq cancels what is left (and requeues it)."""
        self.event.set()
        running = [task for task in self.tasks if task.get_name() == "process"]
        if running:
            await asyncio.wait(running, timeout=self._drain_seconds)
        for task in self.tasks:
            if task.get_name() != "process":  # saq's upkeep loops, asleep for up to SWEEP_SECONDS
                task.cancel()
        await super().stop()

    async def worker_info(self, ttl: int = 60) -> Any:
        info = await super().worker_info(ttl)
        depth = await self.queue.info()
        for state in ("queued", "active", "scheduled"):
            metrics.JOB_QUEUE.labels(state).set(depth[state])  # type: ignore[literal-required]
        return info


class JobWorker:
    def __init__(self, context: JobContext, queue: JobQueue, *, concurrency: int, tracer: Tracer | None) -> None:
        settings = context.settings
        self._tracer = tracer
        self._queue = queue
        cron = {"timeout": settings.job_timeout_seconds, "ttl": 3600}
        self._worker = _Worker(
            queue.saq,
            [
                (NOTIFY, notify),
                (SEND_EMAIL, send_email),
                (DELIVER_WEBHOOK, deliver_webhook),
                (EXPORT_TASKS, export_tasks),
            ],
            concurrency=concurrency,
            cron_jobs=[
                CronJob(send_reminders, cron=settings.reminder_schedule, **cron),  # type: ignore[arg-type]
                CronJob(cleanup, cron=settings.cleanup_schedule, **cron),  # type: ignore[arg-type]
                # A safety net: each drain is queued with its event, and a retry at its time.
                CronJob(dispatch_webhooks, cron="* * * * *", **cron),  # type: ignore[arg-type]
            ],
            before_process=self._before,
            after_process=self._after,
            timers={"sweep": SWEEP_SECONDS},
            dequeue_timeout=DEQUEUE_TIMEOUT_SECONDS,
            drain_seconds=settings.shutdown_timeout_seconds,
            shutdown_grace_period_s=1,  # after the drain: for the cancelled upkeep loops to return
        )
        self._worker.context[CONTEXT_KEY] = context
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Runs jobs until stop()."""
        await self._queue.connect()
        try:
            await self._worker.start()
        finally:
            await self._queue.close()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="job-worker")

    def request_stop(self) -> None:
        """From a signal handler: run() returns once the worker has stopped."""
        self._worker.event.set()

    async def stop(self) -> None:
        self.request_stop()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _before(self, ctx: dict[str, Any]) -> None:
        job = ctx["job"]
        ctx["taskql.started"] = time.monotonic()
        ctx["taskql.log_fields"] = logs.context_fields.set({"job_id": job.key, "job": job.function})
        if self._tracer is None:
            return
        parent = trace.get_current_span(propagate.extract(job.meta.get(TRACE_CONTEXT, {}))).get_span_context()
        span = self._tracer.start_span(
            f"job {job.function}",
            kind=SpanKind.CONSUMER,
            # A link, not a parent: the request ended long ago, and its trace should not grow with retries.
            links=[Link(parent)] if parent.is_valid else [],
            attributes={"taskql.job.id": job.key, "taskql.job.attempt": job.attempts},
        )
        ctx["taskql.span"] = span
        ctx["taskql.trace_token"] = otel_context.attach(trace.set_span_in_context(span))

    async def _after(self, ctx: dict[str, Any]) -> None:
        job = ctx["job"]
        outcome = OUTCOMES.get(job.status, job.status.value)
        metrics.JOBS.labels(job.function, outcome).inc()
        metrics.JOB_DURATION.labels(job.function).observe(time.monotonic() - ctx["taskql.started"])
        if outcome == "failed":
            # saq logged each attempt's exception; this is the end of the job.
            logger.error("job %s failed for good after %d attempts: %s", job.key, job.attempts, job.error)
        elif outcome == "complete":
            logger.info("job %s done: %s", job.key, job.result)
        span = ctx.get("taskql.span")
        if span is not None:
            exception = ctx.get("exception")
            if exception is not None:
                span.record_exception(exception)
                span.set_status(Status(StatusCode.ERROR, type(exception).__name__))
            span.set_attribute("taskql.job.outcome", outcome)
            span.end()
            otel_context.detach(ctx["taskql.trace_token"])
        logs.context_fields.reset(ctx["taskql.log_fields"])


async def run_worker(settings: Settings, *, concurrency: int) -> None:
    """`taskql worker`: runs jobs until SIGTERM or SIGINT."""
    assert settings.mongodb_uri is not None and settings.redis_url is not None
    tracer_provider = create_tracer_provider(settings)
    tracer = None if tracer_provider is None else tracer_provider.get_tracer("taskql.jobs")
    client = create_client(settings, settings.mongodb_uri, listeners=mongo_listeners(tracer_provider))
    redis = create_redis(settings)
    instrument_redis(redis, tracer_provider)
    events = EventBroker(create_event_store(settings, redis, tracer_provider), buffer_size=1)
    queue = JobQueue.create(settings, for_worker=True)
    db = Database(client, settings)
    context = JobContext(
        settings=settings,
        db=db,
        events=events,
        outbox=Outbox(db, events, queue, RedisOutage(retry_seconds=settings.cache_retry_seconds)),
        queue=queue,
        mailer=create_mailer(settings),
    )
    worker = JobWorker(context, queue, concurrency=concurrency, tracer=tracer)
    loop = asyncio.get_running_loop()
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stop_signal, worker.request_stop)
    try:
        await db.detect_capabilities()
        await ensure_indexes(db)
        # Deletes what the reminders published from the outbox, and relays what anyone left there.
        context.outbox.start()
        logger.info("worker running %d jobs at once; mail: %s", concurrency, "SMTP" if settings.smtp_url else "files")
        await worker.run()
    finally:
        await context.outbox.stop()
        await events.close()
        await client.close()
        await redis.aclose()
        if tracer_provider is not None:
            tracer_provider.shutdown()
