"""build_app(settings) -> the Starlette application: routes, middleware and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta
from typing import Any

import orjson
from bson import ObjectId
from cross_web import HTTPException
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET

from taskql import logs, metrics
from taskql.auth.passwords import Passwords
from taskql.auth.revocations import Revocations
from taskql.auth.tokens import TokenIssuer
from taskql.clock import utcnow
from taskql.context import Context, authenticated_deps, build_context
from taskql.db.client import Database, create_client
from taskql.db.indexes import ensure_indexes
from taskql.events.broker import EventBroker
from taskql.events.ended_logins import EndedLogins
from taskql.events.store import create_event_store
from taskql.http import exports as export_files
from taskql.http import graphiql, socket_auth
from taskql.http import protocol as http_protocol
from taskql.http.body_limit import BodyLimitMiddleware
from taskql.http.client_ip import parse_networks
from taskql.http.edge import API_ONLY_POLICY, HttpEdge
from taskql.http.endpoint import Endpoint
from taskql.http.subscription_outlet import OutletTransportWSHandler
from taskql.jobs.context import JobContext
from taskql.jobs.mailer import create_mailer
from taskql.jobs.queue import JobQueue
from taskql.jobs.worker import JobWorker
from taskql.keyed_locks import KeyedLocks
from taskql.loaders.cache import create_cache
from taskql.loaders.task_lists import TaskListCache
from taskql.logs import configure_logging
from taskql.outage import RedisOutage
from taskql.persisted_queries import PersistedQueries
from taskql.rate_limits import Counters
from taskql.redis_client import create_redis
from taskql.schema.root import build_schema
from taskql.services.common import Runtime
from taskql.services.outbox import Outbox
from taskql.settings import Settings
from taskql.tracing import (
    TracingMiddleware,
    create_tracer_provider,
    instrument_redis,
    mongo_listeners,
)

logger = logging.getLogger("taskql.server")
GRAPHIQL = graphiql.GraphiQLPage()


_COUNTED_USER_KEY = "taskql.ws_user"
_EXPIRY_KEY = "taskql.ws_expiry"
READY_TIMEOUT_SECONDS = 0.8  # /readyz answers within a second, whatever is down
# Between a socket's subscriptions ending with UNAUTHENTICATED at its token's expiry
# (services/events.py) and the socket closing: time for those errors to reach the client first.
_EXPIRED_SOCKET_GRACE_SECONDS = 1.0


class TaskQLGraphQL(GraphQL):
    """GraphQL over HTTP and WebSocket (graphql-transport-ws and legacy graphql-ws)."""

    graphql_transport_ws_handler_class = OutletTransportWSHandler
    websocket_adapter_class = socket_auth.RefusalReasons

    def __init__(self, settings: Settings, tracer: Tracer | None) -> None:
        super().__init__(
            build_schema(settings, tracer=tracer),
            graphql_ide=None if settings.is_production else "graphiql",
            keep_alive=True,
            keep_alive_interval=settings.ws_keep_alive_seconds,
            connection_init_wait_timeout=timedelta(seconds=settings.ws_connection_init_timeout_seconds),
            max_subscriptions_per_connection=settings.ws_max_subscriptions_per_connection,
            # One origin policy for HTTP (CORSMiddleware, below) and WebSocket handshakes.
            allowed_origins=settings.cors_allow_origins,
        )
        self._local_origins = None if settings.local_origins is None else re.compile(settings.local_origins)
        self._max_connections = settings.ws_max_connections_per_user
        self._max_response_bytes = settings.max_response_bytes
        self._open_connections: Counter[ObjectId] = Counter()
        self._closing: set[asyncio.Task[None]] = set()  # sockets closing because their token expired

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            http_protocol.lower_content_type(scope)
            refused = http_protocol.refusal(Request(scope, receive))
            if refused is not None:
                await refused(scope, receive, send)
                return
        websocket = scope["type"] == "websocket"
        open_socket = metrics.WEBSOCKET_CONNECTIONS.track_inprogress() if websocket else contextlib.nullcontext()
        try:
            with open_socket:
                await super().__call__(scope, receive, send)
        finally:
            expiry = scope.get(_EXPIRY_KEY)
            if expiry is not None:
                expiry.cancel()
            counted_user = scope.get(_COUNTED_USER_KEY)
            if counted_user is not None:
                self._open_connections[counted_user] -= 1
                if not self._open_connections[counted_user]:
                    del self._open_connections[counted_user]

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        try:
            return await super().run(request, context, root_value)
        except HTTPException as exc:
            if isinstance(request, WebSocket):
                raise
            # Strawberry answers a request it cannot read (a body that is not JSON, no query) in plain
            # text; clients expect GraphQL's JSON errors.
            return http_protocol.bad_request(exc.status_code, exc.reason)

    def is_websocket_origin_allowed(self, request: Any, origin: str) -> bool:
        if super().is_websocket_origin_allowed(request, origin):
            return True
        return self._local_origins is not None and self._local_origins.fullmatch(origin) is not None

    @property
    def graphql_ide_html(self) -> str:
        return GRAPHIQL.html  # with TaskQL's own copies of its scripts and styles (http/graphiql.py)

    def should_render_graphql_ide(self, request: Any) -> bool:
        # Strawberry also serves the IDE for `Accept: */*`, which would answer a GET of a persisted query.
        return http_protocol.wants_graphiql(request.method, request.query_params, request.headers.get("accept", ""))

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        sub_response = await super().get_sub_response(request)
        sub_response.media_type = http_protocol.negotiate(request.headers.get("accept"))
        return sub_response

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        logs.note_error_codes(request.state, [e.extensions.get("code") for e in result.errors or [] if e.extensions])
        return await super().process_result(request, result)

    def create_response(
        self, response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse], sub_response: Response
    ) -> Response:
        if sub_response.media_type == http_protocol.GRAPHQL_RESPONSE_JSON:
            for answer in response_data if isinstance(response_data, list) else [response_data]:
                if http_protocol.is_request_error(answer):
                    del answer["data"]  # the spec: a request that was not executed has no `data`
        response = super().create_response(response_data, sub_response)
        if len(response.body) > self._max_response_bytes:
            # The cost limit bounds the nodes, not their size: the bytes are bounded here, before sending.
            error = {
                "message": f"The response would be {len(response.body)} bytes; the limit is "
                f"{self._max_response_bytes}. Ask for fewer or smaller pages.",
                "extensions": {"code": "QUERY_TOO_COMPLEX"},
            }
            too_large: GraphQLHTTPResponse = {"data": None, "errors": [error]}
            response_data = [too_large] * len(response_data) if isinstance(response_data, list) else too_large
            response = super().create_response(response_data, sub_response)
        graphql_response = sub_response.media_type == http_protocol.GRAPHQL_RESPONSE_JSON
        retry_after = http_protocol.retry_after(response_data)
        if retry_after is not None:
            code, seconds = retry_after
            response.headers["retry-after"] = str(seconds)
            if code == "RATE_LIMITED" or graphql_response:
                response.status_code = http_protocol.RETRY_STATUSES[code]
        if graphql_response:
            response.headers["content-type"] = http_protocol.GRAPHQL_RESPONSE_JSON
            if retry_after is None and isinstance(response_data, dict) and "data" not in response_data:
                response.status_code = 400
        return response

    def decode_json(self, data: str | bytes) -> object:
        # orjson: faster, and strict where the standard library is not: a lone surrogate (which no
        # database can store) or nesting past 1,024 levels is a JSON error (400) instead of an
        # exception deep in the request (the standard library recurses until Python gives up).
        return orjson.loads(data)

    def encode_json(self, data: object) -> str:
        # orjson: several times faster than the standard library, and every event is encoded once per subscriber.
        return orjson.dumps(data).decode()

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        # A WebSocket authenticates with its connection_init payload (on_ws_connect), never a header.
        authorization = request.headers.get("authorization") if isinstance(request, Request) else None
        return build_context(request.app.state.runtime, request, response, authorization=authorization)

    async def on_ws_connect(self, context: Context) -> None:
        """Authenticates a WebSocket from its connection_init payload: {"authorization": "Bearer ..."}."""
        if _COUNTED_USER_KEY in context.request.scope:
            # graphql-transport-ws closes the socket itself (4429); the legacy graphql-ws protocol
            # would acknowledge every one, and count the user's connection once more each time.
            raise ConnectionRejectionError({"message": "This connection is already initialised."})
        scope = context.request.scope
        authorization = socket_auth.connection_authorization(context.connection_params)
        if authorization is None:
            raise socket_auth.refusal(
                scope, socket_auth.NO_TOKEN, 'Send {"authorization": "Bearer <access token>"} in connection_init.'
            )
        try:
            deps = await authenticated_deps(context.request.app.state.runtime, context.request, authorization)
        except PyMongoError as exc:
            logger.error("database unavailable while authenticating a WebSocket", exc_info=exc)
            raise socket_auth.refusal(
                scope, socket_auth.TRY_AGAIN_LATER, "Service temporarily unavailable: try again later."
            ) from exc
        if deps.viewer is None:
            raise socket_auth.refusal(scope, socket_auth.TOKEN_REFUSED, deps.auth_problem or "Sign in first.")
        if self._open_connections[deps.viewer.id] >= self._max_connections:
            reason = f"At most {self._max_connections} connections per user: close another first."
            raise socket_auth.refusal(scope, socket_auth.TOKEN_REFUSED, reason)
        self._open_connections[deps.viewer.id] += 1
        scope[_COUNTED_USER_KEY] = deps.viewer.id  # released when the socket closes
        # A timer, not a sleeping task: a task per socket, for as long as it is open, costs ~1.5 KiB.
        delay = (deps.viewer.access_expires_at - utcnow()).total_seconds() + _EXPIRED_SOCKET_GRACE_SECONDS
        scope[_EXPIRY_KEY] = asyncio.get_running_loop().call_later(delay, self._close_expired, context.request)
        context.renew(deps)

    def _close_expired(self, websocket: WebSocket) -> None:
        """Closes a socket whose access token has expired with 4403. That is how a client re-authenticates
        a socket: graphql-ws reconnects on 4403, with the fresh token its `connectionParams` function
        returns, and its subscriptions resume with `after`. (Until then every operation on the socket is
        refused: Context.recheck_socket_session.)"""
        closing = asyncio.create_task(_close_expired_socket(websocket))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)


async def _close_expired_socket(websocket: WebSocket) -> None:
    with contextlib.suppress(RuntimeError, OSError):  # the socket closed meanwhile
        await websocket.close(code=4403, reason="The access token has expired: reconnect with a fresh one.")


def build_app(settings: Settings | None = None, tracer_provider: TracerProvider | None = None) -> Starlette:
    """The TaskQL ASGI app. Connections are opened in its lifespan, one MongoDB client per process.
    Spans go to `tracer_provider`, by default the one TRACING_EXPORTER asks for (none: no tracing)."""
    settings = settings or Settings()
    if settings.mongodb_uri is None or settings.redis_url is None:
        raise ValueError(
            "build_app needs MONGODB_URI and REDIS_URL; `taskql serve` starts embedded servers for those unset"
        )
    mongodb_uri = settings.mongodb_uri
    owns_tracer_provider = tracer_provider is None
    if tracer_provider is None:
        tracer_provider = create_tracer_provider(settings)
    tracer = None if tracer_provider is None else tracer_provider.get_tracer("taskql")
    redis = create_redis(settings)  # connects on first use; closed by the lifespan
    instrument_redis(redis, tracer_provider)
    redis_outage = RedisOutage(retry_seconds=settings.cache_retry_seconds)  # shared by every part using Redis

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = create_client(settings, mongodb_uri, listeners=mongo_listeners(tracer_provider))
        event_store = create_event_store(settings, redis, tracer_provider)
        events = EventBroker(event_store, buffer_size=settings.subscription_buffer_size)
        ended_logins = EndedLogins(events)
        db = Database(client, settings)
        job_queue = JobQueue.create(settings, for_worker=False)
        outbox = Outbox(db, events, job_queue, redis_outage)
        job_worker = _in_process_worker(settings, db, events, outbox, tracer)
        cache = create_cache(settings, redis, redis_outage)
        revocations = Revocations(
            redis,
            db,
            access_ttl_seconds=settings.access_token_ttl_seconds,
            outage=redis_outage,
            retry_seconds=settings.cache_retry_seconds,
        )
        try:
            await db.detect_capabilities()
            await ensure_indexes(db)
            app.state.runtime = Runtime(
                settings=settings,
                db=db,
                passwords=Passwords(),
                tokens=TokenIssuer(
                    secret=settings.resolved_jwt_secret(),
                    issuer=settings.jwt_issuer,
                    audience=settings.jwt_audience,
                    access_ttl=settings.access_token_ttl,
                ),
                cache=cache,
                task_lists=TaskListCache(
                    redis,
                    enabled=settings.cache_enabled,
                    ttl_seconds=settings.cache_task_ttl_seconds,
                    outage=redis_outage,
                    stats=cache.stats,
                ),
                events=events,
                ended_logins=ended_logins,
                outbox=outbox,
                jobs=job_queue,
                rate_limits=Counters(redis),
                redis_outage=redis_outage,
                task_writes=KeyedLocks(),
                trusted_proxies=parse_networks(settings.trusted_proxies),
                persisted_queries=PersistedQueries.create(
                    redis, ttl_seconds=settings.apq_ttl_seconds, allowlist_file=settings.persisted_operations_file
                ),
                revocations=revocations,
                tracer=tracer,
            )
            outbox.start()
            ended_logins.start()
            if job_worker is not None:
                job_worker.start()
            yield
        finally:
            metrics.process_exiting()
            if job_worker is not None:
                await job_worker.stop()
            await outbox.stop()
            await job_queue.close()
            await ended_logins.stop()
            await revocations.close()
            await events.close()
            await client.close()
            await redis.aclose()
            if owns_tracer_provider and tracer_provider is not None:
                tracer_provider.shutdown()  # exports the spans still batched

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        """Ready to serve: MongoDB and Redis answer (within READY_TIMEOUT_SECONDS); indexes were
        ensured at startup. Nothing is logged: probes come every few seconds, and the outages are
        logged once each where they are met (outage.py, db/client.py)."""
        runtime: Runtime = request.app.state.runtime

        async def answers_in_time(ping: Awaitable[object]) -> bool:
            try:
                async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                    await ping
            except (PyMongoError, RedisError, TimeoutError):
                return False
            return True

        pings = {"mongodb": runtime.db.client.admin.command("ping"), "redis": redis.ping()}
        answered = await asyncio.gather(*(answers_in_time(ping) for ping in pings.values()))
        failing = [name for name, ok in zip(pings, answered, strict=True) if not ok]
        if failing:
            return JSONResponse({"status": "unavailable", "failing": failing}, status_code=503)
        return JSONResponse({"status": "ok"})

    routes = [Route("/healthz", healthz), Route("/readyz", readyz), export_files.ROUTE]
    if not settings.is_production:
        routes.append(graphiql.ASSET_ROUTE)
    if settings.metrics_enabled and settings.separate_metrics_port is None:
        routes.append(Route("/metrics", metrics.endpoint))  # for the scraper only: see metrics.py
    graphql = TaskQLGraphQL(settings, tracer)
    app = Starlette(
        routes=routes,
        middleware=[
            # Request id, security headers, access log; the tracing layer notes the trace id for the log.
            Middleware(
                HttpEdge,
                production=settings.is_production,
                # The API's own answers are JSON; outside production its page is also GraphiQL's.
                content_security_policy=API_ONLY_POLICY if settings.is_production else GRAPHIQL.content_security_policy,
            ),
            *([] if tracer is None else [Middleware(TracingMiddleware, tracer=tracer)]),
            # No credentials: the API authenticates with the Authorization header, never cookies.
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_allow_origins,
                allow_origin_regex=settings.local_origins,
                allow_methods=["GET", "POST"],
                # traceparent & co.: a browser app's own traces continue into the server's (W3C Trace Context).
                allow_headers=[
                    "authorization",
                    "content-type",
                    "x-request-id",
                    *http_protocol.CSRF_HEADERS,
                    "traceparent",
                    "tracestate",
                    "baggage",
                ],
                # What a browser app may read: its budget, when to retry, the id to quote in a bug report.
                expose_headers=[
                    "x-request-id",
                    "ratelimit-limit",
                    "ratelimit-remaining",
                    "ratelimit-reset",
                    "retry-after",
                ],
                max_age=600,
            ),
            Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes),
            # HTTP and WebSocket; every method reaches the view: http_protocol answers those GraphQL
            # over HTTP does not allow.
            Middleware(Endpoint, path="/graphql", endpoint=graphql),
        ],
        lifespan=lifespan,
    )
    app.state.graphql = graphql
    return app


def _in_process_worker(
    settings: Settings, db: Database, events: EventBroker, outbox: Outbox, tracer: Tracer | None
) -> JobWorker | None:
    """JOBS_IN_PROCESS: this process runs jobs too (`make run` alone then does everything)."""
    if not settings.runs_jobs_in_process:
        return None
    queue = JobQueue.create(settings, for_worker=True)
    context = JobContext(
        settings=settings, db=db, events=events, outbox=outbox, queue=queue, mailer=create_mailer(settings)
    )
    return JobWorker(context, queue, concurrency=settings.jobs_concurrency, tracer=tracer)


def create_app() -> Starlette:
    """The app from the environment's settings: what each worker process of `taskql serve` imports."""
    settings = Settings()
    configure_logging(settings)
    return build_app(settings)
