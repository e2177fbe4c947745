"""Rate limits: operation budgets per user and per IP shared by all instances, and failed sign-ins."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from bson import ObjectId
from redis.asyncio import Redis

from taskql.rate_limits import Budget, Counters
from taskql.schema.extensions.operation_cost import operation_points
from taskql.schema.relay import encode_id
from taskql.server import build_app
from taskql.settings import Settings
from tests.conftest import PASSWORD, GraphQLClient, RedisServer, sign_up, subscribe
from tests.live import LiveServer

pytestmark = pytest.mark.redis  # also run against Redis itself (Makefile)

VIEWER = "{ viewer { id } }"
LOGIN = "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { accessToken } }"


class Fleet:
    """App instances sharing one Redis, as behind a load balancer; requests come from `peer`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stack = AsyncExitStack()

    async def start(self, peer: str = "127.0.0.1") -> GraphQLClient:
        app = build_app(self.settings)
        await self._stack.enter_async_context(LifespanManager(app))
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        http = await self._stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://t"))
        return GraphQLClient(http)

    async def close(self) -> None:
        await self._stack.aclose()


def limited(settings: Settings, redis: RedisServer, **limits: Any) -> Settings:
    return settings.model_copy(update={"redis_url": redis.url, **limits})


@pytest.fixture
async def fleet_factory() -> AsyncIterator[Any]:
    fleets: list[Fleet] = []

    def make(settings: Settings) -> Fleet:
        fleets.append(Fleet(settings))
        return fleets[-1]

    yield make
    for fleet in fleets:
        await fleet.close()


async def _login(client: GraphQLClient, email: str, password: str) -> dict[str, Any]:
    response = await client.http.post("/graphql", json={"query": LOGIN, "variables": {"e": email, "p": password}})
    assert response.status_code == (429 if "RATE_LIMITED" in response.text else 200)
    return response.json()


async def _as(user: GraphQLClient, query: str) -> httpx.Response:
    return await user.http.post("/graphql", json={"query": query}, headers={"authorization": f"Bearer {user.token}"})


def test_an_operation_costs_one_point_plus_one_per_hundred_nodes() -> None:
    assert [operation_points(cost) for cost in (0, 99, 100, 510, 50_000)] == [1, 1, 2, 6, 501]


async def test_a_budget_refuses_what_would_exceed_it_and_does_not_count_it(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    counters = Counters(redis)
    budget = Budget("test", points=10, window_seconds=60)

    spent = [(await counters.charge([("test:budget", budget)], 4))[0] for _ in range(3)]
    [peek] = await counters.charge([("test:budget", budget)], 0)

    assert [u.allowed for u in spent] == [True, True, False]
    assert [u.remaining for u in spent] == [6, 2, 2]  # the refused charge took nothing
    assert 0 < spent[0].reset_seconds <= 60
    assert peek.allowed and peek.remaining == 2
    with pytest.raises(ValueError):  # a negative charge would be a credit
        await counters.charge([("test:budget", budget)], -4)
    [after] = await counters.charge([("test:budget", budget)], 0)
    assert after.remaining == 2
    await redis.aclose()


async def test_a_charge_to_two_budgets_counts_in_neither_when_one_refuses(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    counters = Counters(redis)
    user, ip = Budget("user", points=10, window_seconds=60), Budget("ip", points=5, window_seconds=60)
    both = [("user:1", user), ("ip:1", ip)]

    first = await counters.charge(both, 4)
    refused = await counters.charge(both, 4)  # the IP has 1 left
    after = await counters.charge(both, 0)

    assert [(u.allowed, u.remaining) for u in first] == [(True, 6), (True, 1)]
    assert [(u.allowed, u.remaining) for u in refused] == [(True, 6), (False, 1)]
    assert [u.remaining for u in after] == [6, 1]  # the user's budget was not charged either
    await redis.aclose()


async def test_the_user_budget_is_shared_by_all_instances(
    settings: Settings, private_redis: RedisServer, fleet_factory: Any
) -> None:
    fleet = fleet_factory(limited(settings, private_redis, rate_limit_user_points=3))
    a, b = await fleet.start(), await fleet.start()
    user = await sign_up(a, "Limited")  # register: anonymous, charged to the IP only
    on_a, on_b = user, b.as_user(user.token or "")

    first = await _as(on_a, VIEWER)
    await on_b.post(VIEWER)
    await on_a.post(VIEWER)
    refused = await on_b.http.post(
        "/graphql", json={"query": VIEWER}, headers={"authorization": f"Bearer {user.token}"}
    )

    assert first.headers["ratelimit-limit"] == "3"
    assert first.headers["ratelimit-remaining"] == "2"
    assert 0 < int(first.headers["ratelimit-reset"]) <= 3600
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    [error] = refused.json()["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["extensions"]["retryAfter"] == int(refused.headers["retry-after"])
    assert refused.headers["ratelimit-remaining"] == "0"


async def test_the_ip_budget_counts_anonymous_requests_and_believes_only_trusted_proxies(
    settings: Settings, private_redis: RedisServer, fleet_factory: Any
) -> None:
    fleet = fleet_factory(limited(settings, private_redis, rate_limit_ip_points=2, trusted_proxies=["10.0.0.0/8"]))
    direct = await fleet.start(peer="192.0.2.1")
    proxy = await fleet.start(peer="10.0.0.5")

    # A client connecting directly cannot pick its own address with the header.
    spoofed = [
        (await direct.http.post("/graphql", json={"query": VIEWER}, headers={"x-forwarded-for": f"198.51.100.{n}"}))
        for n in range(3)
    ]
    # Behind the trusted proxy, each client address has its own budget.
    forwarded = [
        (await proxy.http.post("/graphql", json={"query": VIEWER}, headers={"x-forwarded-for": f"6.6.6.6, {ip}"}))
        for ip in ("203.0.113.1", "203.0.113.1", "203.0.113.2")
    ]

    assert [r.status_code for r in spoofed] == [200, 200, 429]
    assert [r.status_code for r in forwarded] == [200, 200, 200]


async def test_a_request_that_cannot_run_still_reports_the_budget_and_spends_nothing(
    settings: Settings, private_redis: RedisServer, fleet_factory: Any
) -> None:
    fleet = fleet_factory(limited(settings, private_redis, rate_limit_ip_points=5))
    client = await fleet.start()

    invalid = await client.http.post("/graphql", json={"query": "{ nonexistent }"})
    syntax = await client.http.post("/graphql", json={"query": "{ viewer {"})

    assert invalid.headers["ratelimit-limit"] == "5"
    assert invalid.headers["ratelimit-remaining"] == syntax.headers["ratelimit-remaining"] == "5"


async def test_an_expensive_query_spends_more(
    settings: Settings, private_redis: RedisServer, fleet_factory: Any
) -> None:
    fleet = fleet_factory(limited(settings, private_redis, rate_limit_user_points=100))
    user = await sign_up(await fleet.start(), "Spender")
    query = "{ projects(first: 100) { edges { node { tasks(first: 50) { totalCount } } } } }"  # 5,100 nodes

    response = await user.http.post(
        "/graphql", json={"query": query}, headers={"authorization": f"Bearer {user.token}"}
    )

    assert response.headers["ratelimit-remaining"] == str(100 - operation_points(5_100))


async def test_a_negative_page_size_is_refused_before_it_could_credit_the_budget(
    settings: Settings, private_redis: RedisServer, fleet_factory: Any
) -> None:
    # The attack: a negative `first` made the cost negative, which was credited to the budget and
    # subtracted from the cost of the rest of the document, so that an over-limit query ran.
    fleet = fleet_factory(limited(settings, private_redis, rate_limit_user_points=100, max_query_cost=1_000))
    user = await sign_up(await fleet.start(), "Crediter")
    costly = "a: projects(first: 100) { edges { node { tasks(first: 100) { totalCount } } } }"  # 10,100 nodes
    attacks = [
        "{ myTasks(first: -2147483648) { totalCount } }",
        f"{{ {costly} b: myTasks(first: -2147483648) {{ totalCount }} }}",
        "{ projects(last: 0) { totalCount } }",
    ]
    with_variable = "query($n: Int) { myTasks(first: $n) { totalCount } }"

    answers = [await _as(user, query) for query in attacks]
    answers.append(
        await user.http.post(
            "/graphql",
            json={"query": with_variable, "variables": {"n": -5}},
            headers={"authorization": f"Bearer {user.token}"},
        )
    )

    for answer in answers:
        [error] = answer.json()["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert "must be between 1 and 100" in error["message"]
        assert answer.json().get("data") is None  # nothing ran
        assert answer.headers["ratelimit-remaining"] == "100"  # nothing spent, nothing credited


async def test_redis_away_lets_operations_through_uncounted(
    settings: Settings, private_redis: RedisServer, fleet_factory: Any
) -> None:
    fleet = fleet_factory(limited(settings, private_redis, rate_limit_ip_points=1))
    client = await fleet.start()
    private_redis.stop()

    responses = [await client.http.post("/graphql", json={"query": "{ __typename }"}) for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert "ratelimit-remaining" not in responses[0].headers


async def test_failed_logins_lock_an_account_for_their_ip_only_and_success_resets_it(
    settings: Settings, private_redis: RedisServer, fleet_factory: Any
) -> None:
    fleet = fleet_factory(limited(settings, private_redis, login_max_failures=3))
    attacker, owner = await fleet.start(peer="192.0.2.66"), await fleet.start(peer="192.0.2.7")
    user = await sign_up(owner, "Guessed")
    email = user.user["email"]

    wrong = [await _login(attacker, email, "wrong password") for _ in range(3)]
    blocked = await _login(attacker, email.upper(), PASSWORD)  # even the right password, from there
    owners = await _login(owner, email, PASSWORD)  # the owner, from their own network

    assert all(r["data"]["login"]["accessToken"] is None for r in wrong)
    assert blocked["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert blocked["errors"][0]["extensions"]["retryAfter"] > 0
    assert owners["data"]["login"]["accessToken"]


async def test_an_account_has_a_ceiling_of_failures_from_all_ips_together(
    settings: Settings, private_redis: RedisServer, fleet_factory: Any
) -> None:
    fleet = fleet_factory(limited(settings, private_redis, login_max_failures=3, login_max_account_failures=4))
    user = await sign_up(await fleet.start(), "Spread")
    guessers = [await fleet.start(peer=f"192.0.2.{n}") for n in range(10, 15)]

    answers = [await _login(guesser, user.user["email"], "wrong password") for guesser in guessers]

    assert [a["data"]["login"]["accessToken"] for a in answers[:4]] == [None] * 4  # checked, wrong
    assert answers[4]["errors"][0]["extensions"]["code"] == "RATE_LIMITED"  # a fifth address: over the ceiling


async def test_concurrent_logins_check_no_more_passwords_than_the_limit(
    settings: Settings, private_redis: RedisServer, fleet_factory: Any
) -> None:
    # The attack: 40 logins at once to one account had 33 passwords checked (limit 5), the right
    # one among them accepted. Each attempt now reserves its failure before the password is checked.
    fleet = fleet_factory(limited(settings, private_redis))
    client = await fleet.start(peer="192.0.2.1")
    user = await sign_up(client, "Besieged")
    guesses = [f"wrong password {n}" for n in range(39)] + [PASSWORD]

    answers = await asyncio.gather(*(_login(client, user.user["email"], guess) for guess in guesses))

    # A checked password answers a token or INVALID_CREDENTIALS (in the payload); the rest are refused.
    checked = [answer for answer in answers if "errors" not in answer]
    refused = [answer["errors"][0]["extensions"]["code"] for answer in answers if "errors" in answer]
    assert len(checked) == 5  # login_max_failures
    assert refused == ["RATE_LIMITED"] * 35


async def test_a_successful_login_gives_its_attempt_back(
    settings: Settings, private_redis: RedisServer, fleet_factory: Any
) -> None:
    fleet = fleet_factory(limited(settings, private_redis, login_max_failures=2))
    client = await fleet.start()
    user = await sign_up(client, "Regular")

    for _ in range(5):  # more successes than failures allowed: none of them is counted, from here or anywhere
        assert (await _login(client, user.user["email"], PASSWORD))["data"]["login"]["accessToken"]
    await _login(client, user.user["email"], "wrong password")
    assert (await _login(client, user.user["email"], PASSWORD))["data"]["login"]["accessToken"]


async def test_probing_for_taken_emails_through_the_profile_is_limited(
    settings: Settings, private_redis: RedisServer, fleet_factory: Any
) -> None:
    # "Email already taken" answered CONFLICT 30 times out of 30: a way to list the accounts.
    fleet = fleet_factory(limited(settings, private_redis, login_max_failures=3))
    client = await fleet.start()
    prober = await sign_up(client, "Prober")
    taken = [(await sign_up(client, f"Taken{n}")).user["email"] for n in range(4)]
    change = "mutation($e: String) { updateProfile(input: {email: $e}) { userErrors { code } } }"

    headers = {"authorization": f"Bearer {prober.token}"}
    answers = [
        (await client.http.post("/graphql", json={"query": change, "variables": {"e": e}}, headers=headers)).json()
        for e in taken
    ]

    assert [a["data"]["updateProfile"]["userErrors"][0]["code"] for a in answers[:3]] == ["CONFLICT"] * 3
    assert answers[3]["errors"][0]["extensions"]["code"] == "RATE_LIMITED"


async def test_failed_logins_are_limited_per_ip_across_accounts(
    settings: Settings, private_redis: RedisServer, fleet_factory: Any
) -> None:
    fleet = fleet_factory(limited(settings, private_redis, login_max_failures=3))
    guesser = await fleet.start(peer="192.0.2.66")
    victims = [await sign_up(await fleet.start(), f"Victim{n}") for n in range(4)]

    for victim in victims[:3]:
        await _login(guesser, victim.user["email"], "wrong password")
    refused = await _login(guesser, victims[3].user["email"], PASSWORD)

    assert refused["errors"][0]["extensions"]["code"] == "RATE_LIMITED"


async def test_logins_are_refused_while_the_counters_are_unreachable(
    settings: Settings, private_redis: RedisServer, fleet_factory: Any
) -> None:
    fleet = fleet_factory(limited(settings, private_redis))
    client = await fleet.start()
    user = await sign_up(client, "Closed")
    private_redis.stop()

    refused = await _login(client, user.user["email"], PASSWORD)

    assert refused["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert (await user.post(VIEWER))["data"]["viewer"]["id"] == user.user["id"]  # sessions go on


async def test_a_websocket_operation_over_budget_is_rate_limited(settings: Settings) -> None:
    app = build_app(settings.model_copy(update={"rate_limit_user_points": 1}))
    transport = httpx.ASGITransport(app=app)
    document = "subscription($p: ID!) { taskEvents(projectId: $p) { cursor } }"
    project = encode_id("Project", ObjectId())
    async with LifespanManager(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        user = await sign_up(GraphQLClient(http), "Subscriber")  # anonymous: the IP's budget
        first = await anext(await subscribe(app, user, document, p=project))
        second = await anext(await subscribe(app, user, document, p=project))

    assert first.errors[0].extensions["code"] == "NOT_FOUND"  # it ran: no such project
    assert second.errors[0].extensions["code"] == "RATE_LIMITED"
    assert second.errors[0].extensions["retryAfter"] > 0


async def test_a_real_server_believes_x_forwarded_for_from_trusted_proxies_only(
    mongodb_uri: str, redis_url: str, tmp_path: Path
) -> None:
    # The server runs on loopback, where uvicorn would by default take X-Forwarded-For as the
    # client's address: only TRUSTED_PROXIES (empty here) decides that.
    server = LiveServer(
        mongodb_uri=mongodb_uri,
        redis_url=redis_url,
        database=f"test_{uuid.uuid4().hex[:12]}",
        data_dir=tmp_path,
        rate_limit_ip_points=2,
    )
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            statuses = [
                (
                    await http.post(
                        "/graphql", json={"query": "{ viewer { id } }"}, headers={"x-forwarded-for": f"198.51.100.{n}"}
                    )
                ).status_code
                for n in range(3)
            ]
    finally:
        server.stop()

    assert statuses == [200, 200, 429]  # one address, whatever the header claims
