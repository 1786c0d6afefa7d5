"""Cookie sessions for the web mail page (``/mail/``): sign in, who am I, sign out.

The page is a browser document, so it does not keep a bearer token where scripts can read
it: ``POST /auth/session`` checks the password (and TOTP code) through the same guarded
check as ``POST /auth/login`` and puts an ``api``-scope CredentialStore token (issued like
the login route's, so it is listed, expires and is revoked like any token) into a cookie
the page's scripts cannot read.

Design rules:

1. **The cookie** is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's
   page makes the browser send it), ``Path=/`` and ``Secure``, named with the
   ``__Host-`` prefix (RFC 6265bis §4.1.3.2: the browser refuses it unless it is Secure,
   host-only and for ``/``). The one exception is local testing and development: a request
   that came over plain HTTP to a loopback address *and* names a loopback host
   (``127.0.0.1``, ``[::1]``, ``localhost``) gets the cookie without ``Secure`` (under the
   plain name ``mailsession``), since a browser drops a Secure cookie set over plain HTTP.
   A reverse proxy that forwards HTTPS on loopback keeps the public ``Host``, so its users
   still get the Secure cookie.
2. **CSRF**: the session's CSRF token is derived from the cookie's token
   (SHA-256 with a label, hex), given to the page in the JSON of ``POST``/``GET
   /auth/session`` (which another site's page cannot read: CORS is off) and required in the
   ``X-CSRF-Token`` header of every unsafe request (anything but GET/HEAD/OPTIONS) that
   rides on the cookie; a missing or wrong one is 403. It needs no server state and dies
   with the session. Requests with ``Authorization: Bearer`` never look at the cookie.
3. **Sign-in CSRF** (a hostile page signing the victim into the attacker's account) is
   refused by the API's body rules: the body must be ``application/json``, which a
   cross-site form cannot send and a cross-site ``fetch`` can only send after a CORS
   preflight the API refuses.
4. The session hook (:func:`session_hook`, installed as ``ApiContext.session`` by the
   wiring) answers with the cookie's account, or None (the app then says 401).
5. **The message frame** (``GET /folders/{folder}/messages/{uid}/frame``): the page shows a
   message's sanitised HTML in an ``<iframe sandbox>`` loaded from this route, not from
   ``srcdoc``, because a ``srcdoc`` (or blob) document inherits the page's policy, which
   allows neither the message's inline styles nor, after "show images", its remote images.
   The frame document carries its own policy (:func:`frame_policy`): no script, no
   connection, no form, no font or frame, inline styles only, images ``data:`` only, plus
   ``http:``/``https:`` with ``?images=1``, ``sandbox`` (an opaque origin even when opened
   on its own) and ``frame-ancestors 'self'``. It never sets ``\\Seen`` (the page's JSON
   read does).
"""

from __future__ import annotations

import hashlib
import hmac
import html as html_module
import ipaddress
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.threads import deferToThreadPool

from mailserver.errors import NoSuchMessage
from mailserver.web.api import render
from mailserver.web.api.auth_routes import ACCESS_SCOPE, SIGN_IN_BODY, signed_in
from mailserver.web.api.compose import account_of, uid_param
from mailserver.web.api.context import ApiContext
from mailserver.web.api.routing import Call, Problem, Response, Route

__all__ = [
    "COOKIE",
    "CSRF_HEADER",
    "LOCAL_COOKIE",
    "ROUTES",
    "SESSION_TTL",
    "csrf_token",
    "frame_policy",
    "make_routes",
    "session_hook",
]

#: The cookie over HTTPS (rule 1) and its name on plain loopback HTTP.
COOKIE = "__Host-mailsession"
LOCAL_COOKIE = "mailsession"
#: The request header carrying the CSRF token (rule 2).
CSRF_HEADER = "X-CSRF-Token"
#: Seconds a page session lasts (a new sign-in after that).
SESSION_TTL = 12 * 3600.0
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_CSRF_LABEL = b"mailserver web page csrf\0"
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})

_SESSION = {
    "type": "object",
    "properties": {
        "user": {"type": "string"},
        "csrf_token": {"type": "string"},
        "expires_in": {"type": "integer"},
    },
    "required": ["user", "csrf_token"],
}


def csrf_token(token: str) -> str:
    """The CSRF token of the session whose cookie holds ``token`` (rule 2)."""
    return hashlib.sha256(_CSRF_LABEL + token.encode("utf-8", "replace")).hexdigest()


def _is_loopback(host: str) -> bool:
    host = host.strip().lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(request: Any) -> str:
    """The host the browser asked for (the ``Host`` header without its port)."""
    raw = (request.getHeader(b"host") or b"").decode("latin-1").strip()
    if raw.startswith("["):
        return raw[: raw.find("]") + 1] if "]" in raw else raw
    return raw.rpartition(":")[0] if raw.count(":") == 1 else raw


def plain_loopback(request: Any) -> bool:
    """Whether ``request`` is the local exception of rule 1: plain HTTP, received on a
    loopback address, for a loopback host name."""
    if request.isSecure():
        return False
    local = getattr(request.getHost(), "host", "")
    return _is_loopback(str(local)) and _is_loopback(_host_name(request))


def _cookie_token(request: Any) -> str | None:
    for name in (COOKIE, LOCAL_COOKIE):
        value = request.getCookie(name.encode("ascii"))
        if value:
            text = value.decode("latin-1").strip()
            if 0 < len(text) <= 256 and text.isascii():
                return text
    return None


def _set_cookie(request: Any, value: str, max_age: int | None) -> None:
    local = plain_loopback(request)
    name = LOCAL_COOKIE if local else COOKIE
    request.addCookie(
        name.encode("ascii"),
        value.encode("ascii"),
        path=b"/",
        max_age=None if max_age is None else str(max_age).encode("ascii"),
        secure=not local,
        httpOnly=True,
        sameSite="strict",
    )


def _clear_cookies(request: Any) -> None:
    """Expire the session cookie (both names: the page may have switched schemes)."""
    for name in (COOKIE, LOCAL_COOKIE):
        if request.getCookie(name.encode("ascii")) is not None:
            request.addCookie(
                name.encode("ascii"), b"", path=b"/", max_age=b"0",
                expires=b"Thu, 01 Jan 1970 00:00:00 GMT",
                secure=name == COOKIE, httpOnly=True, sameSite="strict",
            )


def _check_csrf(request: Any, token: str) -> None:
    method = request.method.decode("ascii", "replace").upper()
    if method in _SAFE:
        return
    given = (request.getHeader(CSRF_HEADER.lower().encode("ascii")) or b"").decode(
        "latin-1", "replace"
    )
    if not given or not hmac.compare_digest(given.strip(), csrf_token(token)):
        raise Problem(403, "Forbidden",
                      f"a request signed in by the session cookie needs the {CSRF_HEADER} "
                      "header the session was given")


async def _owner(context: ApiContext, token: str, ip: str) -> str | None:
    owner = await context.credentials.check_token(token, ACCESS_SCOPE, ip)
    if owner is None:
        return None
    directory = context.directory
    if directory is not None and directory.get_user(owner) is None:
        return None
    return str(owner)


def _ip(request: Any) -> str:
    return str(getattr(request.getClientAddress(), "host", "") or "")


def session_hook(context: ApiContext) -> Any:
    """The ``ApiContext.session`` callable for ``context``: ``hook(request)`` fires with the
    account of the request's session cookie, or None (no cookie, or a token that is
    unknown, expired or revoked); an unsafe request without the right CSRF header fails
    with a 403 Problem (rule 2)."""

    def hook(request: Any) -> Deferred[str | None]:
        token = _cookie_token(request)
        if token is None:
            return succeed(None)
        _check_csrf(request, token)
        return ensureDeferred(_owner(context, token, _ip(request)))

    return hook


def frame_policy(images: bool) -> str:
    """The Content-Security-Policy of a message frame (rule 5)."""
    remote = " http: https:" if images else ""
    return (
        f"default-src 'none'; style-src 'unsafe-inline'; img-src data:{remote}; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'self'; sandbox"
    )


def _read(message: Any) -> bytes:
    with message.open() as source:
        data: bytes = source.read()
        return data


async def _frame(call: Call) -> Response:
    """The message's sanitised HTML as a document for the page's sandboxed frame."""
    images = (call.arg("images", "0") or "0").lower() in ("1", "true")
    message = account_of(call).folder(call.params["folder"]).message(uid_param(call))
    reactor = call.context.reactor
    pool = reactor.getThreadPool()
    try:
        data = await deferToThreadPool(reactor, pool, _read, message)
    except OSError:
        raise NoSuchMessage(detail="the message file is gone") from None
    rendered = await deferToThreadPool(reactor, pool, render.render, data, images=images)
    body = rendered.html
    if body is None:  # a text message: shown as text, escaped
        body = "<pre>" + html_module.escape(rendered.text or "") + "</pre>"
    document = (
        '<!doctype html><html><head><meta charset="utf-8">'
        '<meta name="referrer" content="no-referrer"></head><body>' + body + "</body></html>"
    )
    return Response(
        body=document,
        content_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": frame_policy(images)},
    )


_BOOL = {"type": "string", "enum": ["0", "1", "true", "false"]}


def make_routes(ttl: float = SESSION_TTL) -> list[Route]:
    """The session routes with sessions lasting ``ttl`` seconds."""

    async def sign_in(call: Call) -> Any:
        context = call.context
        user = await signed_in(call)
        token = await context.credentials.issue_token(
            user, {ACCESS_SCOPE}, ttl, name="web mail session"
        )
        _set_cookie(call.request, token, int(ttl))
        context.record("web_session", user, call.client_ip, "ok")
        return {"user": user, "csrf_token": csrf_token(token), "expires_in": int(ttl)}

    async def current(call: Call) -> Any:
        token = _cookie_token(call.request)
        owner = None if token is None else await _owner(call.context, token, call.client_ip)
        if token is None or owner is None:
            raise Problem(401, "Unauthorized", "not signed in")
        return {"user": owner, "csrf_token": csrf_token(token)}

    async def sign_out(call: Call) -> None:
        token = _cookie_token(call.request)
        if token is not None:
            _check_csrf(call.request, token)
            await call.context.credentials.revoke_token(token)
        _clear_cookies(call.request)

    return [
        Route("POST", "/auth/session", sign_in,
              "Sign the web page in: a session cookie and its CSRF token",
              auth=False, body=SIGN_IN_BODY, response=_SESSION, tag="auth", errors=(401,)),
        Route("GET", "/auth/session", current,
              "The web page's session: its user and CSRF token", auth=False,
              response=_SESSION, tag="auth", errors=(401,)),
        Route("DELETE", "/auth/session", sign_out,
              "Sign the web page out (needs the X-CSRF-Token header)", auth=False,
              status=204, tag="auth", errors=(403,)),
        Route("GET", "/folders/{folder}/messages/{uid:int}/frame", _frame,
              "The message's sanitised HTML as a document for the web page's sandboxed frame",
              tag="mail", query={"images": _BOOL}),
    ]


#: The session routes with the default lifetime (12 hours).
ROUTES = make_routes()
