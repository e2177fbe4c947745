"""Persisted operations: Apollo's automatic persisted queries, and an allowlist."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from taskql.persisted_queries import PersistedQueries, document_hash
from taskql.server import build_app
from taskql.settings import Settings
from tests.conftest import GraphQLClient

QUERY = "{ __typename }"


def persisted(document: str, **overrides: Any) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": document_hash(document), **overrides}}


async def send(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    return (await http.post("/graphql", json=body)).json()


async def test_an_unknown_hash_is_registered_by_sending_the_document_once(anonymous: GraphQLClient) -> None:
    http = anonymous.http
    unknown = await send(http, {"extensions": persisted(QUERY)})
    registered = await send(http, {"query": QUERY, "extensions": persisted(QUERY)})
    by_hash = await send(http, {"extensions": persisted(QUERY)})
    by_get = await http.get(
        "/graphql", params={"extensions": json.dumps(persisted(QUERY))}, headers={"x-taskql-csrf": "1"}
    )

    assert unknown["errors"][0]["message"] == "PersistedQueryNotFound"
    assert unknown["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    assert registered == by_hash == by_get.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(
    "extensions",
    [
        persisted("{ viewer { id } }"),  # the hash of another document
        persisted(QUERY, version=2),
        {"persistedQuery": {"version": 1}},
        {"persistedQuery": "abc"},
    ],
)
async def test_a_wrong_persisted_query_extension_is_bad_user_input(
    anonymous: GraphQLClient, extensions: dict[str, Any]
) -> None:
    answer = await send(anonymous.http, {"query": QUERY, "extensions": extensions})
    assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "data" not in answer or answer["data"] is None


async def test_with_an_allowlist_only_its_operations_run(settings: Settings, tmp_path: Path) -> None:
    allowed = "query Allowed { __typename }"
    allowlist = tmp_path / "operations.json"
    allowlist.write_text(json.dumps({document_hash(allowed): allowed}))
    app = build_app(settings.model_copy(update={"persisted_operations_file": allowlist}))
    transport = httpx.ASGITransport(app=app)
    async with LifespanManager(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        by_hash = await send(http, {"extensions": persisted(allowed)})
        in_full = await send(http, {"query": allowed})
        other = await send(http, {"query": QUERY})
        registering = await send(http, {"query": QUERY, "extensions": persisted(QUERY)})

    assert by_hash == in_full == {"data": {"__typename": "Query"}}
    assert other["errors"][0]["extensions"]["code"] == "OPERATION_NOT_ALLOWED"
    assert registering["errors"][0]["extensions"]["code"] == "OPERATION_NOT_ALLOWED"


def test_an_allowlist_whose_keys_are_not_the_hashes_is_refused_at_startup(tmp_path: Path) -> None:
    allowlist = tmp_path / "operations.json"
    allowlist.write_text(json.dumps({"0" * 64: QUERY}))
    with pytest.raises(ValueError, match="not the SHA-256"):
        PersistedQueries.create(None, ttl_seconds=60, allowlist_file=allowlist)
