"""Domain errors raised by services; the GraphQL layer maps them to userErrors or top-level errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldProblem:
    field: tuple[str, ...]
    message: str


class DomainError(Exception):
    """An expected failure: shown to the client with a stable code."""

    code = "BAD_REQUEST"

    def __init__(self, message: str, field: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.field = tuple(field)

    @property
    def problems(self) -> list[FieldProblem]:
        return [FieldProblem(self.field, self.message)]


class ValidationFailed(DomainError):
    code = "VALIDATION"

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        super().__init__("; ".join(f"{'.'.join(p.field)}: {p.message}" for p in problems))
        self._problems = list(problems)

    @property
    def problems(self) -> list[FieldProblem]:
        return self._problems


class NotFound(DomainError):
    code = "NOT_FOUND"


class Forbidden(DomainError):
    code = "FORBIDDEN"


class Conflict(DomainError):
    code = "CONFLICT"


class VersionConflict(DomainError):
    code = "VERSION_CONFLICT"


class InvalidCredentials(DomainError):
    code = "INVALID_CREDENTIALS"


class Unauthenticated(DomainError):
    code = "UNAUTHENTICATED"


class BadUserInput(DomainError):
    """Malformed arguments (IDs, cursors, page sizes): always a top-level error."""

    code = "BAD_USER_INPUT"


class RetryLater(DomainError):
    """Refused for now: `retryAfter` seconds in the error and, over HTTP, `Retry-After`."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(RetryLater):
    code = "RATE_LIMITED"


# When to try again after SERVICE_UNAVAILABLE: about the time a replica set takes to elect a primary,
# or Redis to come back from a restart.
UNAVAILABLE_RETRY_AFTER_SECONDS = 5


class Unavailable(RetryLater):
    """A dependency the operation cannot safely do without is unreachable; try again shortly."""

    code = "SERVICE_UNAVAILABLE"

    def __init__(self, message: str) -> None:
        super().__init__(message, UNAVAILABLE_RETRY_AFTER_SECONDS)
