"""Ended logins are refused on the very next request, on every instance, without a database read
per request (auth/revocations.py); and still when Redis is away."""

from __future__ import annotations

import asyncio

import jwt
import pytest
from bson import ObjectId
from redis.asyncio import Redis

from taskql.auth.revocations import Revocations
from taskql.settings import Settings
from tests.conftest import CommandLog, GraphQLClient, Instances, RedisServer, sign_up

pytestmark = pytest.mark.redis  # also run against Redis itself (Makefile)

VIEWER = "{ viewer { id } }"
LOGOUT = "mutation($t: String!) { logout(input: {refreshToken: $t}) { success userErrors { code } } }"
LOGOUT_ALL = "mutation { logoutAll { success } }"


def family_of(access_token: str) -> ObjectId:
    return ObjectId(jwt.decode(access_token, options={"verify_signature": False})["sid"])


async def viewer_code(client: GraphQLClient, token: str) -> str | None:
    body = await client.post(VIEWER, token=token)
    return body["errors"][0]["extensions"]["code"] if "errors" in body else None


async def test_a_logout_through_one_instance_refuses_the_token_on_another_at_once(
    instances: Instances, settings: Settings, command_log: CommandLog
) -> None:
    a, b = await instances.start(settings, 2)
    user = await sign_up(a, "Ada")
    await b.post(VIEWER, token=user.token)  # B has the user cached now
    command_log.names.clear()
    signed_in = await viewer_code(b, user.token)
    reads_while_signed_in = list(command_log.names)

    assert (await a.post(LOGOUT, {"t": user.refresh_token}))["data"]["logout"]["success"] is True
    refused = await viewer_code(b, user.token)

    assert signed_in is None and reads_while_signed_in == []  # the session check read Redis only
    assert refused == "UNAUTHENTICATED"


async def test_logout_all_through_one_instance_ends_every_login_on_another(
    instances: Instances, settings: Settings
) -> None:
    a, b = await instances.start(settings, 2)
    first = await sign_up(a, "Ada")
    second_login = await a.post(
        "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { accessToken } }",
        {"e": first.user["email"], "p": "correct horse battery"},
    )
    second = second_login["data"]["login"]["accessToken"]

    await a.post(LOGOUT_ALL, token=first.token)

    assert [await viewer_code(b, token) for token in (first.token, second)] == ["UNAUTHENTICATED"] * 2


async def test_a_logout_while_redis_is_down_is_still_refused_and_recorded_once_it_is_back(
    instances: Instances, settings: Settings, private_redis: RedisServer
) -> None:
    on_private = settings.model_copy(update={"redis_url": private_redis.url, "cache_retry_seconds": 0.2})
    writer, other = await instances.start(on_private, 2)
    user = await sign_up(writer, "Ada")

    private_redis.stop()
    logout = await writer.post(LOGOUT, {"t": user.refresh_token})
    during = [await viewer_code(writer, user.token), await viewer_code(other, user.token)]
    private_redis.start()
    redis = Redis.from_url(private_redis.url)
    for _ in range(50):  # the writer retries every 0.2 s
        if await redis.exists(Revocations.key(family_of(user.token))):
            break
        await asyncio.sleep(0.1)
    recorded = await redis.exists(Revocations.key(family_of(user.token)))
    await redis.aclose()
    after = await viewer_code(other, user.token)

    assert logout["data"]["logout"]["success"] is True
    assert during == ["UNAUTHENTICATED", "UNAUTHENTICATED"]  # from MongoDB, the record
    assert recorded and after == "UNAUTHENTICATED"


async def test_a_signed_in_query_checks_its_login_and_charges_its_budget_in_one_redis_round_trip(
    instances: Instances, settings: Settings, command_log: CommandLog
) -> None:
    [app] = await instances.start(settings, 1)
    user = await sign_up(app, "Ada")
    await app.post(VIEWER, token=user.token)  # the user is cached now
    command_log.names.clear()
    redis = Redis.from_url(settings.redis_url or "")
    reads = []
    try:
        for _ in range(3):  # the fewest of three: a background stream read may land in one of them
            before = int((await redis.info("stats"))["total_reads_processed"])
            body = await app.post(VIEWER, token=user.token)
            reads.append(int((await redis.info("stats"))["total_reads_processed"]) - before)
    finally:
        await redis.aclose()

    assert body == {"data": {"viewer": {"id": user.user["id"]}}}
    # The revocation marker, the cached user and the rate-limit script went as one pipeline; the
    # other read is the second INFO. No MongoDB read either.
    assert min(reads) == 2
    assert command_log.reads() == 0
