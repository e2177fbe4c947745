"""How objects and moments look outside TaskQL, in the API and in webhooks alike: opaque global IDs
and RFC 3339 timestamps in UTC."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from bson import ObjectId


def global_id(type_name: str, object_id: ObjectId) -> str:
    return base64.urlsafe_b64encode(f"{type_name}:{object_id}".encode()).decode().rstrip("=")


def rfc3339(value: datetime) -> str:
    """UTC with milliseconds and Z (stored as UTC at millisecond precision, BSON; naive means UTC)."""
    moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"
