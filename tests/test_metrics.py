"""Prometheus metrics at /metrics: every series exists and moves by what the server did, in one process
and added up across the worker processes of `taskql serve --workers N`.

The metrics live in the process's default registry, shared by every app the tests build: assertions
compare a scrape after an action with one before it, never absolute values (except on a fresh server).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from bson import ObjectId
from graphql import GraphQLError
from prometheus_client.parser import text_string_to_metric_families

from taskql.embedded.child import free_port
from taskql.errors import DomainError
from taskql.schema.extensions.metrics import (
    ANONYMOUS,
    ERROR_CODES,
    MAX_OPERATION_NAMES,
    OTHER,
    OperationNames,
    count_errors,
)
from taskql.schema.relay import encode_id
from taskql.server import build_app
from taskql.settings import PRODUCTION_METRICS_PORT, Settings
from tests.conftest import PASSWORD, GraphQLClient, create_task, sign_up, subscribe
from tests.live import LiveServer, Subscriber, User

OPERATION = "taskql_graphql_operation_duration_seconds"
ERRORS = "taskql_graphql_errors"
RESOLVER = "taskql_resolver_duration_seconds"
CACHE = "taskql_cache_requests"
BATCH = "taskql_loader_batch_size"
WEBSOCKETS = "taskql_websocket_connections"
SUBSCRIPTIONS = "taskql_subscriptions"
REJECTIONS = "taskql_rate_limit_rejections"
FAMILIES = {
    OPERATION: "histogram",
    ERRORS: "counter",
    RESOLVER: "histogram",
    CACHE: "counter",
    BATCH: "histogram",
    WEBSOCKETS: "gauge",
    SUBSCRIPTIONS: "gauge",
    REJECTIONS: "counter",
}
TASK_EVENTS = "subscription($p: ID!) { taskEvents(projectId: $p) { kind } }"
CREATE_PROJECT = 'mutation MetricsCreateProject { createProject(input: {name: "M"}) { project { id } } }'


class Scrape:
    """One answer of /metrics, parsed."""

    def __init__(self, text: str) -> None:
        self.types: dict[str, str] = {}
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples[sample.name, frozenset(sample.labels.items())] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """A sample's value; 0 for a series not created yet (nothing counted in it so far)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(labels)[label] for sample, labels in self.samples if sample == name and label in dict(labels)}


async def scrape(http: httpx.AsyncClient) -> Scrape:
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    return Scrape(response.text)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Every root resolver timed, so that what is measured is known."""
    return settings.model_copy(update={"metrics_resolver_sample_rate": 1.0})


@contextlib.asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[GraphQLClient]:
    """Another app, with settings of its own, on the test's database."""
    app = build_app(settings)
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            yield GraphQLClient(http)


async def test_metrics_are_served_in_the_prometheus_text_format(anonymous: GraphQLClient) -> None:
    response = await anonymous.http.get("/metrics")
    again = Scrape((await anonymous.http.get("/metrics")).text)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    first = Scrape(response.text)
    assert {name: first.types.get(name) for name in FAMILIES} == FAMILIES
    # Scrapes are not GraphQL operations: they count nowhere.
    assert {k: v for k, v in again.samples.items() if k[0] == f"{OPERATION}_count"} == {
        k: v for k, v in first.samples.items() if k[0] == f"{OPERATION}_count"
    }


async def test_metrics_can_be_turned_off(settings: Settings) -> None:
    async with served(settings.model_copy(update={"metrics_enabled": False})) as client:
        assert (await client.http.get("/metrics")).status_code == 404


async def test_an_operation_is_timed_under_its_type_and_name(owner_client: GraphQLClient) -> None:
    before = await scrape(owner_client.http)

    await owner_client.execute("query MetricsViewer { viewer { id } }")
    await owner_client.execute("{ viewer { id } }")
    await owner_client.execute(CREATE_PROJECT)
    after = await scrape(owner_client.http)

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert moved(f"{OPERATION}_count", operation_type="query", operation_name="MetricsViewer") == 1
    assert moved(f"{OPERATION}_sum", operation_type="query", operation_name="MetricsViewer") > 0
    assert moved(f"{OPERATION}_count", operation_type="query", operation_name=ANONYMOUS) == 1
    assert moved(f"{OPERATION}_count", operation_type="mutation", operation_name="MetricsCreateProject") == 1
    slowest = {"operation_type": "query", "operation_name": "MetricsViewer", "le": "+Inf"}
    assert moved(f"{OPERATION}_bucket", **slowest) == 1


def test_operation_names_are_bounded_per_process() -> None:
    names = OperationNames(limit=2)

    assert [names.label(n) for n in ["First", "Second", "Third", "First", None]] == [
        "First",
        "Second",
        OTHER,
        "First",
        ANONYMOUS,
    ]
    fresh = OperationNames(limit=10)
    assert [fresh.label(n) for n in ["not a name", "x" * 101, "9lives", "x" * 100]] == [OTHER, OTHER, OTHER, "x" * 100]


async def test_clients_cannot_create_operation_series_without_end(anonymous: GraphQLClient) -> None:
    run = uuid.uuid4().hex[:8]
    names = [f"Bound{run}_{n}" for n in range(MAX_OPERATION_NAMES + 1)]  # more than may ever be admitted
    before = await scrape(anonymous.http)

    for name in names:
        assert (await anonymous.post(f"query {name} {{ __typename }}"))["data"] == {"__typename": "Query"}
    after = await scrape(anonymous.http)

    def count(scrape: Scrape, name: str) -> float:
        return scrape.value(f"{OPERATION}_count", operation_type="query", operation_name=name)

    kept = sum(count(after, name) for name in names)  # their series did not exist before
    overflowed = count(after, OTHER) - count(before, OTHER)
    assert overflowed >= 1
    assert kept + overflowed == len(names)
    assert len(after.label_values(f"{OPERATION}_count", "operation_name")) <= MAX_OPERATION_NAMES + 2


async def test_an_operation_name_the_document_lacks_creates_no_series(anonymous: GraphQLClient) -> None:
    response = await anonymous.http.post(
        "/graphql", json={"query": "query Present { __typename }", "operationName": "Absent"}
    )
    after = await scrape(anonymous.http)

    assert response.status_code == 400
    assert "Absent" not in after.label_values(f"{OPERATION}_count", "operation_name")


async def test_errors_are_counted_by_code(anonymous: GraphQLClient, owner_client: GraphQLClient) -> None:
    before = await scrape(anonymous.http)

    await anonymous.post("{ projects { totalCount } }")  # not signed in
    await anonymous.post("{ viewer { id ")
    await anonymous.post("{ viewer { shoeSize } }")
    await owner_client.post('{ a: node(id: "1") { id } b: node(id: "2") { id } }')  # two malformed ids
    after = await scrape(anonymous.http)

    def moved(code: str) -> float:
        return after.value(f"{ERRORS}_total", code=code) - before.value(f"{ERRORS}_total", code=code)

    assert moved("UNAUTHENTICATED") == 1
    assert moved("GRAPHQL_PARSE_FAILED") == 1
    assert moved("GRAPHQL_VALIDATION_FAILED") == 1
    assert moved("BAD_USER_INPUT") == 2


async def test_an_unknown_error_code_is_counted_as_other(anonymous: GraphQLClient) -> None:
    before = await scrape(anonymous.http)

    count_errors([GraphQLError("odd", extensions={"code": "MADE_UP"}), GraphQLError("none")])
    after = await scrape(anonymous.http)

    assert after.value(f"{ERRORS}_total", code=OTHER) - before.value(f"{ERRORS}_total", code=OTHER) == 2
    assert "MADE_UP" not in after.label_values(f"{ERRORS}_total", "code")


def test_every_code_of_a_domain_error_is_a_known_label() -> None:
    # taskql.server, imported above, imports every module that defines an error.
    def codes(error: type[DomainError]) -> set[str]:
        return {error.code}.union(*(codes(sub) for sub in error.__subclasses__()))

    assert codes(DomainError) <= ERROR_CODES


async def test_root_resolvers_are_timed_and_nested_ones_are_not(owner_client: GraphQLClient) -> None:
    before = await scrape(owner_client.http)

    await owner_client.execute("{ viewer { id name } }")
    await owner_client.execute(CREATE_PROJECT)
    after = await scrape(owner_client.http)

    def moved(field: str) -> float:
        return after.value(f"{RESOLVER}_count", field=field) - before.value(f"{RESOLVER}_count", field=field)

    assert moved("Query.viewer") == 1
    assert moved("Mutation.createProject") == 1
    timed = after.label_values(f"{RESOLVER}_count", "field")
    assert {field.split(".")[0] for field in timed} <= {"Query", "Mutation"}


async def test_resolvers_are_not_timed_at_a_zero_sample_rate(settings: Settings) -> None:
    async with served(settings.model_copy(update={"metrics_resolver_sample_rate": 0.0})) as client:
        owner = await sign_up(client)
        before = await scrape(client.http)
        for _ in range(5):
            await owner.execute("{ viewer { id } }")
        after = await scrape(client.http)

    assert after.value(f"{RESOLVER}_count", field="Query.viewer") == before.value(
        f"{RESOLVER}_count", field="Query.viewer"
    )


async def test_cache_lookups_are_counted_as_hits_and_misses(owner_client: GraphQLClient, project_id: str) -> None:
    task = await create_task(owner_client, project_id)
    query = "query($id: ID!) { task(id: $id) { id } }"
    await owner_client.execute(query, {"id": task["id"]})  # cached now, whatever it was before
    before = await scrape(owner_client.http)

    await owner_client.execute(query, {"id": task["id"]})
    between = await scrape(owner_client.http)
    missing = await owner_client.post(query, {"id": encode_id("Task", ObjectId())})
    after = await scrape(owner_client.http)

    def moved(old: Scrape, new: Scrape, result: str) -> float:
        return new.value(f"{CACHE}_total", kind="task", result=result) - old.value(
            f"{CACHE}_total", kind="task", result=result
        )

    assert (moved(before, between, "hit"), moved(before, between, "miss")) == (1, 0)
    assert missing["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert (moved(between, after, "hit"), moved(between, after, "miss")) == (0, 1)


async def test_loader_batches_are_observed_with_their_size(owner_client: GraphQLClient, project_id: str) -> None:
    ids = [(await create_task(owner_client, project_id))["id"] for _ in range(3)]
    before = await scrape(owner_client.http)

    data = await owner_client.execute("query($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": ids})
    after = await scrape(owner_client.http)

    assert [node["id"] for node in data["nodes"]] == ids
    loader = {"loader": "TaskByIdLoader"}
    assert after.value(f"{BATCH}_count", **loader) - before.value(f"{BATCH}_count", **loader) == 1
    assert after.value(f"{BATCH}_sum", **loader) - before.value(f"{BATCH}_sum", **loader) == 3


async def test_rate_limit_rejections_are_counted_by_budget(settings: Settings) -> None:
    limits = {"rate_limit_user_points": 2, "login_max_failures": 1}
    async with served(settings.model_copy(update=limits)) as client:
        user = await sign_up(client)
        login = "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { accessToken } }"
        before = await scrape(client.http)

        statuses = [(await _as(user, "{ viewer { id } }")).status_code for _ in range(3)]
        await client.post(login, {"e": user.user["email"], "p": PASSWORD + "?"})  # a failure: the budget is 1
        refused_login = await client.http.post(
            "/graphql", json={"query": login, "variables": {"e": user.user["email"], "p": PASSWORD}}
        )
        after = await scrape(client.http)

    assert statuses == [200, 200, 429]
    assert refused_login.status_code == 429

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert (moved(f"{REJECTIONS}_total", budget="user"), moved(f"{REJECTIONS}_total", budget="login")) == (1, 1)
    assert moved(f"{ERRORS}_total", code="RATE_LIMITED") == 2


async def _as(user: GraphQLClient, query: str) -> httpx.Response:
    return await user.http.post("/graphql", json={"query": query}, headers={"authorization": f"Bearer {user.token}"})


async def test_a_subscription_counts_while_it_runs_until_the_client_leaves(
    app: Any, owner_client: GraphQLClient, project_id: str
) -> None:
    before = await scrape(owner_client.http)
    stream = await subscribe(app, owner_client, TASK_EVENTS, p=project_id)
    waiting = asyncio.create_task(anext(stream))

    running = await _until(
        lambda: scrape(owner_client.http), lambda s: s.value(SUBSCRIPTIONS) == before.value(SUBSCRIPTIONS) + 1
    )
    waiting.cancel()  # what the server does when the client goes away
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    after = await scrape(owner_client.http)

    assert running.value(SUBSCRIPTIONS) == before.value(SUBSCRIPTIONS) + 1
    assert after.value(SUBSCRIPTIONS) == before.value(SUBSCRIPTIONS)
    labels = {"operation_type": "subscription", "operation_name": ANONYMOUS}
    assert after.value(f"{OPERATION}_count", **labels) - before.value(f"{OPERATION}_count", **labels) == 1


async def _until(
    take: Callable[[], Awaitable[Scrape]], condition: Callable[[Scrape], bool], seconds: float = 10
) -> Scrape:
    """The first scrape `take` takes that meets `condition`, within `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        current = await take()
        if condition(current) or time.monotonic() > deadline:
            return current
        await asyncio.sleep(0.05)


# Real server processes.


@pytest.fixture
def live_settings(mongodb_uri: str, redis_url: str, tmp_path: Path) -> dict[str, Any]:
    return {
        "mongodb_uri": mongodb_uri,
        "redis_url": redis_url,
        "database": f"test_{uuid.uuid4().hex[:12]}",
        "data_dir": tmp_path,
    }


async def live_scrape(server: LiveServer) -> Scrape:
    """On a connection of its own, which any of the server's workers may accept."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        return await scrape(http)


async def test_workers_add_up_their_metrics(live_settings: dict[str, Any], tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    server = LiveServer(**live_settings, workers=2, tmpdir=temp)  # TMPDIR: where the metrics directory goes
    server.start()
    try:
        [shared] = temp.glob("taskql-metrics-*")
        probe = {"operation_type": "query", "operation_name": "Probe"}
        sent = 0
        # Requests on connections of their own, until both workers have answered some.
        for _ in range(20):
            async with asyncio.TaskGroup() as group:
                for _ in range(10):
                    group.create_task(_probe(server))
            sent += 10
            if len({path.stem.rsplit("_", 1)[1] for path in shared.glob("histogram_*.db")}) == 2:
                break
        assert len(list(shared.glob("histogram_*.db"))) == 2, "one worker answered every request"

        counts = [(await live_scrape(server)).value(f"{OPERATION}_count", **probe) for _ in range(8)]
        assert counts == [sent] * 8

        owner = await User.register(server, "Owner")
        project_id = (await owner.execute(CREATE_PROJECT))["createProject"]["project"]["id"]
        async with Subscriber(server, owner.token, project_id):
            open_now = await _until(
                lambda: live_scrape(server), lambda s: s.value(WEBSOCKETS) == 1 and s.value(SUBSCRIPTIONS) == 1
            )
        closed = await _until(
            lambda: live_scrape(server), lambda s: s.value(WEBSOCKETS) == 0 and s.value(SUBSCRIPTIONS) == 0
        )
        assert (open_now.value(WEBSOCKETS), open_now.value(SUBSCRIPTIONS)) == (1, 1)
        assert (closed.value(WEBSOCKETS), closed.value(SUBSCRIPTIONS)) == (0, 0)
    finally:
        server.stop()
    assert not shared.exists()


async def _probe(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        response = await http.post("/graphql", json={"query": "query Probe { __typename }"})
    assert response.json() == {"data": {"__typename": "Query"}}


async def test_an_operators_metrics_directory_is_emptied_at_start_and_of_live_gauges_at_exit(
    live_settings: dict[str, Any], tmp_path: Path
) -> None:
    shared = tmp_path / "metrics"
    shared.mkdir()
    stale = shared / "counter_1.db"
    stale.write_bytes(b"left by an earlier run")
    server = LiveServer(**live_settings, prometheus_multiproc_dir=shared)
    server.start()
    try:
        assert not stale.exists()
        await _probe(server)
        probe = {"operation_type": "query", "operation_name": "Probe"}
        assert (await live_scrape(server)).value(f"{OPERATION}_count", **probe) == 1
        assert list(shared.glob("gauge_livesum_*.db"))
    finally:
        server.stop()
    assert not list(shared.glob("gauge_livesum_*.db"))  # the exited worker's connections count no more
    assert list(shared.glob("histogram_*.db"))  # while what it counted stays counted


async def test_production_serves_metrics_on_a_port_of_their_own(live_settings: dict[str, Any], tmp_path: Path) -> None:
    # /metrics on the API's port tells anyone who can reach the API how it is used, as soon as one
    # route of the balancer is wrong. In production it has a port of its own, which the balancer
    # never exposes; with several workers, the supervisor answers for all of them.
    metrics_port = free_port()
    temp = tmp_path / "tmp"
    temp.mkdir()
    server = LiveServer(**live_settings, taskql_env="production", metrics_port=metrics_port, workers=2, tmpdir=temp)
    server.start()
    try:
        for _ in range(10):
            await _probe(server)
        async with (
            httpx.AsyncClient(base_url=server.base_url, timeout=10) as api,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{metrics_port}", timeout=10) as internal,
        ):
            on_the_api_port = await api.get("/metrics")
            separate = await scrape(internal)
    finally:
        server.stop()

    assert on_the_api_port.status_code == 404
    assert separate.value(f"{OPERATION}_count", operation_type="query", operation_name="Probe") == 10


def test_metrics_leave_the_api_port_in_production_unless_disabled() -> None:
    production = {"taskql_env": "production", "jwt_secret": "s" * 40, "_env_file": None}

    assert Settings(**production).separate_metrics_port == PRODUCTION_METRICS_PORT
    assert Settings(**production, metrics_port=9100).separate_metrics_port == 9100
    assert Settings(**production, metrics_enabled=False).separate_metrics_port is None
    assert Settings(_env_file=None).separate_metrics_port is None  # development: GET /metrics on the API's port
    with pytest.raises(ValueError, match="METRICS_PORT must differ from PORT"):
        Settings(_env_file=None, port=8000, metrics_port=8000)
