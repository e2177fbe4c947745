"""The type of the operation a request runs, for what measures operations (metrics, traces)."""

from __future__ import annotations

from strawberry.types import ExecutionContext


def operation_type(execution: ExecutionContext) -> str | None:
    """query, mutation or subscription; None for a document that does not parse, or that has no
    operation of the requested name (Strawberry raises for those)."""
    if execution.graphql_document is None:
        return None
    try:
        return execution.operation_type.value
    except RuntimeError:  # the document has no operation of the requested name
        return None
