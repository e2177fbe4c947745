"""Documents (with ObjectIds and datetimes) to JSON and back, for the cache and the event streams."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from bson import ObjectId

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _default(value: Any) -> Any:
    if isinstance(value, ObjectId):
        return {"$oid": str(value)}
    if isinstance(value, datetime):
        return {"$date": (value - _EPOCH) // timedelta(milliseconds=1)}
    raise TypeError(f"cannot encode a {type(value).__name__}")


def _revive(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and "$oid" in value:
            return ObjectId(value["$oid"])
        if len(value) == 1 and "$date" in value:
            return _EPOCH + timedelta(milliseconds=value["$date"])
        return {key: _revive(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_revive(item) for item in value]
    return value


def as_text(value: str | bytes) -> str:
    """A Redis reply as text (redis-py answers bytes unless told to decode)."""
    return value.decode() if isinstance(value, bytes) else value


def encode_document(doc: Mapping[str, Any]) -> str:
    return orjson.dumps(doc, default=_default, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()


def decode_document(payload: str) -> dict[str, Any]:
    return _revive(orjson.loads(payload))
