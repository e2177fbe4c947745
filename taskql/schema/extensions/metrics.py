"""What the GraphQL layer measures (metrics.py defines the metrics): each operation's duration by type
and name, the resolvers of root fields (sampled), and the errors of every response by code."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Awaitable, Iterable, Iterator
from inspect import isawaitable
from typing import Any

from graphql import GraphQLError, GraphQLFieldResolver, GraphQLResolveInfo, GraphQLSchema, default_field_resolver
from prometheus_client import Histogram
from strawberry.extensions import SchemaExtension

from taskql.metrics import ERRORS, OPERATION_DURATION, RESOLVER_DURATION
from taskql.schema.extensions.operation_type import operation_type

OTHER = "other"
ANONYMOUS = "anonymous"
MAX_OPERATION_NAMES = 200
_GRAPHQL_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,99}")

# Every code the server gives its errors (errors.py, events/broker.py, schema/, persisted_queries.py).
# Anything else is counted as `other`: a label value must never come from outside this set.
ERROR_CODES = frozenset(
    {
        "BAD_REQUEST",
        "BAD_USER_INPUT",
        "CONFLICT",
        "CURSOR_EXPIRED",
        "FORBIDDEN",
        "GRAPHQL_PARSE_FAILED",
        "GRAPHQL_VALIDATION_FAILED",
        "INTERNAL_SERVER_ERROR",
        "INVALID_CREDENTIALS",
        "NOT_FOUND",
        "OPERATION_NOT_ALLOWED",
        "PERSISTED_QUERY_NOT_FOUND",
        "QUERY_TOO_COMPLEX",
        "RATE_LIMITED",
        "SERVICE_UNAVAILABLE",
        "SUBSCRIBER_TOO_SLOW",
        "UNAUTHENTICATED",
        "VALIDATION",
        "VERSION_CONFLICT",
    }
)


class OperationNames:
    """Operation names as label values. Clients choose them, and each distinct value is a series that
    Prometheus keeps: the first `limit` names this process sees keep their own; later ones, and whatever
    is not a GraphQL name of at most 100 characters, are counted as `other`."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._known: set[str] = set()

    def label(self, name: str | None) -> str:
        if name is None:
            return ANONYMOUS
        if name in self._known:
            return name
        if len(self._known) >= self._limit or not _GRAPHQL_NAME.fullmatch(name):
            return OTHER
        self._known.add(name)
        return name


OPERATION_NAMES = OperationNames(MAX_OPERATION_NAMES)


def count_errors(errors: Iterable[GraphQLError]) -> None:
    """Called once for every error of a response (Schema.process_errors), once it has its code."""
    for error in errors:
        code = (error.extensions or {}).get("code")
        ERRORS.labels(code if code in ERROR_CODES else OTHER).inc()


class OperationMetrics(SchemaExtension):
    """Times each operation, from parsing to its result (a subscription: until it ends)."""

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            # Documents that do not parse, or name no operation of theirs, have no type: only their errors count.
            kind = operation_type(self.execution_context)
            if kind is not None:
                name = OPERATION_NAMES.label(self.execution_context.operation_name)
                OPERATION_DURATION.labels(kind, name).observe(time.perf_counter() - started)


def time_root_fields(schema: GraphQLSchema, sample_rate: float) -> None:
    """Times a `sample_rate` share of the resolutions of root query and mutation fields: the root
    fields are where a request's work starts, and timing every field would cost more than it tells.
    Their resolvers are wrapped once, here, rather than by an extension's per-field hook, which
    graphql-core would call for every field of every response. Subscription fields only open a stream."""
    for root in (schema.query_type, schema.mutation_type):
        if root is None:
            continue
        for name, field in root.fields.items():
            field.resolve = _sampled(field.resolve or default_field_resolver, f"{root.name}.{name}", sample_rate)


def _sampled(resolve: GraphQLFieldResolver, label: str, sample_rate: float) -> GraphQLFieldResolver:
    # A plain (not async) wrapper, so that a synchronous resolver stays synchronous.
    def resolve_sampled(root: Any, info: GraphQLResolveInfo, **args: Any) -> Any:
        if random.random() >= sample_rate:
            return resolve(root, info, **args)
        histogram = RESOLVER_DURATION.labels(label)
        started = time.perf_counter()
        try:
            result = resolve(root, info, **args)
        except BaseException:
            histogram.observe(time.perf_counter() - started)
            raise
        if isawaitable(result):
            return _observe_when_done(result, histogram, started)
        histogram.observe(time.perf_counter() - started)
        return result

    return resolve_sampled


async def _observe_when_done(result: Awaitable[Any], histogram: Histogram, started: float) -> Any:
    try:
        return await result
    finally:
        histogram.observe(time.perf_counter() - started)
