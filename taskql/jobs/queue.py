"""The job queue (saq on Redis): how jobs are queued, with their retry policy and trace context."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime
from typing import Any

from opentelemetry import propagate
from redis.asyncio import Redis
from redis.exceptions import RedisError
from saq import Job
from saq.queue.redis import RedisQueue

from taskql.db.outbox import JobRequest
from taskql.services.follow_ups import EXPORT_TASKS
from taskql.settings import Settings

MAX_RETRY_DELAY_SECONDS = 3600
FINISHED_JOB_TTL_SECONDS = 86_400  # a finished job's record stays this long in Redis (saq expires it)
DEQUEUE_TIMEOUT_SECONDS = 1.0  # an idle worker notices a shutdown within this long
REDIS_RETRY_SECONDS = 1.0  # between a worker's tries of an unreachable Redis
TRACE_CONTEXT = "trace"  # in job.meta: the W3C trace context of the request that queued it
# Jobs whose work grows with the data (an export of a big project): they send a heartbeat (saq's
# job.update()) as they go, and run as long as they keep it up.
HEARTBEAT_JOBS = frozenset({EXPORT_TASKS})
LONG_JOB_TIMEOUT_SECONDS = 6 * 3600


async def _carry_trace_context(job: Job) -> None:
    """Links the job's span to the span that queued it: a request's, when it was queued by one."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if carrier:
        job.meta[TRACE_CONTEXT] = carrier


class _RedisQueue(RedisQueue):
    async def dequeue(self, timeout: float = 0.0, poll_interval: float = 0.0) -> Job | None:
        try:
            return await super().dequeue(timeout, poll_interval)
        except RedisError:
            # saq's worker asks again at once: without a pause, an unreachable Redis is a busy loop.
            await asyncio.sleep(REDIS_RETRY_SECONDS)
            raise


class JobQueue:
    """Queues jobs, one per function and cause while it waits or runs (saq's job key)."""

    def __init__(self, queue: RedisQueue, settings: Settings) -> None:
        self.saq = queue
        self._settings = settings
        queue.register_before_enqueue(_carry_trace_context)

    @classmethod
    def create(cls, settings: Settings, *, for_worker: bool) -> JobQueue:
        """A queue on a Redis client of its own: a worker's blocks in dequeue for up to
        DEQUEUE_TIMEOUT_SECONDS; a server's only queues, and fails as fast as its other commands."""
        assert settings.redis_url is not None, "taskql serve sets REDIS_URL (an embedded server when unset)"
        timeout = DEQUEUE_TIMEOUT_SECONDS + 5 if for_worker else max(settings.redis_timeout_seconds, 1.0)
        redis: Redis = Redis.from_url(
            settings.redis_url, socket_timeout=timeout, socket_connect_timeout=settings.redis_timeout_seconds
        )
        return cls(_RedisQueue(redis, name=settings.jobs_queue), settings)

    async def connect(self) -> None:
        await self.saq.connect()

    async def close(self) -> None:
        try:
            await self.saq.disconnect()
        except RedisError:  # Redis is away: its pub/sub cannot be told goodbye; the connections close all the same
            await self.saq.redis.aclose()

    def job(self, function: str, *, key: str, kwargs: dict[str, Any]) -> Job:
        """A job with the retry policy of the settings: JOB_MAX_ATTEMPTS attempts, the delays doubling
        from JOB_RETRY_DELAY_SECONDS with jitter (saq's exponential backoff), up to an hour. An attempt
        past JOB_TIMEOUT_SECONDS is cut, except for HEARTBEAT_JOBS: theirs are cut once their heartbeat
        is that old (their worker died), or at LONG_JOB_TIMEOUT_SECONDS."""
        settings = self._settings
        beats = function in HEARTBEAT_JOBS
        return Job(
            function=function,
            kwargs=kwargs,
            key=key,
            timeout=LONG_JOB_TIMEOUT_SECONDS if beats else settings.job_timeout_seconds,
            heartbeat=settings.job_timeout_seconds if beats else 0,
            retries=settings.job_max_attempts,
            retry_delay=settings.job_retry_delay_seconds,
            retry_backoff=MAX_RETRY_DELAY_SECONDS,
            ttl=FINISHED_JOB_TTL_SECONDS,
        )

    async def enqueue(self, request: JobRequest, *, cause: str, at: datetime | None = None) -> None:
        """Queues the job of `cause` (JobSink of the outbox), to run now or `at`; nothing if it is
        already waiting or running."""
        kwargs = {**request.kwargs, "cause": cause}
        job = self.job(request.function, key=f"{request.function}:{cause}", kwargs=kwargs)
        if at is not None:
            job.scheduled = math.ceil(at.timestamp())
        await self.saq.enqueue(job)
