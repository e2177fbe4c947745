"""What an operation costs, and charging it to the rate limits (guard.py does both before it runs).

Its cost is the number of nodes its connections may return (limits.query_cost); the operations
of one batch add up. It spends 1 point plus 1 per 100 nodes from its user's budget and its client
IP's (GitHub's model).

If Redis cannot be reached, operations run uncounted (fail open): refusing every request because a
counter is away would turn a Redis outage into a full outage, and the cost, depth, size and login
limits still bound what any one request can do.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from bson import ObjectId
from graphql import DocumentNode, GraphQLSchema
from starlette.requests import Request
from starlette.responses import Response

from taskql import metrics
from taskql.context import Context
from taskql.rate_limits import Budget, Usage
from taskql.schema.extensions.limits import query_cost
from taskql.services.common import Deps

NODES_PER_POINT = 100


def operation_points(cost: int) -> int:
    return 1 + cost // NODES_PER_POINT


class CostCache:
    """Costs by document, operation and integer variables (page sizes are the only variables a cost
    depends on), like validation: a repeated operation is walked once. Keyed by the document
    object, which the guard (guard.py) hands out again for the same text; least recently used go first."""

    def __init__(self, max_entries: int = 1_000) -> None:
        self._max_entries = max_entries
        self._costs: OrderedDict[tuple[int, str | None, tuple[tuple[str, int], ...]], tuple[DocumentNode, int]] = (
            OrderedDict()
        )

    def cost(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation_name: str | None,
        variables: dict[str, Any] | None,
    ) -> int:
        sizes = tuple(sorted((k, v) for k, v in (variables or {}).items() if type(v) is int))
        key = (id(document), operation_name, sizes)
        cached = self._costs.get(key)
        if cached is not None and cached[0] is document:  # the same object, not one that reused its id
            self._costs.move_to_end(key)
            return cached[1]
        cost = query_cost(schema, document, operation_name, variables)
        self._costs[key] = (document, cost)
        if len(self._costs) > self._max_entries:
            self._costs.popitem(last=False)
        return cost


def add_to_request(context: Context, cost: int) -> int:
    """The cost of the HTTP request so far: the operations of a batch count together. Over a
    WebSocket each operation stands alone (the connection's context outlives them)."""
    if not isinstance(context.request, Request):
        return cost
    state = context.request.state
    state.graphql_cost = getattr(state, "graphql_cost", 0) + cost
    return state.graphql_cost


async def charge(deps: Deps, user_id: ObjectId | None, points: int) -> Usage | None:
    """The tighter budget after charging the user's and the IP's together (None when Redis is unreachable)."""
    settings = deps.runtime.settings
    window = settings.rate_limit_window_seconds
    charges = [(f"ip:{deps.client_ip}", Budget("ip", settings.rate_limit_ip_points, window))]
    if user_id is not None:
        charges.insert(0, (f"user:{user_id}", Budget("user", settings.rate_limit_user_points, window)))
    counted, usages = await deps.runtime.redis_outage.attempt(
        lambda: deps.runtime.rate_limits.charge(charges, points), part="rate_limits"
    )
    if not counted:  # Redis unreachable: not counted (the outage is logged once, by RedisOutage)
        return None
    assert usages is not None
    for (_, budget), usage in zip(charges, usages, strict=True):
        if not usage.allowed:
            metrics.RATE_LIMIT_REJECTIONS.labels(budget.name).inc()
            return usage
    return min(usages, key=lambda usage: usage.remaining)


def report(response: object, usage: Usage) -> None:
    """RateLimit-* headers of the tighter budget on an HTTP answer (a WebSocket: the error alone tells)."""
    if not isinstance(response, Response):
        return
    response.headers["RateLimit-Limit"] = str(usage.limit)
    response.headers["RateLimit-Remaining"] = str(usage.remaining)
    response.headers["RateLimit-Reset"] = str(usage.reset_seconds)
