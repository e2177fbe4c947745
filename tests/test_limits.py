"""What one request may ask for: each limit refuses just over it and lets just under it through."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from graphql import parse

from taskql.schema.extensions.limits import query_cost
from taskql.schema.extensions.operation_cost import CostCache
from taskql.schema.root import build_schema
from taskql.server import build_app
from taskql.settings import Settings
from tests.conftest import GraphQLClient, create_project, create_task, sign_up

SCHEMA = build_schema()._schema

NESTED = """
query($projects: Int!, $tasks: Int) {
  projects(first: $projects) { edges { node {
    tasks(first: $tasks) { edges { node { activity(last: 5) { totalCount } } } }
  } } }
}
"""


@pytest.mark.parametrize(
    ("document", "variables", "cost"),
    [
        # 10 projects; 50 tasks for each; 5 activity events for each task.
        (NESTED, {"projects": 10, "tasks": 50}, 10 + 10 * 50 + 10 * 50 * 5),
        # No `first`: a connection returns the default page (20).
        (NESTED, {"projects": 2}, 2 + 2 * 20 + 2 * 20 * 5),
        # Through fragments, with `first` written in the document.
        (
            """
            query { ...P }
            fragment P on Query { projects(first: 3) { edges { node { ...T } } } }
            fragment T on Project { tasks(first: 4) { totalCount } }
            """,
            {},
            3 + 3 * 4,
        ),
        # Sibling connections add up; a connection inside a plain list counts per parent page only.
        ("{ myTasks(first: 7) { totalCount } projects(first: 2) { totalCount } }", {}, 7 + 2),
        ("{ viewer { name } }", {}, 0),
        # `nodes(ids:)` returns one object per ID, and each of its nested connections once per object.
        (
            "query($ids: [ID!]!) { nodes(ids: $ids) { ... on Project { tasks(first: 50) { totalCount } } } }",
            {"ids": ["x"] * 100},
            100 + 100 * 50,
        ),
        ('{ nodes(ids: ["a", "b", "c"]) { id } }', {}, 3),
        # The same fragment spread twice counts twice (worked out once).
        (
            "query { ...P ...P } fragment P on Query { projects(first: 3) { totalCount } }",
            {},
            3 + 3,
        ),
    ],
)
def test_query_cost_multiplies_nested_connections(document: str, variables: dict[str, Any], cost: int) -> None:
    assert query_cost(SCHEMA, parse(document), None, variables) == cost


async def test_nodes_of_nested_connections_over_the_cost_are_refused(owner_client: GraphQLClient) -> None:
    # The attack: 100 IDs × nested connections was counted as 5,100 nodes and returned 510,000.
    project_id = await create_project(owner_client)
    nested = "tasks(first: 100) { edges { node { activity(first: 50) { totalCount } } } }"
    query = f"query($ids: [ID!]!) {{ nodes(ids: $ids) {{ ... on Project {{ {nested} }} }} }}"

    [error] = await _errors(owner_client, query, {"ids": [project_id] * 100})

    assert error["extensions"] == {
        "code": "QUERY_TOO_COMPLEX",
        "cost": 100 + 100 * 100 + 100 * 100 * 50,
        "maxCost": 50_000,
    }


async def test_a_response_over_the_byte_limit_is_an_error_instead(settings: Settings) -> None:
    app = build_app(settings.model_copy(update={"max_response_bytes": 10_000}))
    transport = httpx.ASGITransport(app=app)
    async with LifespanManager(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        owner = await sign_up(GraphQLClient(http), "Verbose")
        project_id = await create_project(owner)
        for _ in range(2):
            await create_task(owner, project_id, description="x" * 6_000)
        board = "query($p: ID!) { project(id: $p) { tasks { edges { node { description } } } } }"
        small = await owner.post("query($p: ID!) { project(id: $p) { tasks { totalCount } } }", {"p": project_id})
        large = await owner.post(board, {"p": project_id})

    assert small == {"data": {"project": {"tasks": {"totalCount": 2}}}}
    [error] = large["errors"]
    assert large["data"] is None and error["extensions"] == {"code": "QUERY_TOO_COMPLEX"}
    assert "the limit is 10000" in error["message"]


def test_query_cost_counts_the_named_operation_only() -> None:
    document = parse("query A { projects(first: 5) { totalCount } } query B { myTasks(first: 9) { totalCount } }")
    assert query_cost(SCHEMA, document, "B", {}) == 9


async def _errors(client: GraphQLClient, query: str, variables: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return (await client.post(query, variables)).get("errors", [])


async def test_depth_over_the_limit_is_refused(owner_client: GraphQLClient) -> None:
    # `id` below 10 fields, then below 11.
    ten = "{ projects { edges { node { tasks { edges { node { project { tasks { edges { node { id } } } } } } } } } } }"
    eleven = ten.replace("node { id }", "node { project { id } }")
    assert not await _errors(owner_client, ten)
    [error] = await _errors(owner_client, eleven)
    assert "exceeds maximum operation depth of 10" in error["message"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


async def test_aliases_over_the_limit_are_refused(owner_client: GraphQLClient) -> None:
    def aliases(count: int) -> str:
        return "{ " + " ".join(f"a{n}: __typename" for n in range(count)) + " }"

    assert not await _errors(owner_client, aliases(15))
    [error] = await _errors(owner_client, aliases(16))
    assert "aliases" in error["message"]


async def test_tokens_over_the_limit_are_refused(owner_client: GraphQLClient) -> None:
    def tokens(count: int) -> str:  # `{ nodes ( ids : [ ] ) { id } }` is 12 tokens, then one per ID
        return "{ nodes(ids: [" + " ".join('"x"' for _ in range(count - 12)) + "]) { id } }"

    under = await _errors(owner_client, tokens(2_000))
    [error] = await _errors(owner_client, tokens(2_001))
    assert "more than 2000 tokens" in error["message"]
    assert not any("tokens" in e["message"] for e in under)  # parsed; refused later for too many IDs


async def test_directives_over_the_limit_are_refused(owner_client: GraphQLClient) -> None:
    def directives(count: int) -> str:
        return "{ " + " ".join("... @include(if: true) { __typename }" for _ in range(count)) + " }"

    assert not await _errors(owner_client, directives(20))
    [error] = await _errors(owner_client, directives(21))
    assert error["message"] == "At most 20 directives are allowed in a document."


async def test_a_query_that_could_return_too_many_nodes_is_refused_before_it_runs(
    owner_client: GraphQLClient,
) -> None:
    # 100 + 100 × 100 + 100 × 100 × 4 = 50,100 nodes, just over 50,000; with `last: 3`, 40,100.
    query = """
    query($n: Int!) { projects(first: 100) { edges { node {
      tasks(first: 100) { edges { node { activity(last: $n) { totalCount } } } }
    } } } }
    """
    assert not await _errors(owner_client, query, {"n": 3})
    [error] = await _errors(owner_client, query, {"n": 5})
    assert error["extensions"] == {"code": "QUERY_TOO_COMPLEX", "cost": 60_100, "maxCost": 50_000}


async def test_a_body_over_the_limit_is_refused_with_413(anonymous: GraphQLClient) -> None:
    padding = " " * 100_000
    response = await anonymous.http.post("/graphql", json={"query": "{ __typename }" + padding})
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    under = await anonymous.http.post("/graphql", json={"query": "{ __typename }" + " " * 90_000})
    assert under.status_code == 200


async def test_a_chunked_body_over_the_limit_is_refused_with_413(anonymous: GraphQLClient) -> None:
    async def chunks() -> Any:  # no Content-Length: the server must count
        yield b'{"query": "{ __typename }'
        for _ in range(11):
            yield b" " * 10_000
        yield b'"}'

    response = await anonymous.http.post("/graphql", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


async def test_production_hides_introspection_and_suggestions(settings: Settings) -> None:
    app = build_app(settings.model_copy(update={"taskql_env": "production"}))
    transport = httpx.ASGITransport(app=app)
    async with LifespanManager(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        introspection = (await http.post("/graphql", json={"query": "{ __schema { types { name } } }"})).json()
        typo = (await http.post("/graphql", json={"query": "{ viewr { id } }"})).json()

    assert "introspection has been disabled" in introspection["errors"][0]["message"]
    assert "Did you mean" not in typo["errors"][0]["message"]


async def test_production_validation_messages_name_nothing_of_the_schema(settings: Settings) -> None:
    # clairvoyance rebuilt 25 of 59 type names from messages such as "Field 'viewer' of type 'User'
    # must have a selection of subfields" or "… of type 'LoginInput!' is required".
    probes = [
        "{ viewer }",
        "mutation { login { accessToken } }",
        "query($s: Boolean) { myTasks(filter: {status: $s}) { totalCount } }",
        "{ viewer { nope } }",
        '{ project(nope: "1") { id } }',
    ]
    deep = "{ projects { edges { node { tasks { edges { node { project { tasks { edges { node { project { id }"
    deep += " } } } } } } } } } } }"
    for env, revealing in (("production", False), ("development", True)):
        app = build_app(settings.model_copy(update={"taskql_env": env}))
        transport = httpx.ASGITransport(app=app)
        async with LifespanManager(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            user = await sign_up(GraphQLClient(http), "Prober")
            messages = [error["message"] for probe in probes for error in await _errors(user, probe)]
            [too_deep] = await _errors(user, deep)

        named = [
            m for m in messages if any(name in m for name in ("User", "LoginInput", "TaskStatus", "Query.", "Project"))
        ]
        assert bool(named) is revealing, (env, messages)
        assert "exceeds maximum operation depth of 10" in too_deep["message"]  # TaskQL's own limits keep their words
    assert set(messages) != {"This document does not match the schema."}  # development: the real messages


async def test_batching_is_off_unless_enabled(anonymous: GraphQLClient) -> None:
    response = await anonymous.http.post("/graphql", json=[{"query": "{ __typename }"}])
    assert response.status_code == 400


async def test_a_batch_has_at_most_its_operations_and_its_cost_is_the_sum(settings: Settings) -> None:
    app = build_app(settings.model_copy(update={"batch_max_operations": 3}))
    # 100 + 100 × 100 + 100 × 100 × 1 = 20,100 nodes: three of them are over 50,000 together.
    tasks = "tasks(first: 100) { edges { node { activity(first: 1) { totalCount } } } }"
    third = f"{{ projects(first: 100) {{ edges {{ node {{ {tasks} }} }} }} }}"
    transport = httpx.ASGITransport(app=app)
    async with LifespanManager(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        batch = await http.post("/graphql", json=[{"query": "{ __typename }"}, {"query": "{ viewer { id } }"}])
        too_many = await http.post("/graphql", json=[{"query": "{ __typename }"}] * 4)
        user = await sign_up(GraphQLClient(http), "Batcher")
        headers = {"authorization": f"Bearer {user.token}"}
        costly = await http.post("/graphql", json=[{"query": third}] * 3, headers=headers)

    assert batch.json() == [{"data": {"__typename": "Query"}}, {"data": {"viewer": None}}]
    assert too_many.status_code == 400
    refused = [answer for answer in costly.json() if "errors" in answer]
    assert len(refused) == 1
    assert refused[0]["errors"][0]["extensions"] == {"code": "QUERY_TOO_COMPLEX", "cost": 60_300, "maxCost": 50_000}


async def test_the_operations_of_a_batch_share_one_session_check(settings: Settings) -> None:
    # Strawberry runs a batch's operations concurrently: the first to run confirms the login, the others wait for it.
    app = build_app(settings.model_copy(update={"batch_max_operations": 3}))
    transport = httpx.ASGITransport(app=app)
    async with LifespanManager(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        user = await sign_up(GraphQLClient(http), "Batcher")
        headers = {"authorization": f"Bearer {user.token}"}
        batch = await http.post("/graphql", json=[{"query": "{ viewer { id } }"}] * 3, headers=headers)
        await GraphQLClient(http, user.token).execute(
            "mutation($t: String!) { logout(input: {refreshToken: $t}) { success } }", {"t": user.refresh_token}
        )
        ended = await http.post("/graphql", json=[{"query": "{ viewer { id } }"}] * 2, headers=headers)

    assert batch.json() == [{"data": {"viewer": {"id": user.user["id"]}}}] * 3
    assert [answer["errors"][0]["extensions"]["code"] for answer in ended.json()] == ["UNAUTHENTICATED"] * 2


async def test_a_field_repeated_side_by_side_is_refused(owner_client: GraphQLClient) -> None:
    def repeated(count: int) -> str:
        return "{ " + " ".join("__typename" for _ in range(count)) + " }"

    assert not await _errors(owner_client, repeated(5))
    [error] = await _errors(owner_client, repeated(6))
    assert error["message"] == "`__typename` is selected more than 5 times in one place."


def fragment_bomb(levels: int) -> str:
    """Under 1 kB: each fragment spreads the one before twice, so the last expands to 2^levels fields."""
    fragments = " ".join(f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, levels + 1))
    return f"query {{ ...F{levels} }} fragment F0 on Query {{ __typename }} {fragments}"


async def test_a_fragment_bomb_is_refused_at_once(anonymous: GraphQLClient) -> None:
    # Strawberry's depth and alias limiters and the cost walked every spread: 7 s at 20 levels.
    for levels in (20, 60):
        started = time.perf_counter()
        [error] = await _errors(anonymous, fragment_bomb(levels))
        elapsed = time.perf_counter() - started

        assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
        assert f"selects {2**levels} fields once its fragments are expanded; the limit is 5000" in error["message"]
        assert elapsed < 1  # linear in the document, not in what it expands to (a 2 s bound would still catch 2^20)
    assert not await _errors(anonymous, fragment_bomb(12))  # 4,096 fields: within the limit, and it runs


async def test_a_document_over_a_limit_gets_one_error_for_it(anonymous: GraphQLClient) -> None:
    # graphql-cop's directive overloading: one error per unknown directive made the answer grow with the attack.
    directives = " ".join(f"@d{n}" for n in range(30))
    errors = await _errors(anonymous, f"{{ __typename {directives} }}")
    assert [error["message"] for error in errors] == ["At most 20 directives are allowed in a document."]


async def test_limits_hold_through_fragments(owner_client: GraphQLClient) -> None:
    deep = "{ projects { edges { node { tasks { edges { node { ...Deep } } } } } } }"
    fragment = "fragment Deep on Task { project { tasks { edges { node { project { id } } } } } }"
    [too_deep] = await _errors(owner_client, f"{deep} {fragment}")
    spreads = " ".join(["...Name"] * 6)
    [repeated] = await _errors(owner_client, f"{{ viewer {{ {spreads} }} }} fragment Name on User {{ name }}")
    aliased = "fragment Names on User { " + " ".join(f"n{i}: name" for i in range(4)) + " }"
    viewers = "viewer { ...Names } a: viewer { ...Names } b: viewer { ...Names } c: viewer { ...Names }"
    [aliases] = await _errors(owner_client, f"{{ {viewers} }} {aliased}")

    assert "exceeds maximum operation depth of 10" in too_deep["message"]
    assert repeated["message"] == "`...Name` is selected more than 5 times in one place."
    assert aliases["message"] == "19 aliases found. Allowed: 15"
    for error in (too_deep, repeated, aliases):
        assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


async def test_a_repeated_document_is_parsed_and_validated_once(app: Any, anonymous: GraphQLClient) -> None:
    # Strawberry's ValidationCache hit only if the rules were the same objects on every request (they
    # were not), and keyed by the parsed document, which is hashed by walking it: the guard keys by text.
    documents = app.state.graphql.schema.documents
    await anonymous.execute("{ __typename viewer { id } }")
    prepared = documents.prepared("{ __typename viewer { id } }")
    errors = prepared.errors
    before = documents.prepared.cache_info()

    for _ in range(3):
        await anonymous.execute("{ __typename viewer { id } }")

    after = documents.prepared.cache_info()
    assert (after.hits - before.hits, after.misses - before.misses) == (3, 0)
    assert errors == [] and documents.prepared("{ __typename viewer { id } }").errors is errors  # not validated again


async def test_a_cached_document_keeps_its_validation_errors(anonymous: GraphQLClient) -> None:
    for _ in range(2):  # the second answer comes from the cache, with the same coded error
        [error] = await _errors(anonymous, "{ viewer { nope } }")
        assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        assert "nope" in error["message"]


def test_a_cost_is_computed_once_per_document_and_page_sizes() -> None:
    costs = CostCache(max_entries=2)
    document = parse(NESTED)

    first = costs.cost(SCHEMA, document, None, {"projects": 10, "tasks": 50})
    again = costs.cost(SCHEMA, document, None, {"tasks": 50, "projects": 10})
    other_sizes = costs.cost(SCHEMA, document, None, {"projects": 2, "tasks": 3})
    same_text_other_object = costs.cost(SCHEMA, parse(NESTED), None, {"projects": 10, "tasks": 50})

    assert first == again == same_text_other_object == query_cost(SCHEMA, document, None, {"projects": 10, "tasks": 50})
    assert other_sizes == query_cost(SCHEMA, document, None, {"projects": 2, "tasks": 3}) != first
