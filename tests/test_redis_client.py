"""Commands started together reach Redis as one pipeline; each caller still gets its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from taskql.embedded.child import free_port
from taskql.redis_client import PipeliningRedis

pytestmark = pytest.mark.redis  # also run against Redis itself (Makefile)


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[tuple[PipeliningRedis, Redis]]:
    pipelining, plain = PipeliningRedis.from_url(redis_url), Redis.from_url(redis_url)
    yield pipelining, plain
    await pipelining.aclose()
    await plain.aclose()


async def reads(plain: Redis) -> int:
    """Requests the server has read off its sockets (a pipeline written at once is one), this INFO included."""
    return int((await plain.info("stats"))["total_reads_processed"])


async def test_commands_started_together_are_one_round_trip(clients: tuple[PipeliningRedis, Redis]) -> None:
    pipelining, plain = clients
    await pipelining.set("a", "1")  # connected, so the connection's handshake is not counted below
    before = await reads(plain)

    replies = await asyncio.gather(pipelining.get("a"), pipelining.incr("n"), pipelining.exists("a", "b"))

    assert replies == [b"1", 1, 1]
    assert await reads(plain) - before == 2  # the pipeline and the second INFO


async def test_commands_awaited_one_after_the_other_are_each_a_round_trip(
    clients: tuple[PipeliningRedis, Redis],
) -> None:
    pipelining, plain = clients
    await pipelining.set("a", "1")
    before = await reads(plain)

    assert await pipelining.get("a") == b"1"
    assert await pipelining.incr("n") == 1

    assert await reads(plain) - before == 3


async def test_an_error_reply_goes_to_its_own_caller_only(clients: tuple[PipeliningRedis, Redis]) -> None:
    pipelining, _ = clients
    await pipelining.set("text", "x")

    value, wrong_type, counted = await asyncio.gather(
        pipelining.get("text"), pipelining.hget("text", "field"), pipelining.incr("n"), return_exceptions=True
    )

    assert value == b"x" and counted == 1
    assert isinstance(wrong_type, ResponseError) and "WRONGTYPE" in str(wrong_type)


async def test_a_script_the_server_forgot_is_loaded_again_inside_a_batch(
    clients: tuple[PipeliningRedis, Redis],
) -> None:
    pipelining, plain = clients
    script = pipelining.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert await script(keys=["n"], args=[2]) == 2
    await plain.script_flush()

    replies = await asyncio.gather(script(keys=["n"], args=[3]), pipelining.get("n"))

    assert replies[0] == 5  # NOSCRIPT came back to the script alone, which loaded itself and ran
    assert replies[1] in (b"2", b"5")


async def test_a_cancelled_caller_leaves_the_others_their_replies(clients: tuple[PipeliningRedis, Redis]) -> None:
    pipelining, _ = clients
    await pipelining.set("a", "1")
    cancelled = asyncio.ensure_future(pipelining.get("a"))
    kept = asyncio.ensure_future(pipelining.incr("n"))
    await asyncio.sleep(0)
    cancelled.cancel()

    assert await kept == 1
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert await pipelining.get("n") == b"1"


async def test_an_unreachable_server_fails_every_caller_of_the_batch() -> None:
    client = PipeliningRedis(port=free_port(), socket_connect_timeout=1)
    try:
        replies = await asyncio.gather(client.get("a"), client.get("b"), return_exceptions=True)
    finally:
        await client.aclose()

    assert all(isinstance(reply, RedisConnectionError) for reply in replies)
