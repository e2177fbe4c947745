"""Scalars as clients' code generators expect them."""

from __future__ import annotations

import strawberry
from strawberry.schema.types.base_scalars import DateTimeDefinition

from taskql.public_ids import rfc3339

# Strawberry's own DateTime printed Python's isoformat: `+00:00`, and microseconds only when non-zero.
DATE_TIME = strawberry.scalar(
    name="DateTime",
    description="A moment: RFC 3339, always in UTC with milliseconds on output (`2026-12-01T23:31:10.844Z`); "
    "any offset on input.",
    specified_by_url="https://scalars.graphql.org/andimarek/date-time",
    serialize=rfc3339,
    parse_value=DateTimeDefinition.parse_value,  # what it accepted before: ISO 8601, with an offset
)
