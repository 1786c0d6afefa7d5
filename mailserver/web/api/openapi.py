"""The OpenAPI 3.1 document of the API, built from the routes themselves.

Nothing is written twice: each :class:`~mailserver.web.api.routing.Route` gives its path
(``{uid:int}`` becomes the parameter ``uid`` of type integer), method, summary, tag, query
parameters, request and response schemas (JSON Schema 2020-12, the dialect OpenAPI 3.1
uses) and whether it needs the bearer token. Every operation also lists the problem replies
the app may give (RFC 9457 ``application/problem+json``, one shared ``Problem`` schema):
400/415/422 where there is a body (400 also for query and path parameters), 401/403 where
there is auth, 404, 413, 429, 500 and 503 everywhere, plus the route's own ``errors``.

The document is built once, when the resource is made, and served as ``GET /openapi.json``
without authentication.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mailserver import __version__
from mailserver.web.api.routing import Call, PathPattern, Route

__all__ = ["PROBLEM_SCHEMA", "build_document", "openapi_route"]

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "required": ["type", "title", "status"],
}

_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    400: "Bad request (malformed JSON or parameters)",
    507: "Over the mailbox quota",
    401: "Missing, unknown, expired or revoked bearer token",
    403: "The user's roles do not allow this",
    404: "No such resource",
    405: "Method not allowed",
    409: "Conflict",
    413: "Body too large",
    415: "The body is not application/json",
    422: "The body does not fit the schema",
    429: "Too many requests (see Retry-After)",
    500: "Internal error",
    503: "Temporarily unavailable (see Retry-After)",
}


def _problem_response(status: int) -> dict[str, Any]:
    return {
        "description": _REASONS.get(status, "Problem"),
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


def _operation_id(route: Route) -> str:
    words = re.findall(r"[A-Za-z0-9]+", route.pattern.replace(":int", ""))
    return route.method.lower() + "".join(w[:1].upper() + w[1:] for w in words)


def _operation(route: Route, pattern: PathPattern) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": _operation_id(route),
        "summary": route.summary,
        "tags": [route.tag] if route.tag else [],
        "security": [{"bearer": []}] if route.auth else [],
    }
    parameters: list[dict[str, Any]] = []
    for name, kind in pattern.parameters:
        schema: dict[str, Any] = {"type": "integer", "minimum": 0}
        if kind == "str":
            schema = {"type": "string", "minLength": 1}
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    for name, schema in route.query.items():
        parameters.append({"name": name, "in": "query", "required": False, "schema": dict(schema)})
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            "required": route.body_required,
            "content": {"application/json": {"schema": dict(route.body)}},
        }
    success: dict[str, Any] = {"description": _REASONS.get(route.status, "Success")}
    if route.status != 204:
        schema = dict(route.response) if route.response is not None else {}
        success["content"] = {"application/json": {"schema": schema}}
    responses: dict[str, Any] = {str(route.status): success}
    problems = [404, 413, 429, 500, 503, *route.errors]
    if route.auth:
        problems += [401, 403]
    if route.body is not None:
        problems += [400, 415, 422]
    if route.query or pattern.parameters:  # a malformed name or number in them
        problems.append(400)
    for status in sorted(set(problems)):
        responses[str(status)] = _problem_response(status)
    operation["responses"] = responses
    return operation


def build_document(routes: Sequence[Route], title: str = "mailserver API") -> dict[str, Any]:
    """The OpenAPI 3.1 document describing ``routes`` (served under ``/api/v1``)."""
    paths: dict[str, dict[str, Any]] = {}
    tags: list[str] = []
    for route in routes:
        pattern = PathPattern(route.pattern)
        item = paths.setdefault(pattern.openapi_path(), {})
        item[route.method.lower()] = _operation(route, pattern)
        if route.tag and route.tag not in tags:
            tags.append(route.tag)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": __version__,
            "description": "JSON over HTTPS. Errors are RFC 9457 problem details. Get a bearer "
            "token from POST /auth/login; send it as 'Authorization: Bearer <token>'.",
        },
        "servers": [{"url": "/api/v1"}],
        "tags": [{"name": tag} for tag in tags],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {"Problem": PROBLEM_SCHEMA},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an access token"}
            },
        },
    }


def openapi_route(routes: Sequence[Route]) -> Route:
    """``GET /openapi.json``: the document of ``routes`` plus itself, built now."""
    holder: dict[str, Any] = {}

    def serve(call: Call) -> Any:
        return holder["document"]

    route = Route(
        "GET",
        "/openapi.json",
        serve,
        "This OpenAPI 3.1 document",
        auth=False,
        response={"type": "object"},
        tag="meta",
    )
    holder["document"] = build_document([*routes, route])
    return route
