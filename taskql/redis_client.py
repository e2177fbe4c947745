"""The process's Redis client: commands started together go to Redis together, as one pipeline.

A request's independent lookups are started together (asyncio.gather): the session's revocation
marker, its user and the rate-limit charge. Sent one by one, each is a round trip, and
redis-py's per-command bookkeeping (taking a connection from the pool and checking it, the retry
wrapper) runs for each. Here a command waits a few turns of the event loop, long enough for the
commands started beside it (a DataLoader dispatches its batch two turns after the `load`) and then
all of them are written at once (`transaction=False`: no MULTI, each command stands alone). Each
caller still gets its own reply or its own error; a connection error fails the whole batch.

The blocking stream reads of live events use a client of their own (events/store.py): a blocking
command would hold the pipeline's connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from taskql.settings import Settings

# Turns of the event loop a batch stays open: gather's tasks start in the first, a DataLoader's
# dispatch runs in the next and its batch function in the one after.
BATCH_TURNS = 3

_Command = tuple[tuple[Any, ...], dict[str, Any], "asyncio.Future[Any]"]


class PipeliningRedis(Redis):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch: list[_Command] | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        loop = asyncio.get_running_loop()
        if self._batch is None:
            self._batch = []
            loop.call_soon(self._close_batch, BATCH_TURNS - 1)
        future: asyncio.Future[Any] = loop.create_future()
        self._batch.append((args, options, future))
        return await future

    def _close_batch(self, turns_left: int) -> None:
        if turns_left:
            asyncio.get_running_loop().call_soon(self._close_batch, turns_left - 1)
            return
        batch, self._batch = self._batch or [], None
        task = asyncio.create_task(self._send(batch), name="redis-batch")
        self._sending.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Command]) -> None:
        try:
            if len(batch) == 1:
                args, options, future = batch[0]
                replies: list[Any] = [await super().execute_command(*args, **options)]
            else:
                # The class's method: tracing wraps this instance's `pipeline` (tracing.py), and each
                # command already has its span, from its caller's `execute_command`.
                pipeline = Redis.pipeline(self, transaction=False)
                for args, options, _ in batch:
                    pipeline.execute_command(*args, **options)
                replies = await pipeline.execute(raise_on_error=False)  # an error reply is returned, not raised
        except BaseException as exc:  # the connection failed (or the process is stopping): every caller hears of it
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)


def create_redis(settings: Settings) -> PipeliningRedis:
    assert settings.redis_url is not None, "taskql serve sets REDIS_URL (an embedded server when unset)"
    return PipeliningRedis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
    )
