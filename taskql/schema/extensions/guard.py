"""What every operation passes before it runs, in one extension: Strawberry runs each extension's
hooks on every request, so the checks share one, built from parts made once per schema.

1. Its document, when a persisted query's hash was sent instead (persisted_queries.py).
2. Parsing and validation, each done once per distinct document text (`Documents`), with the
   document limits (limits.py): tokens while parsing, then depth, aliases and the fields selected
   once fragments are expanded, directives and repeated fields.
3. Its cost (operation_cost.py), cached per document and page sizes: over `max_query_cost` it is
   refused (QUERY_TOO_COMPLEX, with the cost); otherwise its points are charged to its user's and
   its client IP's budgets, and over either it is refused too (RATE_LIMITED with `retryAfter` in
   seconds; over HTTP the server answers 429 with `Retry-After`). Each HTTP answer to an operation
   carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` for the tighter budget.
4. Its viewer: an HTTP request's token was only read when the request came in; whether its login
   has ended is asked now, beside the charge, so both take one round trip to Redis (context.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from functools import lru_cache

from graphql import DocumentNode, GraphQLError, GraphQLSchema, ValidationRule, parse
from opentelemetry import trace
from starlette.requests import Request
from starlette.websockets import WebSocket
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

from taskql.logs import note_operation
from taskql.schema.extensions.limits import ShapeLimits
from taskql.schema.extensions.operation_cost import CostCache, add_to_request, charge, operation_points, report

# In production, what answers graphql-core's validation errors: their messages name the types,
# fields and arguments the document should have used ("Field 'viewer' of type 'User' must have a
# selection of subfields"), from which a tool like clairvoyance rebuilds the schema that
# introspection hides. One error for them all: a document of 1,000 mistakes gets one answer too.
SCHEMA_HIDDEN = "This document does not match the schema."
_INTROSPECTION_OFF = "GraphQL introspection has been disabled"  # names only what the document asked for


class Prepared:
    """One document text, parsed; its validation errors once it has been validated."""

    __slots__ = ("document", "errors")

    def __init__(self, document: DocumentNode) -> None:
        self.document = document
        self.errors: list[GraphQLError] | None = None


class Documents:
    """The last `size` distinct document texts, parsed and validated once each: what Strawberry's
    ParserCache and ValidationCache do, keyed by the text alone (ValidationCache keys by the parsed
    document, which a frozen dataclass hashes by walking every node, on every request)."""

    def __init__(
        self,
        rules: tuple[type[ValidationRule], ...],
        shape: ShapeLimits,
        max_tokens: int,
        *,
        hide_schema: bool = False,
        size: int = 256,
    ) -> None:
        self._rules = rules
        self._shape = shape
        self._max_tokens = max_tokens
        self._hide_schema = hide_schema
        # A syntax error raises, and lru_cache keeps nothing for it: a broken document is parsed each time.
        self.prepared = lru_cache(maxsize=size)(self._parse)

    def _parse(self, query: str) -> Prepared:
        return Prepared(parse(query, max_tokens=self._max_tokens))

    def validate(
        self, prepared: Prepared, schema: GraphQLSchema, default_rules: tuple[type[ValidationRule], ...]
    ) -> list[GraphQLError]:
        if prepared.errors is None:  # the rules are the same for every request: the errors are too
            errors = [
                *self._shape.check(prepared.document),
                *validate_document(schema, prepared.document, (*default_rules, *self._rules)),
            ]
            # A document over one of TaskQL's limits (their errors come coded, and name nothing the
            # document did not) is answered with those alone, not also with an error for each of
            # its, say, 1,000 unknown directives.
            limits = [error for error in errors if error.extensions]
            prepared.errors = limits or (_without_schema(errors) if self._hide_schema else errors)
        return prepared.errors


def _without_schema(errors: list[GraphQLError]) -> list[GraphQLError]:
    """graphql-core's validation errors as production answers them: SCHEMA_HIDDEN, once, at all their places."""
    hidden = [error for error in errors if not error.message.startswith(_INTROSPECTION_OFF)]
    if not hidden:
        return errors
    nodes = [node for error in hidden for node in error.nodes or ()]
    kept = [error for error in errors if error not in hidden]
    return [*kept, GraphQLError(SCHEMA_HIDDEN, nodes=nodes or None)]


class OperationGuard(SchemaExtension):
    def __init__(self, documents: Documents, costs: CostCache) -> None:
        self._documents = documents
        self._costs = costs
        self._prepared: Prepared | None = None
        self._reported = False

    @classmethod
    def factory(cls, documents: Documents) -> Callable[[], OperationGuard]:
        """What the schema lists: a fresh guard per request around the parts all of them share."""
        costs = CostCache()
        return lambda: cls(documents, costs)

    async def on_operation(self) -> AsyncIterator[None]:  # type: ignore[override]
        execution = self.execution_context
        deps = execution.context.deps
        execution.query = await deps.runtime.persisted_queries.resolve(execution.query, execution.operation_extensions)
        try:
            yield  # a syntax error is raised through here (by on_parse)
        finally:
            if not self._reported:  # refused before running: still tell the client its budget
                usage = await charge(deps, execution.context.user_id, 0)
                if usage is not None:
                    report(execution.context.response, usage)

    def on_parse(self) -> Iterator[None]:
        execution = self.execution_context
        assert execution.query is not None  # Strawberry refuses an operation without one before parsing
        self._prepared = self._documents.prepared(execution.query)
        execution.graphql_document = self._prepared.document
        yield

    def on_validate(self) -> Iterator[None]:
        execution = self.execution_context
        assert self._prepared is not None
        # Strawberry validates only when no extension did (pre_execution_errors still None).
        execution.pre_execution_errors = self._documents.validate(
            self._prepared, execution.schema._schema, execution.validation_rules
        )
        yield

    async def on_execute(self) -> AsyncIterator[None]:  # type: ignore[override]
        execution = self.execution_context
        if execution.graphql_document is not None:
            context = execution.context
            if isinstance(context.request, Request):  # the user a valid token names, its login confirmed or not
                user_id = context.user_id
                note_operation(
                    context.request.state,
                    execution.operation_name,
                    execution.operation_type.value,
                    None if user_id is None else str(user_id),
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
            # Together: the session check and the charge reach Redis in one round trip. A token
            # whose login has ended is charged to its user all the same (a rejected operation is
            # charged too): it cost the server this much, and it cannot run.
            # Over a WebSocket the connection's login is checked again for every operation.
            session_check = (
                context.recheck_socket_session()
                if isinstance(context.request, WebSocket)
                else context.confirm_session()
            )
            _, usage = await asyncio.gather(
                session_check, charge(context.deps, context.user_id, operation_points(cost))
            )
            if usage is not None:
                report(context.response, usage)
                self._reported = True
                if not usage.allowed:
                    raise GraphQLError(
                        f"Rate limit exceeded: retry in {usage.reset_seconds} s.",
                        extensions={"code": "RATE_LIMITED", "retryAfter": usage.reset_seconds},
                    )
        yield
