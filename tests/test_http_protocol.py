"""GraphQL over HTTP: one test per MUST/SHOULD rule TaskQL follows, and the CSRF rules."""

from __future__ import annotations

import httpx
import pytest
from asgi_lifespan import LifespanManager

from taskql.http.protocol import GRAPHQL_RESPONSE_JSON, JSON, negotiate
from taskql.server import build_app
from taskql.settings import Settings
from tests.conftest import GraphQLClient, create_project

CSRF = {"x-taskql-csrf": "1"}
GRAPHQL_RESPONSE = {"accept": GRAPHQL_RESPONSE_JSON}


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, JSON),  # no Accept: as if application/json
        ("*/*", JSON),
        ("application/*", JSON),
        (GRAPHQL_RESPONSE_JSON, GRAPHQL_RESPONSE_JSON),
        (f"{JSON}, {GRAPHQL_RESPONSE_JSON}", JSON),  # equal quality: the first listed
        (f"{JSON};q=0.5, {GRAPHQL_RESPONSE_JSON}", GRAPHQL_RESPONSE_JSON),
        (f"{GRAPHQL_RESPONSE_JSON};q=0, {JSON}", JSON),
        (f"*/*;q=0.1, {GRAPHQL_RESPONSE_JSON}", GRAPHQL_RESPONSE_JSON),
        ("text/html", None),
        (f"{JSON};q=0", None),
    ],
)
def test_the_response_media_type_follows_the_accept_header(accept: str | None, chosen: str | None) -> None:
    assert negotiate(accept) == chosen


async def post(http: httpx.AsyncClient, body: dict, **headers: str) -> httpx.Response:
    return await http.post("/graphql", json=body, headers=headers)


async def test_a_get_query_runs_with_the_csrf_header(anonymous: GraphQLClient) -> None:
    response = await anonymous.http.get("/graphql", params={"query": "{ __typename }"}, headers=CSRF)
    assert response.status_code == 200
    assert response.json() == {"data": {"__typename": "Query"}}


def code_of(refusal: httpx.Response) -> str:
    """The code of a refusal answered before GraphQL ran: JSON shaped as GraphQL errors, one error."""
    assert refusal.headers["content-type"].startswith("application/json")
    [error] = refusal.json()["errors"]
    return error["extensions"]["code"]


@pytest.mark.parametrize("header", ["x-taskql-csrf", "apollo-require-preflight"])
async def test_a_get_query_without_a_preflight_forcing_header_is_refused(anonymous: GraphQLClient, header: str) -> None:
    refused = await anonymous.http.get("/graphql", params={"query": "{ __typename }"})
    allowed = await anonymous.http.get("/graphql", params={"query": "{ __typename }"}, headers={header: "yes"})
    assert refused.status_code == 400
    assert "X-TaskQL-CSRF" in refused.json()["errors"][0]["message"]
    assert code_of(refused) == "CSRF_HEADER_REQUIRED"
    assert allowed.status_code == 200


async def test_a_mutation_over_get_is_405_with_allow_post(anonymous: GraphQLClient) -> None:
    query = 'mutation { login(input: {email: "a@b.c", password: "x"}) { accessToken } }'
    response = await anonymous.http.get("/graphql", params={"query": query}, headers=CSRF)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert code_of(response) == "METHOD_NOT_ALLOWED"


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
async def test_other_methods_are_405_with_allow(anonymous: GraphQLClient, method: str) -> None:
    response = await anonymous.http.request(method, "/graphql", json={"query": "{ __typename }"})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert code_of(response) == "METHOD_NOT_ALLOWED"


@pytest.mark.parametrize(
    "content",
    [
        {"data": {"query": "{ __typename }"}},  # application/x-www-form-urlencoded
        {"files": {"query": (None, "{ __typename }")}},  # multipart/form-data
        {"content": '{"query": "{ __typename }"}', "headers": {"content-type": "text/plain"}},
        {"content": "{ __typename }", "headers": {"content-type": "application/graphql"}},
    ],
)
async def test_a_post_that_is_not_json_is_415(anonymous: GraphQLClient, content: dict) -> None:
    response = await anonymous.http.post("/graphql", **content)
    assert response.status_code == 415
    assert code_of(response) == "UNSUPPORTED_MEDIA_TYPE"


async def test_a_post_with_a_charset_runs(anonymous: GraphQLClient) -> None:
    response = await anonymous.http.post(
        "/graphql", content='{"query": "{ __typename }"}', headers={"content-type": "application/json; charset=utf-8"}
    )
    assert response.json() == {"data": {"__typename": "Query"}}


async def test_a_client_accepting_neither_json_type_gets_406(anonymous: GraphQLClient) -> None:
    response = await post(anonymous.http, {"query": "{ __typename }"}, accept="text/xml")
    assert response.status_code == 406
    assert code_of(response) == "NOT_ACCEPTABLE"


async def test_graphql_response_json_is_used_when_asked_for(anonymous: GraphQLClient) -> None:
    response = await post(anonymous.http, {"query": "{ __typename }"}, **GRAPHQL_RESPONSE)
    assert response.status_code == 200
    assert response.headers["content-type"] == GRAPHQL_RESPONSE_JSON
    assert response.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(
    "body",
    [
        {"query": "{ viewer { "},  # parse error
        {"query": "{ nonexistent }"},  # validation error
        {"query": "query($n: Int!) { projects(first: $n) { totalCount } }", "variables": {"n": "ten"}},  # coercion
        {"query": "query($n: Int!) { projects(first: $n) { totalCount } }"},  # missing variable
    ],
)
async def test_a_request_that_cannot_run_is_400_without_data_for_graphql_response_json(
    anonymous: GraphQLClient, body: dict
) -> None:
    response = await post(anonymous.http, body, **GRAPHQL_RESPONSE)
    legacy = await post(anonymous.http, body, accept=JSON)

    assert response.status_code == 400
    assert response.headers["content-type"] == GRAPHQL_RESPONSE_JSON
    assert "data" not in response.json()
    assert response.json()["errors"]
    # application/json keeps the legacy answer: 200, with the errors.
    assert legacy.status_code == 200
    assert legacy.headers["content-type"] == JSON
    assert legacy.json()["errors"]


async def test_a_field_error_is_200_with_data_for_graphql_response_json(owner_client: GraphQLClient) -> None:
    # The request ran: a field failed (not signed in for `myTasks`), its sibling still answered.
    response = await post(owner_client.http, {"query": "{ __typename myTasks { totalCount } }"}, **GRAPHQL_RESPONSE)
    body = response.json()
    assert response.status_code == 200
    assert body["data"] is None or body["data"]["__typename"] == "Query"
    assert "data" in body
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_body_that_is_not_json_is_400(anonymous: GraphQLClient) -> None:
    response = await anonymous.http.post("/graphql", content="{not json", headers={"content-type": JSON})
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


def assert_coded(response: httpx.Response, *codes: str, what: str) -> None:
    """A GraphQL JSON error with one of `codes`, and what every answer carries."""
    assert response.headers["content-type"].startswith(JSON), what
    assert response.json()["errors"][0]["extensions"]["code"] in codes, what
    assert response.headers["x-request-id"] and response.headers["x-content-type-options"] == "nosniff", what


async def test_hostile_inputs_get_coded_errors_not_a_crash(owner_client: GraphQLClient) -> None:
    # Each was a plain-text 500 without headers, or a masked INTERNAL_SERVER_ERROR.
    headers = {"authorization": f"Bearer {owner_client.token}", "content-type": JSON}
    project_id = await create_project(owner_client)
    deep = '{"a":' * 1_000 + "1" + "}" * 1_000
    create = "mutation($i: CreateTaskInput!) { createTask(input: $i) { userErrors { code field } } }"
    bodies = {
        "variables nested 1,000 levels": '{"query": "query($f: TaskFilter) { myTasks(filter: $f) { totalCount } }",'
        f' "variables": {{"f": {deep}}}}}',
        "an integer over 64 bits": '{"query": "query($n: Int) { myTasks(first: $n) { totalCount } }",'
        ' "variables": {"n": 123456789012345678901234567890}}',
        "a lone surrogate": '{"query": "mutation($n: String) { updateProfile(input: {name: $n}) { user { name } } }",'
        ' "variables": {"n": "\\ud800"}}',
        "a date past year 1 once in UTC": '{"query": "{ myTasks(filter: {dueBefore: \\"0001-01-01T00:00:00+14:00\\"})'
        ' { totalCount } }"}',
    }
    for name, body in bodies.items():
        response = await owner_client.http.post("/graphql", content=body, headers=headers)
        assert_coded(response, "BAD_REQUEST", "GRAPHQL_VALIDATION_FAILED", "VALIDATION", what=name)

    past_9999 = {"projectId": project_id, "title": "t", "dueAt": "9999-12-31T23:00:00-14:00"}
    created = await owner_client.execute(create, {"i": past_9999})
    assert created["createTask"]["userErrors"] == [{"code": "VALIDATION", "field": ["input", "dueAt"]}]


async def test_a_media_type_in_capitals_is_json_too(anonymous: GraphQLClient) -> None:
    response = await anonymous.http.post(
        "/graphql", content='{"query": "{ __typename }"}', headers={"content-type": "APPLICATION/JSON; charset=UTF-8"}
    )
    assert response.json() == {"data": {"__typename": "Query"}}


async def test_security_headers_are_on_every_response(anonymous: GraphQLClient) -> None:
    response = await post(anonymous.http, {"query": "{ __typename }"})
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert "strict-transport-security" not in response.headers  # development: HSTS would pin localhost


async def test_production_sends_hsts_and_an_api_only_policy(settings: Settings) -> None:
    app = build_app(settings.model_copy(update={"taskql_env": "production"}))
    transport = httpx.ASGITransport(app=app)
    async with LifespanManager(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await post(http, {"query": "{ __typename }"})
    assert response.headers["strict-transport-security"].startswith("max-age=")
    assert response.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


async def test_cors_answers_listed_origins_only(settings: Settings) -> None:
    app = build_app(settings.model_copy(update={"cors_allow_origins": ["https://app.example.com"]}))
    transport = httpx.ASGITransport(app=app)
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type, traceparent, tracestate, baggage",
    }
    async with LifespanManager(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        listed = await http.options("/graphql", headers={"origin": "https://app.example.com", **preflight})
        other = await http.options("/graphql", headers={"origin": "https://evil.example", **preflight})
        simple = await post(http, {"query": "{ __typename }"}, origin="https://app.example.com")

    assert listed.status_code == 200
    assert listed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "access-control-allow-credentials" not in listed.headers
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers
    assert simple.headers["access-control-allow-origin"] == "https://app.example.com"
    # A browser app may read its rate-limit budget, when to retry and the request id; not otherwise.
    exposed = {name.strip() for name in simple.headers["access-control-expose-headers"].split(",")}
    assert exposed >= {"x-request-id", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "retry-after"}


def test_production_refuses_a_wildcard_origin() -> None:
    with pytest.raises(ValueError, match="CORS_ALLOW_ORIGINS"):
        Settings(_env_file=None, taskql_env="production", jwt_secret="s" * 40, cors_allow_origins=["*"])
