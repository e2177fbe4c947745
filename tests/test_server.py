"""HTTP surface: health, readiness, request ids, GraphiQL, GET queries and error masking."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from taskql.embedded.child import ChildServer
from taskql.embedded.secantus import secantus_server
from taskql.http.protocol import GRAPHQL_RESPONSE_JSON as GRAPHQL_RESPONSE
from taskql.server import build_app
from taskql.settings import UNLIMITED_RATE, Settings
from tests.conftest import TEST_SECRET, GraphQLClient, create_project, create_task, sign_up

VIEWER = "{ viewer { id name } }"
CREATE_USER_REQUEST = 'mutation { login(input: {email: "a@b.io", password: "whatever1"}) { user { id } } }'


async def test_healthz_and_readyz_answer_ok(anonymous: GraphQLClient) -> None:
    health = await anonymous.http.get("/healthz")
    ready = await anonymous.http.get("/readyz")

    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ok"})


async def test_request_id_is_echoed_or_generated(anonymous: GraphQLClient) -> None:
    echoed = await anonymous.http.get("/healthz", headers={"x-request-id": "abc-123"})
    hostile = await anonymous.http.get("/healthz", headers={"x-request-id": "bad id\r\nwith spaces"})

    assert echoed.headers["x-request-id"] == "abc-123"
    assert hostile.headers["x-request-id"] != "bad id\r\nwith spaces"
    assert len(hostile.headers["x-request-id"]) == 32


async def test_graphiql_is_served_to_browsers_in_development(anonymous: GraphQLClient) -> None:
    response = await anonymous.http.get("/graphql", headers={"accept": "text/html"})

    assert response.status_code == 200
    assert "graphiql" in response.text.lower()


async def test_syntax_and_validation_errors_carry_codes(anonymous: GraphQLClient) -> None:
    syntax = await anonymous.post("{ viewer { id ")
    unknown = await anonymous.post("{ viewer { shoeSize } }")

    assert syntax["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    assert unknown["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


@pytest.fixture
def doomed_database(tmp_path: Path) -> Iterator[tuple[ChildServer, str]]:
    """A database server of this test's own, which the test stops and starts again (on its port)."""
    server, uri = secantus_server(tmp_path / "doomed")
    server.start()
    yield server, uri
    server.stop()


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await request
    return response, time.monotonic() - started


@pytest.mark.parametrize("environment", ["test", "production"])
async def test_a_database_outage_answers_service_unavailable_fast_then_recovers(
    doomed_database: tuple[ChildServer, str],
    redis_url: str,
    tmp_path: Path,
    environment: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The database killed: signed-in requests waited 10-11 s for a plain-text 503, a login 10.7 s for
    # a masked INTERNAL_SERVER_ERROR, /readyz 10.5-11.4 s. Now: the default timeouts, a coded answer.
    database, uri = doomed_database
    settings = Settings(
        _env_file=None,
        taskql_env=environment,
        mongodb_uri=uri,
        redis_url=redis_url,
        mongodb_database=f"t_{uuid.uuid4().hex[:8]}",
        jwt_secret=TEST_SECRET,
        data_dir=tmp_path,
        **UNLIMITED_RATE,
    )
    caplog.set_level(logging.INFO)
    app = build_app(settings)
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            client = await sign_up(GraphQLClient(http), "Doomed")
            port = uri.rsplit(":", 1)[1].split("/")[0]
            signed_in = {"authorization": f"Bearer {client.token}"}
            database.stop()

            graphql_response, graphql_took = await timed(
                http.post("/graphql", json={"query": VIEWER}, headers={**signed_in, "accept": GRAPHQL_RESPONSE})
            )
            plain_json, json_took = await timed(
                http.post("/graphql", json={"query": VIEWER}, headers={**signed_in, "accept": "application/json"})
            )
            login, login_took = await timed(http.post("/graphql", json={"query": CREATE_USER_REQUEST}))
            ready, ready_took = await timed(http.get("/readyz"))

            database.start()
            recovered = await client.execute(VIEWER)

    assert graphql_response.status_code == 503 and plain_json.status_code == 200
    for response in (graphql_response, plain_json, login):
        [error] = response.json()["errors"]
        assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        assert response.headers["retry-after"] == str(error["extensions"]["retryAfter"])
        assert response.headers["x-request-id"] in error["message"]
        assert port not in response.text
    # MONGODB_SERVER_SELECTION_TIMEOUT_MS (2 s), which the driver rechecks twice a second.
    assert max(graphql_took, json_took, login_took) < 3.0
    assert (ready.status_code, ready.json()["failing"]) == (503, ["mongodb"])
    assert ready_took < 1.0
    assert recovered["viewer"]["name"] == "Doomed"  # without restarting TaskQL
    # The outage in the log: once when it started, once when it ended; no line per request or probe.
    outage = [r.getMessage() for r in caplog.records if r.name == "taskql.db"]
    assert len(outage) == 2, outage
    assert outage[0].startswith("MongoDB has no server to write to") and outage[1].startswith("MongoDB writable again")
    assert not [r for r in caplog.records if r.name in ("taskql.errors", "taskql.server")]


async def test_production_serves_no_graphiql(settings: Settings) -> None:
    production = settings.model_copy(update={"taskql_env": "production"})
    app = build_app(production)
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            page = await http.get("/graphql", headers={"accept": "text/html"})
            query = await http.get("/graphql", params={"query": "{ viewer { id } }"}, headers={"x-taskql-csrf": "1"})

    assert "graphiql" not in page.text.lower()
    assert query.json() == {"data": {"viewer": None}}


async def test_writes_keep_working_with_a_secondary_read_preference_in_the_uri(settings: Settings) -> None:
    # Transactions must read from the primary: they must not inherit the client's read preference.
    uri = settings.mongodb_uri.rstrip("/") + "/?readPreference=secondaryPreferred"
    app = build_app(settings.model_copy(update={"mongodb_uri": uri, "mongodb_read_preference": "secondaryPreferred"}))
    transport = httpx.ASGITransport(app=app)
    async with LifespanManager(app), httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert app.state.runtime.db.supports_transactions
        owner = await sign_up(GraphQLClient(http), "Owner")
        project_id = await create_project(owner)
        task = await create_task(owner, project_id, title="Written in a transaction")

    assert task["title"] == "Written in a transaction"
