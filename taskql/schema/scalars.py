"""Scalars as clients' code generators expect them."""

from __future__ import annotations

from datetime import UTC, datetime

import strawberry
from strawberry.schema.types.base_scalars import DateTimeDefinition


def _rfc3339_utc(value: datetime) -> str:
    # Stored as UTC at millisecond precision (BSON); a naive value is UTC too.
    moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


# Strawberry's own DateTime printed Python's isoformat: `+00:00`, and microseconds only when non-zero.
DATE_TIME = strawberry.scalar(
    name="DateTime",
    description="A moment: RFC 3339, always in UTC with milliseconds on output (`2026-12-01T23:31:10.844Z`); "
    "any offset on input.",
    specified_by_url="https://scalars.graphql.org/andimarek/date-time",
    serialize=_rfc3339_utc,
    parse_value=DateTimeDefinition.parse_value,  # what it accepted before: ISO 8601, with an offset
)
