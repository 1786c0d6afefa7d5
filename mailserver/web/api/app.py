"""The resource mounted at ``/api/v1``: one place that turns requests into calls and replies.

Every request goes through the same steps, each of which may end it with a problem
(RFC 9457, ``application/problem+json``; never a traceback):

1. rate limit per client IP (token bucket on the reactor clock) -> 429 + ``Retry-After``;
2. route look-up -> 404, or 405 with ``Allow`` (CORS is off: a preflight ``OPTIONS`` gets
   405 like any other unrouted method, and no ``Access-Control-*`` header is ever sent);
3. bearer token (``Authorization: Bearer``; RFC 6750) checked with the credential store's
   ``api`` scope and the owner still in the directory -> 401 + ``WWW-Authenticate: Bearer``
   (without the header, ``context.session`` may vouch for the web page's cookie); then the
   per-token (or per-session user) rate limit -> 429;
4. the body: size limit (``Content-Length`` first, then what was read) -> 413, media type
   -> 415, JSON -> 400, the route's JSON Schema (``jsonschema``, draft 2020-12, the dialect
   of OpenAPI 3.1) -> 422 with ``errors: [{pointer, message}]``; declared query arguments
   against their schemas -> 400 with ``field``;
5. the handler; its result is sent with the route's status, a :class:`Problem` as itself,
   a ``MailError`` mapped by :func:`problem_for` and anything else logged and sent as 500.

Every reply carries ``Cache-Control: no-store``, ``X-Content-Type-Options: nosniff``, a
``Content-Security-Policy`` that forbids everything (JSON is never a document) and
``Referrer-Policy: no-referrer``. A client that disconnects cancels its handler's Deferred.

The body size limit applies after twisted.web has received the body (it buffers bodies over
100 KiB in a temporary file, not in memory); refusing a large body before it is sent needs a
limit in the Site's request factory.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jsonschema import Draft202012Validator
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from mailserver.errors import (
    AlreadyExists,
    InvalidName,
    MailError,
    NoSuchDomain,
    NoSuchFolder,
    NoSuchMessage,
    NoSuchUser,
    QuotaExceeded,
)
from mailserver.web.api import auth_routes
from mailserver.web.api.context import ApiContext
from mailserver.web.api.openapi import openapi_route
from mailserver.web.api.routing import Call, Problem, Response, Route, Router

__all__ = ["ApiResource", "RateLimiter", "api_resource", "collect_routes", "problem_for"]

log = Logger(namespace="mailserver.web.api")

#: Endpoint modules (besides auth_routes) whose ROUTES the API serves.
ENDPOINT_MODULES = (
    "mailserver.web.api.mail",
    "mailserver.web.api.admin",
    "mailserver.web.api.tracking",
    "mailserver.web.api.session_routes",
    "mailserver.web.api.events",
)
#: Headers on every reply.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}
#: Seconds a client is told to wait after a temporary MailError (503).
TEMPORARY_RETRY_AFTER = 30
#: RFC 6750 §2.1 b64token.
_BEARER = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
_JSON_TYPE = re.compile(r"^application/(?:[\w.+-]+\+)?json$")
_REALM = 'Bearer realm="mailserver"'


def collect_routes(access_ttl: float = 900.0, refresh_ttl: float = 30 * 86400.0) -> list[Route]:
    """The routes of every endpoint module: auth (with these token lifetimes), then the
    ``ROUTES`` of :data:`ENDPOINT_MODULES`; a module that does not exist yet is skipped."""
    routes = list(auth_routes.make_routes(access_ttl, refresh_ttl))
    for name in ENDPOINT_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            continue
        routes.extend(module.ROUTES)
    return routes


class RateLimiter:
    """Token buckets by key on ``clock``: ``burst`` requests at once, refilled at ``rate``
    per second. At most ``max_keys`` buckets are kept (least recently used dropped).
    ``rate=None`` disables the limit."""

    def __init__(
        self, clock: Any, rate: float | None, burst: int, max_keys: int = 10_000
    ) -> None:
        if rate is not None and (rate <= 0 or burst < 1):
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")
        self.clock = clock
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Spend one request of ``key``: 0.0 when allowed, else the seconds to wait."""
        if self.rate is None:
            return 0.0
        now = float(self.clock.seconds())
        tokens, updated = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - updated) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


def _too_many(wait: float, what: str) -> Problem:
    seconds = max(1, math.ceil(wait))
    return Problem(
        429,
        "Too Many Requests",
        f"too many requests from this {what}; try again in {seconds} s",
        headers={"Retry-After": str(seconds)},
    )


def problem_for(error: MailError) -> Problem:
    """The problem a handler's MailError becomes (the client sees ``error.text``)."""
    text = str(error.text)
    names = {cls.__name__ for cls in type(error).__mro__}
    if "Forbidden" in names:
        return Problem(403, "Forbidden", text)
    if isinstance(error, NoSuchFolder | NoSuchMessage | NoSuchUser | NoSuchDomain):
        return Problem(404, "Not Found", text)
    if isinstance(error, AlreadyExists):
        return Problem(409, "Conflict", text)
    if isinstance(error, InvalidName):
        return Problem(400, "Bad Request", text)
    if isinstance(error, QuotaExceeded):
        return Problem(507, "Insufficient Storage", text)
    if error.temporary:
        return Problem(
            503,
            "Service Unavailable",
            text,
            headers={"Retry-After": str(TEMPORARY_RETRY_AFTER)},
        )
    return Problem(400, "Bad Request", text)


class ApiResource(Resource):
    """``/api/v1``: a leaf that dispatches every request below it to a :class:`Route`."""

    isLeaf = True

    def __init__(
        self,
        context: ApiContext,
        routes: Iterable[Route],
        *,
        rate: float | None = 10.0,
        burst: int = 60,
        ip_rate: float | None = 20.0,
        ip_burst: int = 120,
        max_body: int = 1 << 20,
        max_clients: int = 10_000,
    ) -> None:
        super().__init__()
        self.context = context
        self.router = Router(routes)
        self.max_body = max_body
        self.per_token = RateLimiter(context.reactor, rate, burst, max_clients)
        self.per_ip = RateLimiter(context.reactor, ip_rate, ip_burst, max_clients)
        self._validators: dict[int, Draft202012Validator] = {}
        self._query_validators: dict[int, dict[str, Draft202012Validator]] = {}
        for route, _ in self.router.routes:
            if route.body is not None:
                Draft202012Validator.check_schema(route.body)
                self._validators[id(route)] = Draft202012Validator(route.body)
            checks = {}
            for name, schema in route.query.items():
                Draft202012Validator.check_schema(schema)
                checks[name] = Draft202012Validator(schema)
            self._query_validators[id(route)] = checks

    # -- twisted.web entry point ------------------------------------------------------------

    def render(self, request: Any) -> Any:
        state = {"gone": False}
        running: list[Deferred[Any]] = []

        def gone(_: object) -> None:
            state["gone"] = True
            for working in running:
                working.cancel()

        # Registered first: a handler that finishes at once must not be watched too late.
        request.notifyFinish().addErrback(gone)
        working: Deferred[Any] = maybeDeferred(self._handle, request, state)
        running.append(working)
        working.addErrback(self._failed, request, state)
        return NOT_DONE_YET

    async def _handle_async(self, request: Any, state: dict[str, bool]) -> None:
        method = request.method.decode("ascii", "replace").upper()
        client_ip = _client_ip(request)
        wait = self.per_ip.take("ip:" + client_ip)
        if wait:
            raise _too_many(wait, "address")
        route, params = self.router.find(method, [s.decode("latin-1") for s in request.postpath])
        user, token = None, None
        if route.auth:
            user, token = await self._authenticate(request, client_ip)
            key = "user:" + user if token is None else hashlib.sha256(token.encode()).hexdigest()
            wait = self.per_token.take(key)
            if wait:
                raise _too_many(wait, "token")
        body = self._body(request, route)
        call = Call(
            request=request,
            context=self.context,
            user=user,
            scopes=frozenset({"api"}) if user else frozenset(),
            params=params,
            query=self._query(request, route),
            json=body,
            client_ip=client_ip,
            token=token,
        )
        result = await maybeDeferred(route.handler, call)
        if state["gone"]:
            return
        if isinstance(result, Response):
            await self._respond(request, result, state)
        elif route.status == 204:
            _send(request, 204, b"", None, {})
        else:
            _send(request, route.status, _json(result), "application/json", {})

    def _handle(self, request: Any, state: dict[str, bool]) -> Deferred[None]:
        return Deferred.fromCoroutine(self._handle_async(request, state))

    # -- steps -------------------------------------------------------------------------------

    async def _authenticate(self, request: Any, client_ip: str) -> tuple[str, str | None]:
        """(owner, token) of the request's bearer token (token None: the page's session
        cookie, through ``context.session``), or a 401 Problem."""
        header = request.getHeader(b"authorization")
        if not header and self.context.session is not None:
            owner = await maybeDeferred(self.context.session, request)
            if owner:
                return str(owner), None
        if not header:
            raise Problem(
                401, "Unauthorized", "this resource needs a bearer token",
                headers={"WWW-Authenticate": _REALM},
            )
        scheme, _, token = header.decode("latin-1").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not _BEARER.match(token):
            raise _invalid_token("the Authorization header is not a bearer token")
        owner = await self.context.credentials.check_token(token, "api", client_ip)
        if owner is None:
            raise _invalid_token("the token is unknown, expired or revoked")
        directory = self.context.directory
        if directory is not None and directory.get_user(owner) is None:
            raise _invalid_token("the token's account no longer exists")
        return str(owner), token

    def _body(self, request: Any, route: Route) -> Any:
        """The parsed and validated body, or None for a route that takes none."""
        limit = self.max_body
        length = request.getHeader(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise Problem(413, "Content Too Large", f"the body may have at most {limit} bytes")
        content = request.content
        raw = b""
        if content is not None:
            content.seek(0)
            raw = content.read(limit + 1)
        if len(raw) > limit:
            raise Problem(413, "Content Too Large", f"the body may have at most {limit} bytes")
        if route.body is None:
            return None
        if not raw.strip():
            if route.body_required:
                raise Problem(400, "Bad Request", "this request needs a JSON body")
            return None
        media = (request.getHeader(b"content-type") or b"").decode("latin-1")
        if not _JSON_TYPE.match(media.partition(";")[0].strip().lower()):
            raise Problem(415, "Unsupported Media Type", "send the body as application/json")
        try:
            document = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise Problem(400, "Bad Request", f"the body is not valid JSON: {error}") from None
        try:  # RFC 8259 §8.2: an unpaired surrogate escape is no Unicode text
            json.dumps(document, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise Problem(400, "Bad Request", "the body has an unpaired surrogate escape") from None
        errors = sorted(
            self._validators[id(route)].iter_errors(document),
            key=lambda e: list(map(str, e.absolute_path)),
        )
        if errors:
            listed = [
                {"pointer": _pointer(e.absolute_path), "message": e.message} for e in errors[:10]
            ]
            first = listed[0]
            raise Problem(
                422,
                "Unprocessable Content",
                f"{first['pointer'] or 'the body'}: {first['message']}",
                errors=listed,
            )
        return document

    def _query(self, request: Any, route: Route) -> dict[str, list[str]]:
        """The decoded query; arguments the route declares are checked against their
        schemas (after reading ``integer``/``number``/``boolean`` values as such): 400 with
        ``field`` naming the argument. Undeclared arguments are passed on unchecked."""
        query = _query(request)
        for name, validator in self._query_validators[id(route)].items():
            values = query.get(name)
            if not values:
                continue
            schema = validator.schema
            if schema.get("type") == "array":
                item_type = (schema.get("items") or {}).get("type")
                candidates = [[_typed(v, item_type, name) for v in values]]
            else:
                candidates = [_typed(v, schema.get("type"), name) for v in values]
            for candidate in candidates:
                error = next(iter(validator.iter_errors(candidate)), None)
                if error is not None:
                    raise Problem(400, "Bad Request", f"query parameter {name}: {error.message}",
                                  field=name)
        return query

    async def _respond(self, request: Any, response: Response, state: dict[str, bool]) -> None:
        headers = dict(response.headers)
        if response.stream is not None:
            request.setResponseCode(response.status)
            _headers(request, headers)
            if response.content_type:
                request.setHeader(b"content-type", response.content_type.encode("latin-1"))
            await maybeDeferred(response.stream, request)
            if not state["gone"] and not request.finished:
                request.finish()
            return
        if response.status == 204 or response.body is None and response.content_type is None:
            _send(request, response.status, b"", None, headers)
        elif response.content_type is not None:
            body = response.body
            data = body.encode("utf-8") if isinstance(body, str) else bytes(body or b"")
            _send(request, response.status, data, response.content_type, headers)
        else:
            _send(request, response.status, _json(response.body), "application/json", headers)

    def _failed(self, failure: Failure, request: Any, state: dict[str, bool]) -> None:
        """Send the problem ``failure`` stands for (unless the client went away)."""
        if state["gone"] or request.finished:
            if not failure.check(CancelledError):
                log.failure("API request failed after the client went away", failure)
            return
        error = failure.value
        if isinstance(error, Problem):
            problem = error
        elif isinstance(error, MailError):
            problem = problem_for(error)
        elif isinstance(error, UnauthorizedLogin):
            problem = Problem(401, "Unauthorized", "authentication failed",
                              headers={"WWW-Authenticate": _REALM})
        else:
            log.failure(
                "API {method} {path} failed", failure,
                method=request.method.decode("latin-1", "replace"),
                path=request.path.decode("latin-1", "replace"),
            )
            problem = Problem(500, "Internal Server Error", "the server failed; see its log")
        if request.startedWriting:  # a stream failed halfway: nothing more can be said
            request.loseConnection()
            return
        document = problem.document(request.path.decode("latin-1", "replace"))
        _send(request, problem.status, _json(document), "application/problem+json",
              problem.headers)


# -- helpers ----------------------------------------------------------------------------------


def _invalid_token(description: str) -> Problem:
    return Problem(
        401, "Unauthorized", description,
        headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token", '
                                     f'error_description="{description}"'},
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _pointer(path: Iterable[Any]) -> str:
    """An RFC 6901 JSON Pointer."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _client_ip(request: Any) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", "") or "")


def _query(request: Any) -> dict[str, list[str]]:
    try:
        return {
            key.decode("utf-8"): [v.decode("utf-8") for v in values]
            for key, values in (request.args or {}).items()
        }
    except UnicodeDecodeError:
        raise Problem(400, "Bad Request", "the query string is not UTF-8") from None


_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def _typed(value: str, kind: Any, name: str) -> Any:
    """A query argument as the JSON type its schema names (strings stay strings)."""
    try:
        if kind == "integer":
            if len(value) > 19 or not re.fullmatch(r"-?[0-9]+", value):
                raise ValueError
            return int(value)
        if kind == "number":
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
        if kind == "boolean":
            lowered = value.lower()
            if lowered not in _TRUE | _FALSE:
                raise ValueError
            return lowered in _TRUE
    except ValueError:
        raise Problem(400, "Bad Request", f"query parameter {name} must be a {kind}",
                      field=name) from None
    return value


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _headers(request: Any, headers: Mapping[str, str]) -> None:
    for name, value in {**SECURITY_HEADERS, **headers}.items():
        request.setHeader(name.encode("latin-1"), value.encode("latin-1"))


def _send(
    request: Any, status: int, body: bytes, content_type: str | None, headers: Mapping[str, str]
) -> None:
    request.setResponseCode(status)
    _headers(request, headers)
    if content_type is not None:
        request.setHeader(b"content-type", content_type.encode("latin-1"))
    if status != 204:
        request.setHeader(b"content-length", str(len(body)).encode("ascii"))
        request.write(body)
    request.finish()


def api_resource(
    context: ApiContext,
    *,
    routes: Sequence[Route] | None = None,
    rate: float | None = 10.0,
    burst: int = 60,
    ip_rate: float | None = 20.0,
    ip_burst: int = 120,
    max_body: int = 1 << 20,
    access_ttl: float = 900.0,
    refresh_ttl: float = 30 * 86400.0,
    max_clients: int = 10_000,
) -> ApiResource:
    """The ``/api/v1`` resource over ``context``.

    ``routes`` defaults to :func:`collect_routes` (with the token lifetimes ``access_ttl``
    and ``refresh_ttl``, seconds); ``GET /openapi.json`` is always added. Limits: ``rate``
    requests per second per token with bursts of ``burst``, ``ip_rate``/``ip_burst`` per
    client address (None: no limit), ``max_body`` bytes of request body, ``max_clients``
    buckets kept per limiter. Mount it as ``root.putChild(b"api", api)`` with
    ``api.putChild(b"v1", api_resource(...))``.
    """
    chosen = list(routes) if routes is not None else collect_routes(access_ttl, refresh_ttl)
    chosen.append(openapi_route(chosen))
    return ApiResource(
        context,
        chosen,
        rate=rate,
        burst=burst,
        ip_rate=ip_rate,
        ip_burst=ip_burst,
        max_body=max_body,
        max_clients=max_clients,
    )
