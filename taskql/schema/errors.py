"""How failures reach clients: userErrors in payloads, coded top-level errors, masked internals."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from enum import Enum
from typing import Any, TypeVar

import strawberry
from graphql import GraphQLError
from pymongo.errors import ConnectionFailure, PyMongoError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from strawberry.permission import BasePermission
from strawberry.schema.exceptions import InvalidOperationTypeError

from taskql.errors import UNAVAILABLE_RETRY_AFTER_SECONDS, DomainError, RetryLater, Unauthenticated
from taskql.services.common import SIGN_IN

logger = logging.getLogger("taskql.errors")
T = TypeVar("T")


@strawberry.enum
class UserErrorCode(Enum):
    VALIDATION = "VALIDATION"
    NOT_FOUND = "NOT_FOUND"
    FORBIDDEN = "FORBIDDEN"
    CONFLICT = "CONFLICT"
    VERSION_CONFLICT = "VERSION_CONFLICT"
    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"


@strawberry.type(description="An expected failure of a mutation, to show next to the offending field.")
class UserError:
    code: UserErrorCode
    field: list[str] | None = strawberry.field(description="Path to the input field at fault, e.g. [input, title].")
    message: str


# Errors a mutation reports in its payload; anything else (UNAUTHENTICATED, BAD_USER_INPUT) is top-level.
PAYLOAD_ERRORS = frozenset(code.value for code in UserErrorCode)


def user_errors(error: DomainError) -> list[UserError]:
    return [
        UserError(code=UserErrorCode(error.code), field=list(problem.field) or None, message=problem.message)
        for problem in error.problems
    ]


class IsAuthenticated(BasePermission):
    message = SIGN_IN
    error_extensions = {"code": "UNAUTHENTICATED"}

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        problem = info.context.deps.auth_problem
        if problem:  # a token was sent but is expired or revoked: say so, so the client refreshes
            raise Unauthenticated(problem)
        return info.context.deps.viewer is not None


def _recode(error: GraphQLError, message: str, extensions: dict[str, Any]) -> None:
    error.message = message
    error.extensions = extensions
    error.original_error = None


def format_errors(errors: list[GraphQLError], request_id: str | None) -> None:
    """Give every error an `extensions.code`; unexpected exceptions become a masked INTERNAL_SERVER_ERROR.

    Runs from Schema.process_errors and edits the errors in place: that hook sees every error
    (parse, validation, execution), while extension hooks are skipped for parse errors.
    """
    for error in errors:
        original = error.original_error
        if isinstance(original, DomainError):
            extensions: dict[str, Any] = {"code": original.code}
            if original.field:
                extensions["field"] = list(original.field)
            if isinstance(original, RetryLater):
                extensions["retryAfter"] = original.retry_after
            _recode(error, original.message, extensions)
        elif _unreachable(original):
            # Not logged per request: the outage is logged once where it is met (db/client.py, outage.py).
            message = f"Service temporarily unavailable; try again shortly (request id {request_id})."
            _recode(error, message, {"code": "SERVICE_UNAVAILABLE", "retryAfter": UNAVAILABLE_RETRY_AFTER_SECONDS})
        elif isinstance(original, InvalidOperationTypeError):  # a query over the legacy graphql-ws protocol
            kind = original.operation_type.value
            message = f"A {kind} cannot run here: the graphql-ws protocol carries subscriptions only."
            _recode(error, message, {"code": "OPERATION_NOT_ALLOWED"})
        elif original is None or isinstance(original, GraphQLError):
            if not (error.extensions and "code" in error.extensions):
                parse_failed = error.message.startswith("Syntax Error")
                code = "GRAPHQL_PARSE_FAILED" if parse_failed else "GRAPHQL_VALIDATION_FAILED"
                error.extensions = {**(error.extensions or {}), "code": code}
        else:
            logger.error("unexpected error in request %s at %s", request_id, error.path, exc_info=original)
            _recode(error, "Internal server error.", {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id})


def _unreachable(exc: BaseException | None) -> bool:
    """MongoDB or Redis did not answer in time (down, electing a primary, unreachable): not a bug."""
    if isinstance(exc, ConnectionFailure | RedisConnectionError | RedisTimeoutError):
        return True
    return isinstance(exc, PyMongoError) and exc.timeout  # MONGODB_TIMEOUT_MS ran out


async def attempt(work: Awaitable[T]) -> tuple[T | None, list[UserError]]:
    """Run a mutation's service call; expected failures become userErrors, the rest propagate."""
    try:
        return await work, []
    except DomainError as error:
        if error.code not in PAYLOAD_ERRORS:
            raise
        return None, user_errors(error)
