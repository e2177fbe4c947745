"""HTTP surface: health, readiness, request ids, GraphiQL, GET queries and error masking."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from secantus import SecantusDBServer

from taskql.server import build_app
from taskql.settings import Settings
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
async def doomed_database(tmp_path: Path) -> AsyncIterator[SecantusDBServer]:
    """A database server of this test's own, which the test stops mid-flight."""
    server = SecantusDBServer(storage_path=str(tmp_path / "doomed"), port=0)
    server.start()
    yield server
    with contextlib.suppress(RuntimeError):  # already stopped by the test
        server.stop()


@pytest.mark.parametrize("environment", ["test", "production"])
async def test_database_outage_is_masked_logged_and_reported_by_readyz(
    doomed_database: SecantusDBServer,
    redis_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    environment: str,
) -> None:
    caplog.set_level(logging.ERROR, logger="taskql.errors")
    settings = Settings(
        _env_file=None,
        taskql_env=environment,
        mongodb_uri=doomed_database.uri,
        redis_url=redis_url,
        mongodb_database=f"t_{uuid.uuid4().hex[:8]}",
        mongodb_server_selection_timeout_ms=300,
        mongodb_timeout_ms=1_000,
        jwt_secret=TEST_SECRET,
        data_dir=tmp_path,
    )
    app = build_app(settings)
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            client = await sign_up(GraphQLClient(http), "Doomed")
            port = doomed_database.uri.rsplit(":", 1)[1].strip("/")
            doomed_database.stop()

            signed_in = await http.post(
                "/graphql", json={"query": VIEWER}, headers={"authorization": f"Bearer {client.token}"}
            )
            body: dict[str, Any] = await GraphQLClient(http).post(CREATE_USER_REQUEST)
            ready = await http.get("/readyz")

    assert signed_in.status_code == 503
    assert signed_in.headers["x-request-id"] in signed_in.text
    assert port not in signed_in.text
    error = body["errors"][0]
    assert error["message"] == "Internal server error."
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert error["extensions"]["requestId"]
    assert port not in str(body)
    # The operator gets what the client does not: the real exception, under the same request id.
    [logged] = [r for r in caplog.records if error["extensions"]["requestId"] in r.getMessage()]
    assert logged.exc_info is not None and port in str(logged.exc_info[1])
    assert (ready.status_code, ready.json()["failing"]) == (503, ["mongodb"])


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
