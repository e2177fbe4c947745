"""Where task events are kept: a bounded, ordered log per project, a Redis Stream.

The contract is small on purpose: append, read what follows a cursor, block for what comes next,
and tell how far the retention window has been trimmed. Cursors are stream IDs ("<ms>-<seq>"),
increasing per project.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from taskql.codec import as_text, decode_document, encode_document
from taskql.settings import Settings
from taskql.tracing import instrument_redis

ZERO_ID = "0-0"
READ_BLOCK_SECONDS = 5.0  # a reader wakes at least this often


def parse_id(stream_id: str) -> tuple[int, int]:
    """(ms, seq) of a stream ID; ValueError when it is not one."""
    ms, _, seq = stream_id.partition("-")
    if not (ms.isdigit() and seq.isdigit()):
        raise ValueError(f"not a stream id: {stream_id!r}")
    return int(ms), int(seq)


@dataclass(frozen=True)
class Entry:
    id: str
    payload: dict[str, Any]


# Appends an event once: a mark per event ID, kept as long as the events are, refuses a second copy.
_APPEND_ONCE = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[4]) then
  return false
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[1])
redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[3])
return id
"""


class EventStore:
    """One Redis Stream per project, trimmed by length (MAXLEN) and age (MINID), both approximate.

    Two clients: `client`, the process's, appends (REDIS_TIMEOUT_SECONDS: a write that publishes its
    event never waits longer for Redis, and the append shares the process's round trips);
    `blocking_client` reads, blocking reads included, with a socket that waits longer than they block."""

    def __init__(self, client: Redis, blocking_client: Redis, *, max_length: int, max_age_seconds: int) -> None:
        self._client = client
        self._blocking_client = blocking_client
        self._max_length = max_length
        self._max_age_seconds = max_age_seconds
        self._append_once = client.register_script(_APPEND_ONCE)

    @staticmethod
    def _key(channel: str) -> str:
        return f"taskql:events:{{{channel}}}"  # {hash tag}: the stream and its marks share a Redis Cluster slot

    async def append(self, channel: str, payload: dict[str, Any], *, event_id: str) -> str | None:
        """Appends the event, unless an event with this ID was appended already (then None)."""
        key = self._key(channel)
        oldest_kept = f"{int(time.time() * 1000) - self._max_age_seconds * 1000}-0"
        entry_id = await self._append_once(
            keys=[key, f"{key}:published:{event_id}"],
            args=[encode_document(payload), self._max_length, oldest_kept, self._max_age_seconds],
        )
        return None if entry_id is None else as_text(entry_id)

    async def last_id(self, channel: str) -> str:
        return (await self.window(channel))[1]

    async def window(self, channel: str) -> tuple[str, str]:
        """(the newest ID dropped by retention, the newest ID ever appended), ZERO_ID for none: the
        cursors a subscription can resume from lie between them."""
        info = await self._info(channel)
        if not info:
            return ZERO_ID, ZERO_ID
        last = as_text(info.get("last-generated-id", ZERO_ID))
        # Redis does not record what trimming dropped, but everything dropped precedes the first entry kept.
        if info["entries-added"] <= info["length"]:
            return ZERO_ID, last
        first = info.get("first-entry")
        if not first:  # everything was dropped
            return last, last
        ms, seq = parse_id(as_text(first[0]))
        return (f"{ms}-{seq - 1}" if seq else f"{ms - 1}-{2**64 - 1}"), last

    async def _info(self, channel: str) -> dict[Any, Any] | None:
        try:
            return await self._blocking_client.xinfo_stream(self._key(channel))
        except ResponseError:  # no such stream yet
            return None

    async def read_after(self, channel: str, after: str, count: int) -> list[Entry]:
        rows = await self._blocking_client.xrange(self._key(channel), min=f"({after}", count=count)
        return [_entry(entry_id, fields) for entry_id, fields in rows]

    async def wait_after(self, channel: str, after: str, timeout_seconds: float) -> list[Entry]:
        """Entries after `after`, waiting up to the timeout for the first one."""
        reply = await self._blocking_client.xread({self._key(channel): after}, block=int(timeout_seconds * 1000))
        return [_entry(entry_id, fields) for _, rows in reply for entry_id, fields in rows]

    async def close(self) -> None:
        await self._blocking_client.aclose()  # the other is the process's, closed with it


def _entry(entry_id: str | bytes, fields: dict[Any, Any]) -> Entry:
    raw = fields.get(b"e", fields.get("e"))
    return Entry(as_text(entry_id), decode_document(as_text(raw)))


def create_event_store(settings: Settings, client: Redis, tracer_provider: TracerProvider | None = None) -> EventStore:
    """The store on the process's client, and a client of its own for blocking reads."""
    assert settings.redis_url is not None, "taskql serve sets REDIS_URL (an embedded server when unset)"
    # Blocking reads wait up to READ_BLOCK_SECONDS: the socket must wait longer than that.
    blocking_client = Redis.from_url(
        settings.redis_url,
        socket_timeout=READ_BLOCK_SECONDS + 5,
        socket_connect_timeout=settings.redis_timeout_seconds,
    )
    instrument_redis(blocking_client, tracer_provider)
    return EventStore(
        client,
        blocking_client,
        max_length=settings.events_max_length,
        max_age_seconds=settings.events_max_age_seconds,
    )
