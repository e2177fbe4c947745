"""Traces: HTTP request → GraphQL operation → resolvers → DataLoader batches → MongoDB and Redis commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import pytest
from asgi_lifespan import LifespanManager
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, format_span_id, format_trace_id
from pymongo import AsyncMongoClient

from bench.otlp_sink import ReceivedSpans, otlp_http_sink
from taskql.schema.root import build_schema
from taskql.server import build_app
from taskql.settings import Settings
from taskql.tracing import create_tracer_provider
from tests.conftest import PASSWORD, GraphQLClient, add_member, create_project, create_task, sign_up, subscribe
from tests.test_logs import LOGIN, access_lines

BOARD = """
query Board($id: ID!) {
  project(id: $id) { name owner { name } tasks(first: 10) { edges { node { title assignee { name } } } } }
}
"""
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


class Traced:
    def __init__(self, app: Any, client: GraphQLClient, exporter: InMemorySpanExporter) -> None:
        self.app = app
        self.client = client
        self.exporter = exporter

    def spans(self) -> Sequence[ReadableSpan]:
        return self.exporter.get_finished_spans()


@pytest.fixture
async def traced(settings: Settings) -> AsyncIterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = build_app(settings, tracer_provider=provider)
    transport = httpx.ASGITransport(app=app)
    async with LifespanManager(app), httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield Traced(app, GraphQLClient(http), exporter)
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_uri)
    await mongo.drop_database(settings.mongodb_database)
    await mongo.close()


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span)
    return chain


def _one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    matching = [span for span in spans if span.name == name]
    assert len(matching) == 1, [span.name for span in spans]
    return matching[0]


async def test_a_nested_query_is_one_trace_from_the_request_down_to_each_database_command(traced: Traced) -> None:
    owner = await sign_up(traced.client, "Owner")
    project_id = await create_project(owner)
    for name in ("Ann", "Bob"):
        member = await sign_up(traced.client, name)
        await add_member(owner, project_id, member, "EDITOR")
        await create_task(owner, project_id, title=name, assigneeId=member.user["id"])
    traced.exporter.clear()

    response = await owner.http.post(
        "/graphql",
        json={"query": BOARD, "variables": {"id": project_id}},
        headers={"authorization": f"Bearer {owner.token}", "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
    )
    assert "errors" not in response.json()

    spans = traced.spans()
    by_id = {span.context.span_id: span for span in spans}
    request = _one(spans, "POST /graphql")
    assert request.kind == SpanKind.SERVER
    assert format_trace_id(request.context.trace_id) == CALLER_TRACE  # the caller's trace goes on
    assert request.parent is not None and format_span_id(request.parent.span_id) == CALLER_SPAN
    assert request.attributes["http.response.status_code"] == 200
    assert {span.context.trace_id for span in spans} == {request.context.trace_id}

    operation = _one(spans, "query Board")
    assert operation.parent.span_id == request.context.span_id
    assert operation.attributes["graphql.operation.name"] == "Board"
    assert operation.attributes["graphql.operation.type"] == "query"
    assert operation.attributes["graphql.operation.cost"] == 10  # tasks(first: 10)

    project_field = _one(spans, "Query.project")
    assert project_field.parent.span_id == operation.context.span_id
    assert project_field.attributes["graphql.field.path"] == "project"
    for resolver in (project_field, _one(spans, "Project.tasks"), *[s for s in spans if s.name == "Task.assignee"]):
        assert resolver.end_time > resolver.start_time  # each resolver's latency
        assert operation in _ancestors(resolver, by_id)
    assert len([span for span in spans if span.name == "Task.assignee"]) == 2
    assert not [span for span in spans if span.name in ("Project.name", "Task.title")]  # plain attributes

    # Both assignees are read in one batch, which hangs under the resolver that started it and
    # holds the cache read and the database read.
    (assignees,) = [
        span
        for span in spans
        if span.name == "DataLoader UserByIdLoader" and "Task.assignee" in [a.name for a in _ancestors(span, by_id)]
    ]
    assert assignees.attributes["taskql.loader.batch_size"] == 2
    mongo = [span for span in spans if span.attributes.get("db.system") == "mongodb"]
    redis = [span for span in spans if span.attributes.get("db.system") == "redis"]
    assert all(span.kind == SpanKind.CLIENT for span in mongo + redis)
    for command in mongo + redis:
        assert request in _ancestors(command, by_id)
    # One span per Redis command, none per pipeline (redis_client.py sends commands started together
    # as one); the login is checked as the operation starts, together with its rate-limit charge.
    (login_check,) = [span for span in redis if "EXISTS" in span.name]
    assert login_check.name == "EXISTS"
    assert operation in _ancestors(login_check, by_id)
    (page_read,) = [span for span in mongo if span.name.endswith(".aggregate")]
    assert [a.name for a in _ancestors(page_read, by_id)] == [
        "DataLoader TaskPageByProjectLoader",
        "Project.tasks",
        "query Board",
        "POST /graphql",
    ]
    (assignees_read,) = [span for span in redis if span.parent.span_id == assignees.context.span_id]
    assert assignees_read.name == "MGET"  # the shared cache, read before the database


async def test_probes_are_not_traced(traced: Traced) -> None:
    traced.exporter.clear()  # the startup's commands (indexes)
    assert (await traced.client.http.get("/readyz")).status_code == 200  # pings MongoDB and Redis
    assert (await traced.client.http.get("/healthz")).status_code == 200
    await traced.client.http.get("/nowhere/d41d8cd98f00b204")

    assert [span.name for span in traced.spans()] == ["GET"]  # an unknown path: named by its method only


async def test_a_failed_operation_marks_its_span_with_the_error_codes(traced: Traced) -> None:
    await traced.client.post("query Broken { nonexistent }")

    operation = _one(traced.spans(), "query Broken")
    assert operation.status.status_code == StatusCode.ERROR
    assert operation.status.description == "GRAPHQL_VALIDATION_FAILED"


async def test_spans_carry_no_query_text_variables_passwords_or_tokens(traced: Traced) -> None:
    user = await sign_up(traced.client, "Secretive")
    await traced.client.post(LOGIN, {"e": user.user["email"], "p": PASSWORD})
    await user.post("{ viewer { id email } }")

    recorded = json.dumps([dict(span.attributes) for span in traced.spans()], default=str)
    assert "SignIn" in recorded  # the operation's name is there
    for secret in (PASSWORD, user.token, user.refresh_token, user.user["email"], "login(input"):
        assert secret not in recorded


async def test_the_access_log_names_the_requests_trace(traced: Traced, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="taskql.access")
    await traced.client.post("query Me { viewer { id } }")

    (line,) = access_lines(caplog)
    request = _one(traced.spans(), "POST /graphql")
    assert line["trace_id"] == format_trace_id(request.context.trace_id)


async def test_subscriptions_are_traced_and_still_deliver(
    traced: Traced, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    owner = await sign_up(traced.client, "Owner")
    project_id = await create_project(owner)
    schema = build_schema(settings, tracer=traced.app.state.runtime.tracer)
    live = "subscription Live($p: ID!) { taskEvents(projectId: $p) { kind task { title } } }"
    events = await subscribe(traced.app, owner, live, schema=schema, p=project_id)
    first = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.2)  # subscribed
    await create_task(owner, project_id, title="Watched")
    result = await asyncio.wait_for(first, 10)
    await events.aclose()

    assert result.errors is None
    assert result.data["taskEvents"] == {"kind": "TASK_CREATED", "task": {"title": "Watched"}}
    assert _one(traced.spans(), "subscription Live").attributes["graphql.operation.name"] == "Live"
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")]  # e.g. "Failed to detach context"


async def test_the_console_exporter_prints_the_spans_by_shutdown(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert create_tracer_provider(settings) is None  # the default: no tracing
    app = build_app(settings.model_copy(update={"tracing_exporter": "console", "otel_service_name": "taskql-test"}))
    transport = httpx.ASGITransport(app=app)
    async with LifespanManager(app), httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        await http.post("/graphql", json={"query": "query Ping { viewer { id } }"})

    printed = capsys.readouterr().out
    assert '"name": "query Ping"' in printed
    assert '"service.name": "taskql-test"' in printed


@contextlib.contextmanager
def otlp_grpc_sink() -> Iterator[ReceivedSpans]:
    received = ReceivedSpans()

    class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (the protocol's name)
            received.receive(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(), server)
    received.endpoint = f"http://127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        yield received
    finally:
        server.stop(grace=None)


@pytest.mark.parametrize(("exporter", "collector"), [("otlp-http", otlp_http_sink), ("otlp-grpc", otlp_grpc_sink)])
async def test_the_otlp_exporters_deliver_the_spans_to_a_collector(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, exporter: str, collector: Any
) -> None:
    with collector() as received:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", received.endpoint)  # the standard variable
        app = build_app(settings.model_copy(update={"tracing_exporter": exporter}))
        transport = httpx.ASGITransport(app=app)
        async with LifespanManager(app), httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            await http.post("/graphql", json={"query": "query Ping { viewer { id } }"})

    assert received.names[("taskql", "query Ping")] == 1
    assert received.names[("taskql", "POST /graphql")] == 1


async def test_an_operation_name_the_document_lacks_is_refused_and_traced_without_a_type(traced: Traced) -> None:
    response = await traced.client.http.post(
        "/graphql", json={"query": "query A { viewer { id } }", "operationName": "B"}
    )

    assert response.status_code == 400  # refused by the server, not broken by the tracing
    operation = _one(traced.spans(), "GraphQL operation")
    assert "graphql.operation.type" not in operation.attributes
    assert operation.status.status_code == StatusCode.ERROR
