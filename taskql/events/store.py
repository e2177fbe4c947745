"""Where task events are kept: a bounded, ordered log per project (a Redis Stream, or memory).

The contract is small on purpose: append, read what follows a cursor, block for what comes next,
and tell how far the retention window has been trimmed. Cursors are stream IDs ("<ms>-<seq>"),
increasing per project; both backends generate them the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry.sdk.trace import TracerProvider
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from taskql.codec import decode_document, encode_document
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


class EventStore(Protocol):
    async def append(self, channel: str, payload: dict[str, Any], *, event_id: str) -> str | None:
        """Appends the event, unless an event with this ID was appended already (then None)."""
        ...

    async def last_id(self, channel: str) -> str: ...

    async def trimmed_through(self, channel: str) -> str:
        """The newest ID dropped by retention (ZERO_ID if none): cursors older than it have a gap."""
        ...

    async def read_after(self, channel: str, after: str, count: int) -> list[Entry]: ...

    async def wait_after(self, channel: str, after: str, timeout_seconds: float) -> list[Entry]:
        """Entries after `after`, waiting up to the timeout for the first one."""
        ...

    async def close(self) -> None: ...


# Appends an event once: a mark per event ID, kept as long as the events are, refuses a second copy.
_APPEND_ONCE = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[4]) then
  return false
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[1])
redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[3])
return id
"""


class RedisEventStore:
    """One Redis Stream per project, trimmed by length (MAXLEN) and age (MINID), both approximate."""

    def __init__(self, client: Redis, *, max_length: int, max_age_seconds: int) -> None:
        self._client = client
        self._max_length = max_length
        self._max_age_seconds = max_age_seconds
        self._append_once = client.register_script(_APPEND_ONCE)

    @staticmethod
    def _key(channel: str) -> str:
        return f"taskql:events:{{{channel}}}"  # {hash tag}: the stream and its marks share a Redis Cluster slot

    async def append(self, channel: str, payload: dict[str, Any], *, event_id: str) -> str | None:
        key = self._key(channel)
        oldest_kept = f"{int(time.time() * 1000) - self._max_age_seconds * 1000}-0"
        entry_id = await self._append_once(
            keys=[key, f"{key}:published:{event_id}"],
            args=[encode_document(payload), self._max_length, oldest_kept, self._max_age_seconds],
        )
        return None if entry_id is None else _text(entry_id)

    async def last_id(self, channel: str) -> str:
        info = await self._info(channel)
        return _text(info.get("last-generated-id", ZERO_ID)) if info else ZERO_ID

    async def trimmed_through(self, channel: str) -> str:
        # Redis does not record what trimming dropped, but everything dropped precedes the first entry kept.
        info = await self._info(channel)
        if not info or info["entries-added"] <= info["length"]:
            return ZERO_ID
        first = info.get("first-entry")
        if not first:  # everything was dropped
            return _text(info["last-generated-id"])
        ms, seq = parse_id(_text(first[0]))
        return f"{ms}-{seq - 1}" if seq else f"{ms - 1}-{2**64 - 1}"

    async def _info(self, channel: str) -> dict[Any, Any] | None:
        try:
            return await self._client.xinfo_stream(self._key(channel))
        except ResponseError:  # no such stream yet
            return None

    async def read_after(self, channel: str, after: str, count: int) -> list[Entry]:
        rows = await self._client.xrange(self._key(channel), min=f"({after}", count=count)
        return [_entry(entry_id, fields) for entry_id, fields in rows]

    async def wait_after(self, channel: str, after: str, timeout_seconds: float) -> list[Entry]:
        reply = await self._client.xread({self._key(channel): after}, block=int(timeout_seconds * 1000))
        return [_entry(entry_id, fields) for _, rows in reply for entry_id, fields in rows]

    async def close(self) -> None:
        await self._client.aclose()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry(entry_id: str | bytes, fields: dict[Any, Any]) -> Entry:
    raw = fields.get(b"e", fields.get("e"))
    return Entry(_text(entry_id), decode_document(_text(raw)))


@dataclass
class _MemoryStream:
    entries: deque[Entry] = field(default_factory=deque)
    last: tuple[int, int] = (0, 0)
    trimmed: str = ZERO_ID
    published: dict[str, None] = field(default_factory=dict)  # event IDs, oldest first
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


class MemoryEventStore:
    """One process only (no REDIS_URL): the same semantics in memory."""

    def __init__(self, *, max_length: int, max_age_seconds: int) -> None:
        self._streams: dict[str, _MemoryStream] = {}
        self._max_length = max_length
        self._max_age_ms = max_age_seconds * 1000

    def _stream(self, channel: str) -> _MemoryStream:
        return self._streams.setdefault(channel, _MemoryStream())

    async def append(self, channel: str, payload: dict[str, Any], *, event_id: str) -> str | None:
        stream = self._stream(channel)
        if event_id in stream.published:
            return None
        stream.published[event_id] = None
        if len(stream.published) > self._max_length:
            del stream.published[next(iter(stream.published))]
        now_ms = int(time.time() * 1000)
        ms, seq = stream.last
        stream.last = (now_ms, 0) if now_ms > ms else (ms, seq + 1)
        entry = Entry(f"{stream.last[0]}-{stream.last[1]}", payload)
        stream.entries.append(entry)
        oldest_kept = (now_ms - self._max_age_ms, 0)
        while stream.entries and (
            len(stream.entries) > self._max_length or parse_id(stream.entries[0].id) < oldest_kept
        ):
            stream.trimmed = stream.entries.popleft().id
        async with stream.changed:
            stream.changed.notify_all()
        return entry.id

    async def last_id(self, channel: str) -> str:
        ms, seq = self._stream(channel).last
        return f"{ms}-{seq}"

    async def trimmed_through(self, channel: str) -> str:
        return self._stream(channel).trimmed

    async def read_after(self, channel: str, after: str, count: int) -> list[Entry]:
        cursor = parse_id(after)
        return [entry for entry in self._stream(channel).entries if parse_id(entry.id) > cursor][:count]

    async def wait_after(self, channel: str, after: str, timeout_seconds: float) -> list[Entry]:
        stream = self._stream(channel)
        async with stream.changed:
            try:
                await asyncio.wait_for(stream.changed.wait_for(lambda: stream.last > parse_id(after)), timeout_seconds)
            except TimeoutError:
                return []
        return await self.read_after(channel, after, self._max_length)

    async def close(self) -> None:
        self._streams.clear()


def create_event_store(settings: Settings, tracer_provider: TracerProvider | None = None) -> EventStore:
    """A Redis Stream per project when Redis is configured, else memory (one process only)."""
    retention = {"max_length": settings.events_max_length, "max_age_seconds": settings.events_max_age_seconds}
    if settings.redis_url is None:
        return MemoryEventStore(**retention)
    # Blocking reads wait up to READ_BLOCK_SECONDS: the socket must wait longer than that.
    client = Redis.from_url(
        settings.redis_url,
        socket_timeout=READ_BLOCK_SECONDS + 5,
        socket_connect_timeout=settings.redis_timeout_seconds,
    )
    instrument_redis(client, tracer_provider)
    return RedisEventStore(client, **retention)
