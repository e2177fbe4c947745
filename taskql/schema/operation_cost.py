"""What an operation costs, checked and charged before it runs.

Its cost is the number of nodes its connections may return (limits.query_cost); the operations
of one batch add up. Over `max_query_cost` it is refused: QUERY_TOO_COMPLEX, with the cost.
Otherwise it spends 1 point plus 1 per 100 nodes from its user's budget and its client IP's
(GitHub's model). Over either budget it is refused too: RATE_LIMITED with `retryAfter` in seconds
(over HTTP: 429 with `Retry-After`, which the server sets for every RATE_LIMITED). Each HTTP
answer to an operation carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`
for the tighter budget.

If Redis cannot be reached, operations run uncounted (fail open): refusing every request because a
counter is away would turn a Redis outage into a full outage, and the cost, depth, size and login
limits still bound what any one request can do.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from graphql import GraphQLError
from opentelemetry import trace
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from strawberry.extensions import SchemaExtension

from taskql import metrics
from taskql.context import Context
from taskql.logs import note_operation
from taskql.rate_limits import Budget, Usage
from taskql.schema.limits import query_cost
from taskql.services.common import Deps

logger = logging.getLogger("taskql.rate_limits")
NODES_PER_POINT = 100


def operation_points(cost: int) -> int:
    return 1 + cost // NODES_PER_POINT


class OperationCost(SchemaExtension):
    def __init__(self) -> None:
        self._reported = False

    async def on_operation(self) -> AsyncIterator[None]:  # type: ignore[override]
        try:
            yield  # a syntax error is raised through here (by ParserCache)
        finally:
            if not self._reported:  # refused before running: still tell the client its budget
                usage = await _charge(self.execution_context.context.deps, 0)
                if usage is not None:
                    _report(self.execution_context.context.response, usage)

    async def on_execute(self) -> AsyncIterator[None]:  # type: ignore[override]
        execution = self.execution_context
        if execution.graphql_document is not None:
            if isinstance(execution.context.request, Request):
                viewer = execution.context.deps.viewer
                note_operation(
                    execution.context.request.state,
                    execution.operation_name,
                    execution.operation_type.value,
                    str(viewer.id) if viewer else None,
                )
            settings = execution.context.deps.runtime.settings
            cost = query_cost(
                execution.schema._schema, execution.graphql_document, execution.operation_name, execution.variables
            )
            trace.get_current_span().set_attribute("graphql.operation.cost", cost)
            request_cost = _add_to_request(execution.context, cost)
            if request_cost > settings.max_query_cost:
                raise GraphQLError(
                    f"This request could return up to {request_cost} nodes; the limit is {settings.max_query_cost}. "
                    "Ask for smaller pages (`first`/`last`) or fewer nested connections.",
                    extensions={"code": "QUERY_TOO_COMPLEX", "cost": request_cost, "maxCost": settings.max_query_cost},
                )
            usage = await _charge(execution.context.deps, operation_points(cost))
            if usage is not None:
                _report(execution.context.response, usage)
                self._reported = True
                if not usage.allowed:
                    raise GraphQLError(
                        f"Rate limit exceeded: retry in {usage.reset_seconds} s.",
                        extensions={"code": "RATE_LIMITED", "retryAfter": usage.reset_seconds},
                    )
        yield


def _add_to_request(context: Context, cost: int) -> int:
    """The cost of the HTTP request so far: the operations of a batch count together. Over a
    WebSocket each operation stands alone (the connection's context outlives them)."""
    if not isinstance(context.request, Request):
        return cost
    state = context.request.state
    state.graphql_cost = getattr(state, "graphql_cost", 0) + cost
    return state.graphql_cost


async def _charge(deps: Deps, points: int) -> Usage | None:
    """The tighter budget after charging both (None when Redis is unreachable)."""
    settings = deps.runtime.settings
    window = settings.rate_limit_window_seconds
    charges = [(f"ip:{deps.client_ip}", Budget("ip", settings.rate_limit_ip_points, window))]
    if deps.viewer is not None:
        charges.insert(0, (f"user:{deps.viewer.id}", Budget("user", settings.rate_limit_user_points, window)))
    tightest: Usage | None = None
    try:
        for key, budget in charges:
            usage = await deps.runtime.rate_limits.charge(key, points, budget)
            if tightest is None or not usage.allowed or usage.remaining < tightest.remaining:
                tightest = usage
            if not usage.allowed:
                metrics.RATE_LIMIT_REJECTIONS.labels(budget.name).inc()
                break
    except RedisError as exc:
        logger.warning("rate limits unavailable, not counting this operation: %s", exc)
        return None
    return tightest


def _report(response: object, usage: Usage) -> None:
    if not isinstance(response, Response):  # a WebSocket: the error alone tells
        return
    response.headers["RateLimit-Limit"] = str(usage.limit)
    response.headers["RateLimit-Remaining"] = str(usage.remaining)
    response.headers["RateLimit-Reset"] = str(usage.reset_seconds)
