"""What every operation passes before it runs, in one extension: Strawberry runs each extension's
hooks on every request, so the checks share one, built from parts made once per schema.

1. Its document, when a persisted query's hash was sent instead (persisted_queries.py).
2. The document limits (limits.py): tokens while parsing, then depth, aliases, directives and
   repeated fields as validation rules. The rules are the same objects on every request, so
   ValidationCache hits for every repeated document.
3. Its cost (operation_cost.py), cached per document and page sizes: over `max_query_cost` it is
   refused (QUERY_TOO_COMPLEX, with the cost); otherwise its points are charged to its user's and
   its client IP's budgets, and over either it is refused too (RATE_LIMITED with `retryAfter` in
   seconds; over HTTP the server answers 429 with `Retry-After`). Each HTTP answer to an operation
   carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` for the tighter budget.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from graphql import GraphQLError, ValidationRule
from opentelemetry import trace
from starlette.requests import Request
from strawberry.extensions import SchemaExtension

from taskql.logs import note_operation
from taskql.schema.operation_cost import CostCache, add_to_request, charge, operation_points, report


class OperationGuard(SchemaExtension):
    def __init__(self, rules: tuple[type[ValidationRule], ...], max_tokens: int, costs: CostCache) -> None:
        self._rules = rules
        self._max_tokens = max_tokens
        self._costs = costs
        self._reported = False

    @classmethod
    def factory(cls, rules: tuple[type[ValidationRule], ...], max_tokens: int) -> Callable[[], OperationGuard]:
        """What the schema lists: a fresh guard per request around the parts all of them share."""
        costs = CostCache()
        return lambda: cls(rules, max_tokens, costs)

    async def on_operation(self) -> AsyncIterator[None]:  # type: ignore[override]
        execution = self.execution_context
        deps = execution.context.deps
        execution.query = await deps.runtime.persisted_queries.resolve(execution.query, execution.operation_extensions)
        execution.parse_options["max_tokens"] = self._max_tokens
        execution.validation_rules = (*execution.validation_rules, *self._rules)
        try:
            yield  # a syntax error is raised through here (by ParserCache)
        finally:
            if not self._reported:  # refused before running: still tell the client its budget
                usage = await charge(deps, 0)
                if usage is not None:
                    report(execution.context.response, usage)

    async def on_execute(self) -> AsyncIterator[None]:  # type: ignore[override]
        execution = self.execution_context
        if execution.graphql_document is not None:
            context = execution.context
            if isinstance(context.request, Request):
                viewer = context.deps.viewer
                note_operation(
                    context.request.state,
                    execution.operation_name,
                    execution.operation_type.value,
                    str(viewer.id) if viewer else None,
                )
            max_cost = context.deps.runtime.settings.max_query_cost
            cost = self._costs.cost(
                execution.schema._schema, execution.graphql_document, execution.operation_name, execution.variables
            )
            trace.get_current_span().set_attribute("graphql.operation.cost", cost)
            request_cost = add_to_request(context, cost)
            if request_cost > max_cost:
                raise GraphQLError(
                    f"This request could return up to {request_cost} nodes; the limit is {max_cost}. "
                    "Ask for smaller pages (`first`/`last`) or fewer nested connections.",
                    extensions={"code": "QUERY_TOO_COMPLEX", "cost": request_cost, "maxCost": max_cost},
                )
            usage = await charge(context.deps, operation_points(cost))
            if usage is not None:
                report(context.response, usage)
                self._reported = True
                if not usage.allowed:
                    raise GraphQLError(
                        f"Rate limit exceeded: retry in {usage.reset_seconds} s.",
                        extensions={"code": "RATE_LIMITED", "retryAfter": usage.reset_seconds},
                    )
        yield
