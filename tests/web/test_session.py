"""The web page's cookie session (``/auth/session``) and the page's resource (``/mail/``),
through the real API server on 127.0.0.1."""

from __future__ import annotations

import io
from typing import Any

import pyotp
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest

from mailserver.web.api.session_routes import (
    COOKIE,
    LOCAL_COOKIE,
    csrf_token,
    frame_policy,
    plain_loopback,
    session_hook,
)
from mailserver.web.webmail import PAGE_CSP, WebmailResource

ALICE, PW = "alice@example.test", "pw-alice-1"


async def _signed_in(api: Any) -> tuple[str, str, str]:
    """(Set-Cookie header, cookie value, CSRF token) of a fresh session of Alice."""
    api.context.session = session_hook(api.context)
    await api.add_user(ALICE, PW)
    reply = await api.call("POST", "/auth/session", json_body={"username": ALICE, "password": PW})
    assert reply.status == 200, reply.body
    header = reply.headers["set-cookie"]
    value = header.split(";", 1)[0].partition("=")[2]
    return header, value, reply.json["csrf_token"]


def _cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"{LOCAL_COOKIE}={value}"}


@pytest_twisted.ensureDeferred
async def test_sign_in_sets_an_httponly_strict_cookie_and_gives_its_csrf_token(api):
    """Over plain HTTP on loopback the cookie is ``mailsession``, HttpOnly, SameSite=Strict,
    Path=/, without Secure; the reply's CSRF token is the one derived from it, and the
    cookie alone signs safe requests in."""
    header, value, csrf = await _signed_in(api)
    attributes = [a.strip().lower() for a in header.split(";")]
    assert header.startswith(f"{LOCAL_COOKIE}=")
    assert "httponly" in attributes and "samesite=strict" in attributes
    assert "path=/" in attributes and "secure" not in attributes
    assert csrf == csrf_token(value)
    me = await api.call("GET", "/me", headers=_cookie(value))
    assert me.status == 200 and me.json["address"] == ALICE
    again = await api.call("GET", "/auth/session", headers=_cookie(value))
    assert again.status == 200 and again.json == {"user": ALICE, "csrf_token": csrf}
    assert (await api.call("GET", "/me")).status == 401
    assert (await api.call("GET", "/auth/session")).status == 401
    forged = await api.call("GET", "/me", headers=_cookie("x" * 43))
    assert forged.status == 401


@pytest_twisted.ensureDeferred
async def test_unsafe_requests_on_the_cookie_need_the_csrf_header(api):
    """A POST riding on the cookie without X-CSRF-Token, or with a wrong one, is 403 and
    changes nothing; with the session's token it works."""
    _, value, csrf = await _signed_in(api)
    body = {"name": "phone"}
    missing = await api.call("POST", "/me/app-passwords", json_body=body, headers=_cookie(value))
    assert missing.status == 403 and "X-CSRF-Token" in missing.json["detail"]
    wrong = await api.call("POST", "/me/app-passwords", json_body=body,
                           headers={**_cookie(value), "X-CSRF-Token": csrf_token("other")})
    assert wrong.status == 403
    assert api.credentials.list_app_passwords(ALICE) == []
    right = await api.call("POST", "/me/app-passwords", json_body=body,
                           headers={**_cookie(value), "X-CSRF-Token": csrf})
    assert right.status == 201, right.body
    assert [a.name for a in api.credentials.list_app_passwords(ALICE)] == ["phone"]


@pytest_twisted.ensureDeferred
async def test_sign_out_needs_the_csrf_header_then_revokes_the_token(api):
    """DELETE /auth/session without the CSRF header is 403; with it, 204, the cookie is
    expired and its token no longer signs anything in."""
    _, value, csrf = await _signed_in(api)
    refused = await api.call("DELETE", "/auth/session", headers=_cookie(value))
    assert refused.status == 403
    assert (await api.call("GET", "/me", headers=_cookie(value))).status == 200
    done = await api.call("DELETE", "/auth/session",
                          headers={**_cookie(value), "X-CSRF-Token": csrf})
    assert done.status == 204
    assert "max-age=0" in done.headers["set-cookie"].lower()
    assert (await api.call("GET", "/me", headers=_cookie(value))).status == 401
    assert await api.credentials.check_token(value, "api") is None


@pytest_twisted.ensureDeferred
async def test_wrong_password_sets_no_cookie_and_totp_accounts_ask_for_the_code(api):
    """A wrong password is 401 without a cookie; an account with TOTP answers the password
    alone with 401 ``totp_required`` and signs in with password and code."""
    api.context.session = session_hook(api.context)
    await api.add_user(ALICE, PW)
    wrong = await api.call("POST", "/auth/session",
                           json_body={"username": ALICE, "password": "nope"})
    assert wrong.status == 401 and "set-cookie" not in wrong.headers
    enrolment = await api.context.credentials.enable_totp(ALICE)
    secret = enrolment.secret
    codes = await api.context.credentials.confirm_totp(
        ALICE, pyotp.TOTP(secret).at(reactor.seconds() - 30)
    )
    assert codes
    bare = await api.call("POST", "/auth/session", json_body={"username": ALICE, "password": PW})
    assert bare.status == 401 and bare.json["totp_required"] is True
    assert "set-cookie" not in bare.headers
    signed = await api.call("POST", "/auth/session", json_body={
        "username": ALICE, "password": PW, "totp": pyotp.TOTP(secret).now()})
    assert signed.status == 200 and signed.json["user"] == ALICE


@pytest_twisted.ensureDeferred
async def test_a_form_post_cannot_sign_in(api):
    """Sign-in needs a JSON body, which a cross-site HTML form cannot send (rule 3)."""
    api.context.session = session_hook(api.context)
    await api.add_user(ALICE, PW)
    form = await api.call(
        "POST", "/auth/session", data=f"username={ALICE}&password={PW}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status == 415 and "set-cookie" not in form.headers


@pytest.mark.parametrize(
    ("local", "host", "secure", "expected"),
    [
        ("127.0.0.1", b"127.0.0.1:8080", False, True),
        ("127.0.0.1", b"localhost:8080", False, True),
        ("127.0.0.1", b"[::1]:8080", False, True),
        ("127.0.0.1", b"mail.example.test", False, False),  # a proxy keeps the public Host
        ("127.0.0.1", b"127.0.0.1", True, False),
        ("192.0.2.1", b"127.0.0.1", False, False),
    ],
)
def test_only_plain_loopback_http_gets_a_cookie_without_secure(
    local: str, host: bytes, secure: bool, expected: bool
) -> None:
    """Secure is left off only for plain HTTP received on loopback for a loopback host."""
    request = DummyRequest([b""])
    request.requestHeaders.setRawHeaders(b"host", [host])
    request.getHost = lambda: IPv4Address("TCP", local, 8080)  # type: ignore[method-assign]
    request.isSecure = lambda: secure  # type: ignore[method-assign]
    assert plain_loopback(request) is expected


@pytest_twisted.ensureDeferred
async def test_a_public_host_gets_the_secure_host_prefixed_cookie(api):
    """Asked for by a non-loopback host name, the cookie is ``__Host-mailsession`` with
    Secure (the browser would refuse it over plain HTTP, as it should)."""
    api.context.session = session_hook(api.context)
    await api.add_user(ALICE, PW)
    reply = await api.call("POST", "/auth/session",
                           json_body={"username": ALICE, "password": PW},
                           headers={"Host": "mail.example.test"})
    assert reply.status == 200
    header = reply.headers["set-cookie"]
    assert header.startswith(f"{COOKIE}=")
    assert "secure" in [a.strip().lower() for a in header.split(";")]


@pytest_twisted.ensureDeferred
async def test_the_page_is_served_with_a_strict_content_security_policy() -> None:
    """/mail/ is the page with the strict CSP and no framing; its script and style sheet
    are served with their types; /mail redirects to /mail/; other paths are 404."""
    root = Resource()
    root.putChild(b"mail", WebmailResource())
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}"
    try:
        page = await treq.get(base + "/mail/", persistent=False)
        body = await page.content()
        assert page.code == 200 and b'<script src="app.js"' in body
        assert page.headers.getRawHeaders("content-security-policy") == [PAGE_CSP]
        assert "script-src 'self'" in PAGE_CSP and "frame-ancestors 'none'" in PAGE_CSP
        assert b"unsafe-inline" not in PAGE_CSP.encode()
        assert page.headers.getRawHeaders("x-frame-options") == ["DENY"]
        script = await treq.get(base + "/mail/app.js", persistent=False)
        await script.content()
        assert script.headers.getRawHeaders("content-type")[0].startswith("text/javascript")
        moved = await treq.get(base + "/mail", allow_redirects=False, persistent=False)
        await moved.content()
        assert moved.code == 301 and moved.headers.getRawHeaders("location") == ["/mail/"]
        missing = await treq.get(base + "/mail/../etc/passwd", persistent=False)
        await missing.content()
        assert missing.code == 404
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_the_message_frame_has_its_own_strict_policy(api):
    """GET .../frame is the sanitised HTML as a document whose policy allows no script
    and no remote image, and remote images (only) with ?images=1; it leaves \\Seen alone."""
    _, value, _ = await _signed_in(api)
    await api.storage.store.create_account(ALICE)
    html = ('<p onclick="x()">Hi</p><script>alert(1)</script>'
            '<img src="https://tracker.example/a.gif">')
    raw = ("From: bob@example.test\r\nTo: alice@example.test\r\nSubject: s\r\n"
           "Content-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n").encode()
    inbox = api.storage.store.account(ALICE).folder("INBOX")
    uid = await inbox.append(io.BytesIO(raw))
    path = f"/folders/INBOX/messages/{uid}/frame"
    blocked = await api.call("GET", path, headers=_cookie(value))
    assert blocked.status == 200, blocked.body
    assert blocked.headers["content-type"] == "text/html; charset=utf-8"
    assert blocked.headers["content-security-policy"] == frame_policy(False)
    assert "script-src" not in frame_policy(False) and "sandbox" in frame_policy(False)
    assert b"<script" not in blocked.body and b"onclick" not in blocked.body
    assert b"tracker.example" not in blocked.body and b">Hi</p>" in blocked.body
    shown = await api.call("GET", path + "?images=1", headers=_cookie(value))
    assert shown.headers["content-security-policy"] == frame_policy(True)
    assert "img-src data: http: https:" in frame_policy(True)
    assert b"https://tracker.example/a.gif" in shown.body
    assert [f.flags for f in inbox.flags()] == [frozenset()]
