"""The routing contract of the REST API: what an endpoint module declares and receives.

An endpoint module exposes ``ROUTES: list[Route]``. A :class:`Route` names a method, a path
pattern relative to ``/api/v1`` and a handler; the handler gets a :class:`Call` and returns a
JSON-able value (sent with ``Route.status``), a :class:`Response`, or a Deferred of either,
and raises :class:`Problem` (or a ``MailError``, mapped by the app) for every refusal.

**Path patterns.** Segments are literals, ``{name}`` (one non-empty segment, percent-decoded
as UTF-8: a ``/`` inside a folder name is sent as ``%2F``) or ``{name:int}`` (1 to 18 ASCII
digits, converted to int). The raw path is split on ``/`` *before* decoding, so an encoded
slash never splits a parameter. When several patterns match a path, the most specific wins:
segment by segment, a literal beats ``{name:int}``, which beats ``{name}``
(``/me/app-passwords`` before ``/me/{anything}``). A trailing slash is not the same path.

The module imports nothing concrete: everything reaches a handler through ``call.context``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

__all__ = [
    "METHODS",
    "Call",
    "PathPattern",
    "Problem",
    "Response",
    "Route",
    "Router",
]

#: The methods a Route may use.
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
#: Longest ``{name:int}`` parameter (fits an unsigned 63-bit integer).
MAX_INT_DIGITS = 18

_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)(?::(int))?\}$")


@dataclass(frozen=True)
class Route:
    """One endpoint: ``method`` + ``pattern`` -> ``handler``, and what OpenAPI says of it.

    ``body``/``response`` are JSON Schemas (2020-12, as OpenAPI 3.1 uses them): ``body`` is
    also enforced before the handler runs; ``query`` maps query parameter names to schemas
    (documentation: handlers read ``call.query``). ``auth=False`` routes are open (log-in,
    the OpenAPI document). ``body_required=False`` lets a route with a ``body`` schema be
    called with no body (``call.json`` is then None). ``errors`` lists the problem statuses
    the handler itself may answer besides those the app gives (OpenAPI documents them).
    """

    method: str
    pattern: str
    handler: Callable[[Call], Any]
    summary: str
    auth: bool = True
    body: Mapping[str, Any] | None = None
    response: Mapping[str, Any] | None = None
    query: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    status: int = 200
    tag: str = ""
    body_required: bool = True
    errors: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"{self.method!r} is not one of {sorted(METHODS)}")
        PathPattern(self.pattern)  # fail at import time on a bad pattern


@dataclass
class Call:
    """What a handler receives for one request.

    ``params`` are the converted path parameters, ``query`` the decoded query arguments,
    ``json`` the parsed and validated body (None without one), ``user`` the authenticated
    account (None on ``auth=False`` routes), ``token`` the bearer token presented (None when
    there was none).
    """

    request: Any
    context: Any
    user: str | None
    scopes: frozenset[str]
    params: dict[str, Any]
    query: dict[str, list[str]]
    json: Any
    client_ip: str
    token: str | None = None

    def require(self, action: str, target: str | None = None) -> None:
        """Raise a 403 Problem unless the signed-in user may do ``action`` (a role action
        value such as ``"manage-users"``) on ``target`` (an address or domain)."""
        if self.user is None:
            raise Problem(401, "Authentication required", "this action needs a signed-in user")
        try:
            self.context.authorize(self.user, action, target)
        except Problem:
            raise
        except Exception as error:  # the role check's Forbidden (a MailError) or the like
            text = getattr(error, "text", None) or str(error) or "not allowed"
            raise Problem(403, "Forbidden", str(text)) from None

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The first value of query argument ``name``, or ``default``."""
        values = self.query.get(name)
        return values[0] if values else default

    def int_arg(
        self, name: str, default: int, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        """Query argument ``name`` as an int within bounds; a 400 Problem otherwise."""
        raw = self.arg(name)
        if raw is None:
            return default
        if not raw.isascii() or not raw.lstrip("-").isdigit() or len(raw) > MAX_INT_DIGITS:
            raise Problem(400, "Bad query parameter", f"{name} must be an integer")
        value = int(raw)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise Problem(
                400, "Bad query parameter", f"{name} must be between {minimum} and {maximum}"
            )
        return value


@dataclass
class Response:
    """A reply with its own status, headers or content type.

    ``body`` is JSON-able (sent as ``application/json``) unless ``content_type`` is given,
    then it must be bytes (or str, sent as UTF-8). ``stream``, when given, takes over after
    the status and headers are set: ``stream(request)`` writes the body itself (e.g.
    Server-Sent Events) and returns a Deferred that fires when it is done; the app then
    finishes the request unless the stream did. A client that goes away cancels it.
    """

    status: int = 200
    body: Any = None
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    stream: Callable[[Any], Any] | None = None


class Problem(Exception):
    """An RFC 9457 problem: sent as ``application/problem+json`` with ``status``.

    ``title`` is short and fixed per kind of problem, ``detail`` says what happened this
    time; ``extra`` members go into the document too (e.g. ``totp_required=True``,
    ``errors=[...]``). ``headers`` are added to the reply (``Allow``, ``Retry-After``,
    ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        type: str = "about:blank",  # the RFC 9457 member name
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.headers = dict(headers or {})
        self.extra = extra

    def document(self, instance: str | None = None) -> dict[str, Any]:
        """The problem details object."""
        document: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail:
            document["detail"] = self.detail
        if instance:
            document["instance"] = instance
        for key, value in self.extra.items():
            document.setdefault(key, value)
        return document


# -- path patterns ----------------------------------------------------------------------------


class PathPattern:
    """A compiled route pattern: :meth:`match` raw path segments -> parameters or None."""

    def __init__(self, pattern: str) -> None:
        if not pattern.startswith("/") or (pattern != "/" and pattern.endswith("/")):
            raise ValueError(f"route pattern {pattern!r} must start and not end with '/'")
        self.pattern = pattern
        self.segments: list[tuple[str, str]] = []  # (kind, literal or name); kind: lit/int/str
        names = set()
        for segment in pattern.strip("/").split("/") if pattern != "/" else []:
            found = _PARAM.match(segment)
            if found is None:
                if not segment or "{" in segment or "}" in segment:
                    raise ValueError(f"bad segment {segment!r} in route pattern {pattern!r}")
                self.segments.append(("lit", segment))
                continue
            name = found.group(1)
            if name in names:
                raise ValueError(f"parameter {name!r} twice in route pattern {pattern!r}")
            names.add(name)
            self.segments.append(("int" if found.group(2) else "str", name))

    @property
    def specificity(self) -> tuple[int, ...]:
        """Sort key: higher wins (literal 2, int 1, string 0, segment by segment)."""
        return tuple({"lit": 2, "int": 1, "str": 0}[kind] for kind, _ in self.segments)

    @property
    def parameters(self) -> list[tuple[str, str]]:
        """(name, "int" or "str") of each parameter, in order."""
        return [(value, kind) for kind, value in self.segments if kind != "lit"]

    def openapi_path(self) -> str:
        """The pattern as an OpenAPI path template (``{uid:int}`` -> ``{uid}``)."""
        parts = [value if kind == "lit" else "{" + value + "}" for kind, value in self.segments]
        return "/" + "/".join(parts)

    def match(self, segments: Sequence[str]) -> dict[str, Any] | None:
        """Parameters when the raw (still percent-encoded) ``segments`` fit, else None.
        A parameter that is not valid percent-encoded UTF-8 does not fit."""
        if len(segments) != len(self.segments):
            return None
        params: dict[str, Any] = {}
        for (kind, value), raw in zip(self.segments, segments, strict=True):
            if kind == "lit":
                if raw != value:
                    return None
            elif kind == "int":
                if not raw or len(raw) > MAX_INT_DIGITS or not raw.isascii() or not raw.isdigit():
                    return None
                params[value] = int(raw)
            else:
                try:
                    text = unquote_to_bytes(raw).decode("utf-8")
                except UnicodeDecodeError:
                    return None
                if not text:
                    return None
                params[value] = text
        return params


class Router:
    """The routes of the API, looked up by method and raw path segments."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes: list[tuple[Route, PathPattern]] = []
        seen: set[tuple[str, str]] = set()
        for route in routes:
            pattern = PathPattern(route.pattern)
            key = (route.method, pattern.openapi_path())
            if key in seen:
                raise ValueError(f"two routes for {route.method} {route.pattern}")
            seen.add(key)
            self.routes.append((route, pattern))

    def find(self, method: str, segments: Sequence[str]) -> tuple[Route, dict[str, Any]]:
        """The route for ``method`` and the path, with its parameters. Problem 404 when no
        pattern matches, 405 (with ``Allow``) when only other methods do. HEAD is GET."""
        wanted = "GET" if method == "HEAD" else method
        matches = []
        for route, pattern in self.routes:
            params = pattern.match(segments)
            if params is not None:
                matches.append((pattern.specificity, route, params))
        if not matches:
            raise Problem(404, "Not Found", "no such resource in this API")
        best = max(m[0] for m in matches)
        here = [(route, params) for spec, route, params in matches if spec == best]
        for route, params in here:
            if route.method == wanted:
                return route, params
        allowed = sorted({route.method for route, _ in here})
        if "GET" in allowed:
            allowed.append("HEAD")
        raise Problem(
            405,
            "Method Not Allowed",
            f"{method} is not allowed here; use {', '.join(allowed)}",
            headers={"Allow": ", ".join(allowed)},
        )
