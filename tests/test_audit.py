"""What the usual GraphQL audit tools try (graphql-cop's checks, one test each), against a
production-mode server: each attack is refused or tells the attacker nothing.

PyPI holds only a placeholder of graphql-cop; run from its source (github.com/dolevf/graphql-cop)
against `taskql serve` in production it reports nothing. Its requests, and the way it judges each
answer, are reproduced here so that they run with every change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager

from taskql.server import build_app
from taskql.settings import Settings

CSRF = {"x-taskql-csrf": "1"}


@pytest.fixture
async def production(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(settings.model_copy(update={"taskql_env": "production"}))
    transport = httpx.ASGITransport(app=app)
    async with LifespanManager(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        yield http


def codes(response: httpx.Response) -> list[str]:
    return [error.get("extensions", {}).get("code") for error in response.json().get("errors", [])]


async def test_introspection_is_off(production: httpx.AsyncClient) -> None:
    response = await production.post("/graphql", json={"query": "{ __schema { queryType { name } } }"})
    assert "data" not in response.json() or response.json()["data"] is None
    assert "introspection has been disabled" in response.text


async def test_circular_introspection_is_off(production: httpx.AsyncClient) -> None:
    query = "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }"
    response = await production.post("/graphql", json={"query": query})
    assert response.json().get("data") is None


async def test_graphiql_is_not_served(production: httpx.AsyncClient) -> None:
    response = await production.get("/graphql", headers={"accept": "text/html"})
    assert "graphiql" not in response.text.lower()


async def test_field_suggestions_are_off(production: httpx.AsyncClient) -> None:
    response = await production.post("/graphql", json={"query": "{ viewe { id } }"})
    assert "Did you mean" not in response.text


async def test_alias_overloading_is_refused(production: httpx.AsyncClient) -> None:
    query = "{ " + " ".join(f"a{n}: __typename" for n in range(101)) + " }"
    response = await production.post("/graphql", json={"query": query})
    assert response.json().get("data") is None


async def test_field_duplication_is_refused(production: httpx.AsyncClient) -> None:
    response = await production.post("/graphql", json={"query": "{ " + "__typename " * 500 + "}"})
    assert response.json().get("data") is None


async def test_directive_overloading_is_refused_with_one_error(production: httpx.AsyncClient) -> None:
    # graphql-cop reports HIGH when 10 duplicated unknown directives get 10 errors: each error is
    # work and bytes an attacker multiplies. Production answers a document's mistakes with one.
    query = "query cop { __typename @aa@aa@aa@aa@aa@aa@aa@aa@aa@aa }"
    response = await production.post("/graphql", json={"query": query, "operationName": "cop"})
    [error] = response.json()["errors"]
    assert response.json().get("data") is None
    assert error["message"] == "This document does not match the schema."
    assert len(error["locations"]) == 10  # where each mistake is, still


async def test_batching_is_refused(production: httpx.AsyncClient) -> None:
    response = await production.post("/graphql", json=[{"query": "{ __typename }"}] * 10)
    assert response.status_code == 400


async def test_mutations_over_get_are_refused(production: httpx.AsyncClient) -> None:
    mutation = 'mutation { login(input: {email: "a@b.c", password: "x"}) { accessToken } }'
    response = await production.get("/graphql", params={"query": mutation}, headers=CSRF)
    assert response.status_code == 405


async def test_get_queries_need_a_preflight_forcing_header(production: httpx.AsyncClient) -> None:
    response = await production.get("/graphql", params={"query": "{ __typename }"})
    assert response.status_code == 400


async def test_url_encoded_posts_never_run(production: httpx.AsyncClient) -> None:
    response = await production.post("/graphql", data={"query": "{ __typename }"})
    assert response.status_code == 415


async def test_no_tracing_is_exposed(production: httpx.AsyncClient) -> None:
    response = await production.post("/graphql", json={"query": "{ __typename }"})
    assert response.json() == {"data": {"__typename": "Query"}}


async def test_malformed_documents_reveal_no_internals(production: httpx.AsyncClient) -> None:
    response = await production.post("/graphql", json={"query": "qwerty cop { abc }"})
    assert codes(response) == ["GRAPHQL_PARSE_FAILED"]
    assert "Traceback" not in response.text and ".py" not in response.text


async def test_circular_fragments_are_refused(production: httpx.AsyncClient) -> None:
    query = "query { ...A } fragment A on Query { ...B } fragment B on Query { ...A }"
    response = await production.post("/graphql", json={"query": query})
    assert codes(response) == ["GRAPHQL_VALIDATION_FAILED"]
