"""Queries and mutations generated from the schema (hypothesis-graphql) against a real server process:
every answer is well-formed GraphQL JSON, never a 500, never an internal error, masked or not."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import StringValueNode, build_schema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema

from bench.otlp_sink import otlp_http_sink
from tests.conftest import PASSWORD, RedisServer
from tests.live import LiveServer

SCHEMA = build_schema(Path(__file__).parent.parent.joinpath("schema.graphql").read_text())
DATES = st.datetimes(timezones=st.just(UTC)).map(lambda moment: StringValueNode(value=moment.isoformat()))
SCALARS = {"DateTime": DATES}
# Codes a client may see; anything else (INTERNAL_SERVER_ERROR above all) is a bug to fix.
EXPECTED_CODES = {
    "UNAUTHENTICATED",
    "NOT_FOUND",
    "FORBIDDEN",
    "BAD_USER_INPUT",
    "GRAPHQL_PARSE_FAILED",
    "GRAPHQL_VALIDATION_FAILED",
    "QUERY_TOO_COMPLEX",
    "VALIDATION",
    "CONFLICT",
    "VERSION_CONFLICT",
    "INVALID_CREDENTIALS",
    "RATE_LIMITED",
}
REGISTER = "mutation($i: RegisterInput!) { register(input: $i) { accessToken } }"


@pytest.fixture(scope="module")
def client(
    mongodb_uri: str, shared_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """A server with every request traced (exported to a receiver in this process), so that the fuzzer
    also shows tracing never breaks a request."""
    with otlp_http_sink() as spans:
        server = LiveServer(
            mongodb_uri=mongodb_uri,
            redis_url=shared_redis.new_database(),
            database=f"test_{uuid.uuid4().hex[:12]}",
            data_dir=tmp_path_factory.mktemp("fuzz"),
            tracing_exporter="otlp-http",
            otel_exporter_otlp_endpoint=spans.endpoint,
            otel_bsp_schedule_delay=100,  # ms between exports
        )
        server.start()
        try:
            with httpx.Client(base_url=server.base_url, timeout=30) as http:
                variables = {"i": {"email": "fuzz@example.com", "name": "Fuzz", "password": PASSWORD}}
                token = http.post("/graphql", json={"query": REGISTER, "variables": variables}).json()
                http.headers["authorization"] = f"Bearer {token['data']['register']['accessToken']}"
                deadline = time.monotonic() + 10
                while not spans.names[("taskql", "mutation")] and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert spans.names[("taskql", "mutation")] == 1  # the registration's operation
                yield http
        finally:
            server.stop()


def check_answer(response: httpx.Response, *, executable: bool) -> None:
    assert response.status_code in (200, 400, 413, 429), response.text  # 429: the fuzzer guesses logins
    body: dict[str, Any] = response.json()
    assert set(body) <= {"data", "errors", "extensions"}, body
    assert "data" in body or "errors" in body
    if executable and response.status_code == 200:
        assert isinstance(body.get("data"), dict | None)
    for error in body.get("errors", []):
        assert isinstance(error["message"], str)
        assert error["extensions"]["code"] in EXPECTED_CODES, error


FUZZ_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)


@FUZZ_SETTINGS
@given(document=from_schema(SCHEMA, custom_scalars=SCALARS))
def test_valid_operations_get_well_formed_answers(client: httpx.Client, document: str) -> None:
    check_answer(client.post("/graphql", json={"query": document}), executable=True)


@settings(FUZZ_SETTINGS, max_examples=100)
@given(document=from_schema(SCHEMA, custom_scalars=SCALARS, mode=Mode.NEGATIVE))
def test_invalid_operations_are_refused_cleanly(client: httpx.Client, document: str) -> None:
    response = client.post(
        "/graphql", json={"query": document}, headers={"accept": "application/graphql-response+json"}
    )
    check_answer(response, executable=False)
    if response.status_code == 400:
        assert "data" not in response.json()
