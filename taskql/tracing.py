"""OpenTelemetry traces: a span per HTTP request, GraphQL operation, resolver, DataLoader batch, and
MongoDB and Redis command, in that tree.

Off by default (TRACING_EXPORTER=none): then none of this is installed. Each app owns its
TracerProvider rather than the process-global one, so that an app (or a test) chooses where its
spans go. The exporters read the standard
OTEL_EXPORTER_OTLP_* variables, the sampler OTEL_TRACES_SAMPLER(_ARG), the propagator OTEL_PROPAGATORS.

Nothing a client sends is recorded verbatim: no query text, variables, resolver arguments, headers or
command values, where passwords and tokens travel. Spans name operations, fields and commands only.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from inspect import isawaitable
from typing import Any

from graphql import GraphQLResolveInfo
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.pymongo import CommandTracer
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from pymongo.monitoring import CommandListener
from redis.asyncio import Redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.dataloader import DataLoader
from strawberry.extensions import SchemaExtension
from strawberry.extensions.tracing.utils import should_skip_tracing
from strawberry.extensions.utils import get_path_from_info
from strawberry.types.graphql import OperationType

from taskql.logs import TRACE_ID_KEY
from taskql.schema.extensions.operation_type import operation_type
from taskql.settings import Settings

INSTRUMENTATION_NAME = "taskql"
# Probes and scrapes, every few seconds from every balancer and Prometheus: traces of them would bury
# the requests' traces, and a failing probe shows in the logs and in /readyz's answer.
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def _exporter(kind: str) -> SpanExporter:
    if kind == "console":
        return ConsoleSpanExporter(out=sys.stdout)  # the stdout of now, not of when the SDK was imported
    # Imported on demand: the gRPC stack is large, and only one of the two is ever used.
    if kind == "otlp-grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


def create_tracer_provider(settings: Settings) -> TracerProvider | None:
    """The provider for TRACING_EXPORTER, batching spans off the request path; None when tracing is off."""
    if settings.tracing_exporter == "none":
        return None
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.otel_service_name}))
    provider.add_span_processor(BatchSpanProcessor(_exporter(settings.tracing_exporter)))
    return provider


def mongo_listeners(provider: TracerProvider | None) -> list[CommandListener]:
    """A client span per MongoDB command, for one client (pymongo's listeners also serve AsyncMongoClient)."""
    if provider is None:
        return []
    return [CommandTracer(provider.get_tracer(INSTRUMENTATION_NAME))]  # statements are not captured


def instrument_redis(client: Redis | None, provider: TracerProvider | None) -> None:
    """A client span per Redis command of `client`; arguments are recorded as `?`."""
    if client is not None and provider is not None:
        RedisInstrumentor.instrument_client(client, tracer_provider=provider)


def trace_batches(loader: DataLoader[Any, Any], tracer: Tracer) -> None:
    """A span around each batch `loader` dispatches, with the batch's size. DataLoader runs a batch in
    a task of its own, which inherits the span of the resolver whose load() started it."""
    load = loader.load_fn
    name = f"DataLoader {type(loader).__name__}"

    async def traced_load(keys: list[Any]) -> Any:
        with tracer.start_as_current_span(name, attributes={"taskql.loader.batch_size": len(keys)}):
            return await load(keys)

    loader.load_fn = traced_load


class TracingMiddleware:
    """The server span of each HTTP request, continuing the caller's trace (W3C traceparent)."""

    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if path in UNTRACED_PATHS:
            with suppress_instrumentation():  # nor their MongoDB and Redis commands
                await self.app(scope, receive, send)
            return
        carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        name = f"{method} {path}" if path == "/graphql" else method  # span names must stay few
        with self.tracer.start_as_current_span(name, context=propagate.extract(carrier), kind=SpanKind.SERVER) as span:
            span.set_attributes({"http.request.method": method, "url.path": path})
            state = scope.setdefault("state", {})
            if state.get("request_id"):
                span.set_attribute("taskql.request_id", state["request_id"])
            state[TRACE_ID_KEY] = trace.format_trace_id(span.get_span_context().trace_id)  # for the access log

            async def send_recording_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                    if message["status"] >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            await self.app(scope, receive, send_recording_status)


class GraphQLTracing(SchemaExtension):
    """The span of each GraphQL operation, and a span per resolver that is not a plain attribute read."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._operation = trace.INVALID_SPAN

    async def on_operation(self) -> AsyncIterator[None]:  # type: ignore[override]
        execution = self.execution_context
        self._operation = span = self._tracer.start_span("GraphQL operation", kind=SpanKind.INTERNAL)
        try:
            yield
        except Exception as exc:  # a request the server refuses outright (say, an unknown operation name)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            kind, name = operation_type(execution), execution.operation_name
            if kind is not None:
                span.update_name(f"{kind} {name}" if name else kind)
                span.set_attribute("graphql.operation.type", kind)
                if name:
                    span.set_attribute("graphql.operation.name", name)
            errors = [*(execution.pre_execution_errors or []), *(getattr(execution.result, "errors", None) or [])]
            if errors:
                codes = sorted({str((error.extensions or {}).get("code", "UNKNOWN")) for error in errors})
                span.set_status(Status(StatusCode.ERROR, ", ".join(codes)))
            span.end()

    async def on_execute(self) -> AsyncIterator[None]:  # type: ignore[override]
        """The operation's span is current while a query or mutation runs, so that the other extensions
        (the cost) annotate it. Not for a subscription: its events run in other asyncio contexts, where
        the current span could not be restored."""
        if operation_type(self.execution_context) == OperationType.SUBSCRIPTION.value:
            yield
            return
        with trace.use_span(self._operation):
            yield

    async def resolve(
        self, _next: Callable[..., Any], root: Any, info: GraphQLResolveInfo, *args: Any, **kwargs: Any
    ) -> Any:
        if should_skip_tracing(_next, info):
            result = _next(root, info, *args, **kwargs)
            return await result if isawaitable(result) else result
        with self._tracer.start_as_current_span(
            f"{info.parent_type.name}.{info.field_name}", context=trace.set_span_in_context(self._operation)
        ) as span:
            span.set_attributes(
                {
                    "graphql.field.name": info.field_name,
                    "graphql.field.parent_type": info.parent_type.name,
                    "graphql.field.path": ".".join(map(str, get_path_from_info(info))),
                }
            )
            result = _next(root, info, *args, **kwargs)
            return await result if isawaitable(result) else result
