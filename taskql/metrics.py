"""Prometheus metrics: what the server measures, and GET /metrics, which serves them in Prometheus's text
format (OpenMetrics when the scraper asks for it).

The GraphQL layer's measurements (operations, resolvers, errors) are in schema/extensions/metrics.py. The metrics
are created once, at import, in prometheus_client's default registry: apps built in one
process (the tests build many) share them. With several worker processes (`taskql serve --workers N`)
each worker writes to files in PROMETHEUS_MULTIPROC_DIR (metrics_dir.py) and /metrics adds up every
worker's files, so any worker answers a scrape for the whole server.

Every label value comes from a small set the server controls: schema field names, loader classes, cache
kinds, budget names, known error codes, since each distinct value is a series Prometheus keeps in
memory. Operation names come from clients: schema/extensions/metrics.py bounds them.

/metrics tells how the server is used, to anyone who asks: it is on the API's port for the scraper
only, and the load balancer in front must not forward it from the public network.
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from taskql.metrics_dir import ENV

# prometheus_client chose its storage when first imported, which was just now: from the same variable.
MULTIPROCESS = ENV in os.environ

# Request latencies, and (the last buckets) how long subscriptions stay open: up to their token's life.
OPERATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600, 3600)
OPERATION_DURATION = Histogram(
    "taskql_graphql_operation_duration_seconds",
    "GraphQL operations by type and name: how long each took (a subscription: how long it stayed open).",
    ["operation_type", "operation_name"],
    buckets=OPERATION_BUCKETS,
)
ERRORS = Counter("taskql_graphql_errors", "Errors in GraphQL responses, by extensions.code.", ["code"])
RESOLVER_DURATION = Histogram(
    "taskql_resolver_duration_seconds",
    "Root fields (Query.*, Mutation.*): how long their resolvers took, for a sample of them.",
    ["field"],
)
CACHE_REQUESTS = Counter(
    "taskql_cache_requests", "Entities looked up by id in the shared cache: hits and misses.", ["kind", "result"]
)
LOADER_BATCH_SIZE = Histogram(
    "taskql_loader_batch_size",
    "Keys per DataLoader batch: how well the reads of a request are batched.",
    ["loader"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
# livesum: the sum over the processes alive; a worker that exits takes its share away (process_exiting).
WEBSOCKET_CONNECTIONS = Gauge(
    "taskql_websocket_connections", "WebSocket connections open now.", multiprocess_mode="livesum"
)
SUBSCRIPTIONS = Gauge("taskql_subscriptions", "GraphQL subscriptions running now.", multiprocess_mode="livesum")
EVENTS_SENT = Counter(
    "taskql_subscription_events_sent",
    "Subscription events sent, by path: direct (written by the project's events reader to every caught-up "
    "subscriber) or task (by the subscription's own task: replays, subscribers catching up, legacy protocol).",
    ["path"],
)
REDIS_SKIPPED = Counter(
    "taskql_redis_skipped_operations",
    "Operations that went without Redis while it was unreachable, by part: cache, task_lists (read MongoDB), "
    "session_checks (read MongoDB), rate_limits (not counted), events (left to the outbox relay).",
    ["part"],
)
WEBSOCKET_DROPPED = Counter(
    "taskql_websocket_slow_clients_dropped",
    "WebSockets aborted because their client stopped reading (WS_SEND_BUFFER_BYTES full for WS_STALLED_SECONDS).",
)
RATE_LIMIT_REJECTIONS = Counter(
    "taskql_rate_limit_rejections",
    "Requests refused with RATE_LIMITED, by the budget that ran out: user, ip (operations), login, register.",
    ["budget"],
)

# Background jobs (jobs/worker.py), by the job's name: a small fixed set.
JOBS = Counter(
    "taskql_jobs",
    "Job attempts by job and outcome: complete, retried (it failed or was interrupted and runs again), failed "
    "(its last attempt failed: it is not run again), aborted.",
    ["job", "outcome"],
)
JOB_DURATION = Histogram(
    "taskql_job_duration_seconds", "How long job attempts took, by job.", ["job"], buckets=OPERATION_BUCKETS
)
JOB_QUEUE = Gauge(
    "taskql_job_queue_jobs",
    "Jobs in the queue by state: queued (waiting for a worker), active (running), scheduled (retries and cron "
    "jobs waiting for their time). Read by each worker every 10 s.",
    ["state"],
    multiprocess_mode="mostrecent",
)

WEBHOOK_DELIVERIES = Counter(
    "taskql_webhook_deliveries",
    "Webhook delivery attempts by outcome: succeeded (2xx), retried (it failed and is tried again later), failed "
    "(its last attempt failed, or 410 Gone), refused (the URL's address is not allowed).",
    ["outcome"],
)


async def endpoint(request: Request) -> Response:
    """GET /metrics. Collected in a thread: with several workers it reads and merges all their files."""
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(await run_in_threadpool(lambda: encoder(_registry())), media_type=content_type)


def _registry() -> CollectorRegistry:
    if not MULTIPROCESS:
        return REGISTRY
    registry = CollectorRegistry()  # a fresh one per scrape, as prometheus_client's docs require
    MultiProcessCollector(registry)
    return registry


def process_exiting() -> None:
    """At the end of a worker's lifespan: its open connections and subscriptions no longer count."""
    if MULTIPROCESS:
        mark_process_dead(os.getpid())
