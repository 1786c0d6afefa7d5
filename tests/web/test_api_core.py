"""The API's dispatch through a real Site: problems, routing, auth, limits, OpenAPI."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from mailserver.errors import (
    AlreadyExists,
    InvalidName,
    MailboxFull,
    MailError,
    NoSuchFolder,
    StoreUnavailable,
)
from mailserver.web.api.app import RateLimiter, collect_routes, problem_for
from mailserver.web.api.openapi import build_document
from mailserver.web.api.routing import PathPattern, Problem, Response, Route, Router

ALICE, PW = "alice@example.test", "pw-alice-1"


def _routes_for_tests() -> list[Route]:
    def echo(call):
        return {"params": call.params, "json": call.json, "user": call.user}

    def boom(call):
        raise RuntimeError("secret internal detail")

    def mail_error(call):
        raise NoSuchFolder("no folder Foo")

    def raw(call):
        return Response(201, b"hello", content_type="text/plain", headers={"X-Test": "1"})

    body = {
        "type": "object",
        "properties": {"n": {"type": "integer", "maximum": 10}},
        "required": ["n"],
        "additionalProperties": False,
    }
    return [
        Route("GET", "/things/{name}/items/{uid:int}", echo, "echo", auth=False),
        Route("GET", "/things/special/items/{uid:int}", echo, "literal wins", auth=False,
              tag="x"),
        Route("POST", "/things", echo, "validated body", auth=False, body=body),
        Route("GET", "/boom", boom, "fails", auth=False),
        Route("GET", "/missing", mail_error, "MailError", auth=False),
        Route("GET", "/raw", raw, "raw bytes", auth=False),
        Route("GET", "/private", echo, "needs a token"),
        Route("GET", "/search", lambda call: call.query, "typed query", auth=False, query={
            "limit": {"type": "integer", "minimum": 1, "maximum": 50},
            "sort": {"type": "string", "enum": ["date", "size"]},
            "peek": {"type": "boolean"},
        }),
    ]


# -- units ------------------------------------------------------------------------------------


def test_pattern_decodes_parameters_and_keeps_encoded_slashes():
    """A folder name with %2F stays one parameter; ints are converted."""
    pattern = PathPattern("/folders/{folder}/messages/{uid:int}")
    assert pattern.match(["folders", "a%2Fb%C3%A9", "messages", "42"]) == {
        "folder": "a/bé",
        "uid": 42,
    }
    assert pattern.match(["folders", "x", "messages", "4x"]) is None
    assert pattern.match(["folders", "%FF", "messages", "1"]) is None
    assert pattern.openapi_path() == "/folders/{folder}/messages/{uid}"


@pytest.mark.parametrize("bad", ["", "x", "/a/", "/a/{b", "/{x}/{x}", "/a//b"])
def test_bad_patterns_are_refused(bad):
    """A malformed pattern fails when the route is made, not when it is called."""
    with pytest.raises(ValueError):
        PathPattern(bad)


@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4))
def test_router_never_crashes_on_any_path(segments):
    """Any path gives a route or a 404/405 Problem."""
    router = Router(_routes_for_tests())
    try:
        router.find("GET", segments)
    except Problem as problem:
        assert problem.status in (404, 405)


def test_rate_limiter_refills_on_the_clock():
    """A burst passes, the next waits 1/rate, and time refills the bucket."""
    clock = Clock()
    limiter = RateLimiter(clock, rate=2.0, burst=3)
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("k") == pytest.approx(0.5)
    assert limiter.take("other") == 0.0
    clock.advance(1.0)
    assert limiter.take("k") == 0.0


def test_rate_limiter_keeps_a_bounded_number_of_keys():
    limiter = RateLimiter(Clock(), rate=1.0, burst=1, max_keys=5)
    for i in range(50):
        limiter.take(str(i))
    assert len(limiter._buckets) == 5


@pytest.mark.parametrize(
    "error,status",
    [
        (NoSuchFolder(), 404),
        (AlreadyExists(), 409),
        (InvalidName(), 400),
        (MailboxFull(), 507),
        (StoreUnavailable(), 503),
        (MailError("permanent"), 503),
    ],
)
def test_mail_errors_map_to_statuses(error, status):
    assert problem_for(error).status == status


# -- through the server ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_bad_json_is_a_problem(api_server):
    """Malformed JSON gets a 400 problem document, not a traceback."""
    api = await api_server(routes=_routes_for_tests())
    reply = await api.call("POST", "/things", data=b'{"n": ', headers={
        "Content-Type": "application/json"})
    assert reply.status == 400
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json["status"] == 400 and "not valid JSON" in reply.json["detail"]
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["x-content-type-options"] == "nosniff"


@pytest_twisted.ensureDeferred
async def test_schema_violations_are_422_with_pointers(api_server):
    api = await api_server(routes=_routes_for_tests())
    reply = await api.call("POST", "/things", json_body={"n": 11, "extra": 1})
    assert reply.status == 422
    pointers = {e["pointer"] for e in reply.json["errors"]}
    assert "/n" in pointers
    ok = await api.call("POST", "/things", json_body={"n": 3})
    assert ok.status == 200 and ok.json["json"] == {"n": 3}
    wrong_type = await api.call("POST", "/things", data=b'{"n": 1}',
                                headers={"Content-Type": "text/plain"})
    assert wrong_type.status == 415
    empty = await api.call("POST", "/things")
    assert empty.status == 400


@pytest_twisted.ensureDeferred
async def test_unknown_route_is_404_and_wrong_method_405_with_allow(api_server):
    api = await api_server(routes=_routes_for_tests())
    missing = await api.call("GET", "/nowhere")
    assert missing.status == 404 and missing.json["title"] == "Not Found"
    wrong = await api.call("DELETE", "/things")
    assert wrong.status == 405 and wrong.headers["allow"] == "POST"
    preflight = await api.call("OPTIONS", "/things", headers={
        "Origin": "https://evil.test", "Access-Control-Request-Method": "POST"})
    assert preflight.status == 405
    assert not [h for h in preflight.headers if h.startswith("access-control")]


@pytest_twisted.ensureDeferred
async def test_parameters_literals_and_raw_responses(api_server):
    api = await api_server(routes=_routes_for_tests())
    reply = await api.call("GET", "/things/a%2Fb/items/7")
    assert reply.json["params"] == {"name": "a/b", "uid": 7}
    literal = await api.call("GET", "/things/special/items/8")
    assert literal.status == 200 and literal.json["params"] == {"uid": 8}
    raw = await api.call("GET", "/raw")
    assert (raw.status, raw.body, raw.headers["x-test"]) == (201, b"hello", "1")
    assert raw.headers["content-type"] == "text/plain"


@pytest_twisted.ensureDeferred
async def test_unexpected_errors_are_500_without_details(api_server):
    api = await api_server(routes=_routes_for_tests())
    reply = await api.call("GET", "/boom")
    assert reply.status == 500
    assert b"secret internal detail" not in reply.body and b"Traceback" not in reply.body
    mail = await api.call("GET", "/missing")
    assert mail.status == 404 and mail.json["detail"] == "no folder Foo"


@pytest_twisted.ensureDeferred
async def test_body_too_large_is_413(api_server):
    api = await api_server(routes=_routes_for_tests(), max_body=64)
    reply = await api.call("POST", "/things", data=b'{"n": 1' + b" " * 100 + b"}",
                           headers={"Content-Type": "application/json"})
    assert reply.status == 413 and reply.json["status"] == 413


@pytest_twisted.ensureDeferred
async def test_missing_bad_expired_and_revoked_tokens_are_401(api_server):
    """Every failed token check is 401 with WWW-Authenticate: Bearer."""
    api = await api_server(routes=_routes_for_tests())
    await api.add_user(ALICE, PW)
    none = await api.call("GET", "/private")
    assert none.status == 401 and none.headers["www-authenticate"].startswith("Bearer")
    basic = await api.call("GET", "/private", headers={"Authorization": "Basic eDp5"})
    assert basic.status == 401 and 'error="invalid_token"' in basic.headers["www-authenticate"]
    unknown = await api.call("GET", "/private", token="x" * 43)
    assert unknown.status == 401
    token = await api.credentials.issue_token(ALICE, {"api"}, ttl=60)
    good = await api.call("GET", "/private", token=token)
    assert good.status == 200 and good.json["user"] == ALICE
    api.credentials._clock = Clock()  # expire: a clock far in the future
    api.credentials._clock.advance(api.context.reactor.seconds() + 3600)
    expired = await api.call("GET", "/private", token=token)
    assert expired.status == 401
    api.credentials._clock = api.context.reactor
    imap_only = await api.credentials.issue_token(ALICE, {"imap"}, ttl=60)
    assert (await api.call("GET", "/private", token=imap_only)).status == 401
    await api.credentials.revoke_token(token)
    revoked = await api.call("GET", "/private", token=token)
    assert revoked.status == 401 and "Bearer" in revoked.headers["www-authenticate"]


@pytest_twisted.ensureDeferred
async def test_rate_limits_give_429_with_retry_after(api_server):
    """A small per-IP burst: the requests after it are 429 with Retry-After."""
    api = await api_server(routes=_routes_for_tests(), ip_rate=0.01, ip_burst=3)
    statuses = [(await api.call("GET", "/raw")).status for _ in range(5)]
    assert statuses[:3] == [201, 201, 201] and statuses[3:] == [429, 429]
    limited = await api.call("GET", "/raw")
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["content-type"] == "application/problem+json"


@pytest_twisted.ensureDeferred
async def test_rate_limit_per_token(api_server):
    api = await api_server(routes=_routes_for_tests(), rate=0.01, burst=2)
    await api.add_user(ALICE, PW)
    token = await api.credentials.issue_token(ALICE, {"api"}, ttl=60)
    other = await api.credentials.issue_token(ALICE, {"api"}, ttl=60)
    statuses = [(await api.call("GET", "/private", token=token)).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert (await api.call("GET", "/private", token=other)).status == 200


@pytest_twisted.ensureDeferred
async def test_openapi_document_lists_every_route_and_is_valid(api):
    reply = await api.call("GET", "/openapi.json")
    assert reply.status == 200
    document = json.loads(reply.body)
    operations = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
    }
    for route in collect_routes():
        assert (route.method, PathPattern(route.pattern).openapi_path()) in operations
    assert ("GET", "/openapi.json") in operations
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(document)


def test_openapi_of_test_routes_is_valid():
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(build_document(_routes_for_tests()))


@pytest_twisted.ensureDeferred
async def test_session_hook_vouches_for_a_cookie_without_a_token(api_server):
    """Without an Authorization header, context.session may name the user (the web page)."""

    def session(request):
        return ALICE if request.getHeader(b"cookie") == b"s=good" else None

    api = await api_server(routes=_routes_for_tests(), session=session)
    await api.add_user(ALICE, PW)
    good = await api.call("GET", "/private", headers={"Cookie": "s=good"})
    assert good.status == 200 and good.json["user"] == ALICE
    bad = await api.call("GET", "/private", headers={"Cookie": "s=bad"})
    assert bad.status == 401


@pytest_twisted.ensureDeferred
async def test_declared_query_arguments_are_checked(api_server):
    """A declared argument outside its schema is 400 naming the field; others pass as text."""
    api = await api_server(routes=_routes_for_tests())
    ok = await api.call("GET", "/search?limit=5&sort=size&peek=1&other=x")
    assert ok.status == 200
    assert ok.json == {"limit": ["5"], "sort": ["size"], "peek": ["1"], "other": ["x"]}
    for query, field in [("limit=0", "limit"), ("limit=abc", "limit"), ("sort=color", "sort"),
                         ("peek=maybe", "peek"), ("limit=99999999999999999999", "limit")]:
        bad = await api.call("GET", "/search?" + query)
        assert bad.status == 400 and bad.json["field"] == field, query
    bad_utf8 = await api.call("GET", "/search?sort=%FF")
    assert bad_utf8.status == 400


@pytest_twisted.ensureDeferred
async def test_head_is_answered_like_get_without_a_body(api_server):
    api = await api_server(routes=_routes_for_tests())
    head = await api.call("HEAD", "/raw")
    assert head.status == 201 and head.body == b""
    wrong = await api.call("PUT", "/raw")
    assert wrong.status == 405 and wrong.headers["allow"] == "GET, HEAD"


@pytest_twisted.ensureDeferred
async def test_a_client_that_goes_away_cancels_its_handler(api_server):
    """The handler's Deferred is cancelled when the connection closes mid-request."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from twisted.internet.protocol import Protocol

    started: Deferred[None] = Deferred()
    cancelled: Deferred[None] = Deferred()

    def slow(call):
        waiting: Deferred[None] = Deferred(lambda d: cancelled.callback(None))
        started.callback(None)
        return waiting

    api = await api_server(routes=[Route("GET", "/slow", slow, "never answers", auth=False)])
    port = api.port.getHost().port
    client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Protocol())
    client.transport.write(b"GET /api/v1/slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await started
    client.transport.loseConnection()
    await cancelled.addTimeout(10, reactor)
    assert cancelled.called
