"""GraphQL over HTTP (graphql.github.io/graphql-over-http) and the CSRF rules, before Strawberry runs.

- Only GET and POST (405, with `Allow`).
- A POST body must be `application/json` (415): form and multipart posts, which a browser sends
  cross-site without asking first, never run.
- The client must accept `application/graphql-response+json` or `application/json` (406). The first
  gets the spec's status codes: 400, with no `data` key, when the request could not be executed
  (parse, validation, variable and cost errors). `application/json` (also for `*/*` and no
  `Accept`) keeps the legacy behaviour: 200 with the errors.
- A request refused for its rate (RATE_LIMITED) is 429, with `Retry-After`, whatever the media type.
- A GET may only run a query (405, `Allow: POST`) and must carry a header that no cross-site form or
  link can send without a CORS preflight: `X-TaskQL-CSRF` or `Apollo-Require-Preflight` (400).
  GraphiQL's page (a GET asking for HTML) needs none; it sends its queries as JSON POSTs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graphql import GraphQLError, OperationDefinitionNode, OperationType, parse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
JSON = "application/json"
CSRF_HEADERS = ("x-taskql-csrf", "apollo-require-preflight")


def _media_ranges(accept: str) -> list[tuple[str, float]]:
    ranges = []
    for part in accept.split(","):
        media_type, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media_type:
            ranges.append((media_type.lower(), quality))
    return ranges


def negotiate(accept: str | None) -> str | None:
    """The response media type for an Accept header; None when the client accepts neither."""
    if not accept:
        return JSON
    best: tuple[float, int, str] | None = None
    for media_type, quality in _media_ranges(accept):
        if quality <= 0:
            continue
        # Exact types win over wildcards at the same quality; a wildcard gets the legacy type.
        if media_type in (GRAPHQL_RESPONSE_JSON, JSON):
            candidate = (quality, 1, media_type)
        elif media_type in ("*/*", "application/*"):
            candidate = (quality, 0, JSON)
        else:
            continue
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    return best[2] if best else None


def coded_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """A refusal before GraphQL runs, shaped as GraphQL errors are, with a code a client can act on."""
    body = {"errors": [{"message": message, "extensions": {"code": code}}]}
    return JSONResponse(body, status_code=status, headers=headers)


def bad_request(status: int, message: str) -> Response:
    """A request GraphQL could not read (its body, its query), as a GraphQL error."""
    return coded_error(status, "BAD_REQUEST", message)


def lower_content_type(scope: Scope) -> None:
    """Media types are case-insensitive (RFC 9110): `APPLICATION/JSON` is JSON to Strawberry too."""
    scope["headers"] = [(name, value.lower() if name == b"content-type" else value) for name, value in scope["headers"]]


def wants_graphiql(method: str, query_params: Mapping[str, str], accept: str) -> bool:
    """A browser opening the endpoint: a GET for HTML with no operation (no query, no persisted hash)."""
    return method == "GET" and not {"query", "extensions"} & set(query_params) and "text/html" in accept


def _is_mutation(query: str, operation_name: str | None) -> bool:
    try:
        document = parse(query)
    except GraphQLError:
        return False  # the view reports the syntax error
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode) and (
            operation_name is None or (definition.name and definition.name.value == operation_name)
        ):
            return definition.operation is not OperationType.QUERY
    return False


def refusal(request: Request) -> Response | None:
    """The response that refuses this request before GraphQL runs, or None to let it through."""
    if request.method not in ("GET", "POST"):
        return coded_error(405, "METHOD_NOT_ALLOWED", "Use GET (queries) or POST.", {"Allow": "GET, POST"})
    if wants_graphiql(request.method, request.query_params, request.headers.get("accept", "")):
        return None
    if request.method == "POST":
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != JSON:
            return coded_error(415, "UNSUPPORTED_MEDIA_TYPE", "Send the request as application/json.")
    if negotiate(request.headers.get("accept")) is None:
        return coded_error(406, "NOT_ACCEPTABLE", f"This server answers with {GRAPHQL_RESPONSE_JSON} or {JSON}.")
    if request.method == "GET":
        if _is_mutation(request.query_params.get("query", ""), request.query_params.get("operationName")):
            return coded_error(405, "METHOD_NOT_ALLOWED", "Mutations and subscriptions need POST.", {"Allow": "POST"})
        if not any(request.headers.get(name) for name in CSRF_HEADERS):
            # urql's and Apollo's GET modes send none by default: the README shows the setting.
            return coded_error(
                400,
                "CSRF_HEADER_REQUIRED",
                "A GET request needs an `X-TaskQL-CSRF` (or `Apollo-Require-Preflight`) header.",
            )
    return None


def is_request_error(result: dict[str, Any]) -> bool:
    """The request was not executed: no data, and only errors not tied to a field (a field's error has a path)."""
    errors = result.get("errors") or []
    return result.get("data") is None and bool(errors) and all("path" not in error for error in errors)


# Refusals that say when to try again, and their HTTP status. SERVICE_UNAVAILABLE keeps 200 for
# `application/json`, whose clients read the error from the body (GraphQL over HTTP).
RETRY_STATUSES = {"RATE_LIMITED": 429, "SERVICE_UNAVAILABLE": 503}


def retry_after(response_data: Any) -> tuple[str, int] | None:
    """(code, seconds to wait) of a request refused for now (RATE_LIMITED, SERVICE_UNAVAILABLE), else None."""
    errors = response_data.get("errors") if isinstance(response_data, dict) else None
    for error in errors or ():
        extensions = error.get("extensions") or {}
        code = extensions.get("code")
        if code in RETRY_STATUSES:
            return code, int(extensions.get("retryAfter", 1))
    return None
