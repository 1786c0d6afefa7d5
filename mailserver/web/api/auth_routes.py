"""Log-in, tokens, and the signed-in user's own credentials (app passwords, TOTP).

**Tokens.** ``POST /auth/login`` checks the account password through
``context.authenticate`` (throttle and audit included) and answers with a pair: a short-lived
*access* token (scope ``api``, ``access_ttl`` seconds) sent as ``Authorization: Bearer``,
and a longer *refresh* token (scope ``api-refresh``, ``refresh_ttl``) good only for
``POST /auth/refresh``. Both are CredentialStore tokens, so they are stored as keyed hashes,
listed with the user's tokens and revoked like them. Refreshing *rotates*: the refresh token
used is revoked before the new pair is issued, so each works once (a second use, by a thief
or a replay, gets 401). ``POST /auth/logout`` revokes the access token presented and, when
given, its refresh token.

**Two factors.** For an account with TOTP on, the password alone is answered with
401 and ``"totp_required": true`` (only after the password checked, so this says nothing to
someone without it); the client asks for the code and logs in again with ``totp`` (a
six-digit code or a recovery code). The code is checked by the guarded password check
(``CredentialStore.verify_second_factor``), so wrong codes are throttled and audited like
wrong passwords.

The lifetimes are parameters: :func:`make_routes` builds the routes for them; ``ROUTES``
has the defaults.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.error import UnauthorizedLogin

from mailserver.types import Role
from mailserver.web.api.routing import Call, Problem, Route

__all__ = ["REFRESH_SCOPE", "ROUTES", "make_routes"]

#: The scope of refresh tokens: accepted by nothing but POST /auth/refresh.
REFRESH_SCOPE = "api-refresh"
ACCESS_SCOPE = "api"
#: Seconds a client is told to wait after a throttled log-in.
THROTTLED_RETRY_AFTER = 60

_STRING = {"type": "string", "minLength": 1, "maxLength": 1024}
_TOKEN_PAIR = {
    "type": "object",
    "properties": {
        "access_token": {"type": "string"},
        "token_type": {"const": "Bearer"},
        "expires_in": {"type": "integer"},
        "refresh_token": {"type": "string"},
        "refresh_expires_in": {"type": "integer"},
    },
    "required": ["access_token", "token_type", "expires_in", "refresh_token"],
}
#: The body :func:`signed_in` reads (the token login and the page's session).
SIGN_IN_BODY = {
    "type": "object",
    "properties": {"username": _STRING, "password": _STRING, "totp": _STRING},
    "required": ["username", "password"],
    "additionalProperties": False,
}
_REFRESH = {
    "type": "object",
    "properties": {"refresh_token": _STRING},
    "required": ["refresh_token"],
    "additionalProperties": False,
}
_LOGOUT = {
    "type": "object",
    "properties": {"refresh_token": _STRING},
    "additionalProperties": False,
}
_ME = {
    "type": "object",
    "properties": {
        "address": {"type": "string"},
        "roles": {"type": "array", "items": {"enum": [r.value for r in Role]}},
        "totp_enabled": {"type": "boolean"},
        "admin_domains": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["address", "roles", "totp_enabled"],
}
_SCOPES = {
    "type": "array",
    "items": {"enum": ["smtp", "imap", "pop3", "api"]},
    "minItems": 1,
    "uniqueItems": True,
}
_APP_PASSWORD = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "created": {"type": "number"},
        "expires": {"type": ["number", "null"]},
        "last_used": {"type": ["number", "null"]},
        "last_ip": {"type": "string"},
    },
    "required": ["id", "name", "scopes", "created"],
}
_NEW_APP_PASSWORD = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 64},
        "scopes": _SCOPES,
        "expires_in": {"type": "integer", "minimum": 1},
    },
    "required": ["name"],
    "additionalProperties": False,
}
_CODE = {
    "type": "object",
    "properties": {"code": {"type": "string", "minLength": 1, "maxLength": 64}},
    "required": ["code"],
    "additionalProperties": False,
}


def _second_factor(error: BaseException) -> bool:
    """The guarded check's "password right, code missing or wrong" (SecondFactorRequired,
    recognised by its attributes: the web package may not import mailserver.auth)."""
    return bool(getattr(error, "tell_user", False)) and not getattr(error, "temporary", False)


async def signed_in(call: Call) -> str:
    """The account of a sign-in body {username, password, totp?} (the token login and the
    page's session share it), or the problem to answer: 429 when throttled, 401 with
    ``totp_required`` when the two-factor code is missing or wrong, else 401."""
    body = call.json
    otp = body.get("totp")
    context = call.context
    try:
        user: str = await context.authenticate(
            body["username"], body["password"], ip=call.client_ip, otp=otp
        )
    except UnauthorizedLogin as error:
        if getattr(error, "temporary", False):
            raise Problem(
                429, "Too Many Requests", str(error) or "too many failed log-ins",
                headers={"Retry-After": str(THROTTLED_RETRY_AFTER)},
            ) from None
        if _second_factor(error):
            raise Problem(
                401, "Second factor required",
                "this account uses two-factor authentication: give the code of the "
                "authenticator app (as 'totp')"
                if not otp else "the two-factor code is wrong or was used already",
                totp_required=True,
            ) from None
        raise Problem(401, "Unauthorized", "wrong user name or password") from None
    # A safety belt: the guarded check must be TOTP-aware (see ApiContext.authenticate).
    if not otp and context.credentials.totp_enabled(user):
        raise Problem(401, "Second factor required",
                      "give the code of the authenticator app (as 'totp')", totp_required=True)
    return user


async def _issue_pair(call: Call, user: str, access_ttl: float, refresh_ttl: float) -> Any:
    credentials = call.context.credentials
    access = await credentials.issue_token(user, {ACCESS_SCOPE}, access_ttl, name="api access")
    refresh = await credentials.issue_token(
        user, {REFRESH_SCOPE}, refresh_ttl, name="api refresh"
    )
    return {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": int(access_ttl),
        "refresh_token": refresh,
        "refresh_expires_in": int(refresh_ttl),
    }


def make_routes(access_ttl: float = 900.0, refresh_ttl: float = 30 * 86400.0) -> list[Route]:
    """The auth routes with these token lifetimes (seconds)."""

    async def login(call: Call) -> Any:
        user = await signed_in(call)
        return await _issue_pair(call, user, access_ttl, refresh_ttl)

    async def refresh(call: Call) -> Any:
        credentials = call.context.credentials
        token = call.json["refresh_token"]
        owner = await credentials.check_token(token, REFRESH_SCOPE, call.client_ip)
        directory = call.context.directory
        if owner is None or (directory is not None and directory.get_user(owner) is None):
            raise Problem(401, "Unauthorized", "the refresh token is unknown, expired or used")
        if not await credentials.revoke_token(token):  # rotation: each works once
            raise Problem(401, "Unauthorized", "the refresh token was used already")
        return await _issue_pair(call, str(owner), access_ttl, refresh_ttl)

    async def logout(call: Call) -> None:
        credentials = call.context.credentials
        if call.token is not None:  # (a cookie session is ended by the page's own route)
            await credentials.revoke_token(call.token)
        given = (call.json or {}).get("refresh_token")
        if given:
            owner = await credentials.check_token(given, REFRESH_SCOPE, call.client_ip)
            if owner == call.user:
                await credentials.revoke_token(given)

    return [
        Route("POST", "/auth/login", login, "Log in: a bearer token and a refresh token",
              auth=False, body=SIGN_IN_BODY, response=_TOKEN_PAIR, tag="auth", errors=(401,)),
        Route("POST", "/auth/refresh", refresh,
              "A new token pair for a refresh token (which is used up)",
              auth=False, body=_REFRESH, response=_TOKEN_PAIR, tag="auth", errors=(401,)),
        Route("POST", "/auth/logout", logout, "Revoke this token (and a refresh token)",
              body=_LOGOUT, body_required=False, status=204, tag="auth"),
        *_ME_ROUTES,
    ]


# -- the signed-in user ----------------------------------------------------------------------


def _me(call: Call) -> Any:
    user = call.context.directory.get_user(call.user)
    if user is None:
        raise Problem(404, "Not Found", "the account no longer exists")
    return {
        "address": user.address,
        "roles": sorted(r.value for r in user.roles),
        "totp_enabled": call.context.credentials.totp_enabled(user.address),
        "admin_domains": sorted(user.admin_domains),
    }


def _app_password_json(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "scopes": sorted(record.scopes),
        "created": record.created,
        "expires": record.expires,
        "last_used": record.last_used,
        "last_ip": record.last_ip,
    }


def _list_app_passwords(call: Call) -> Any:
    return [_app_password_json(a) for a in call.context.credentials.list_app_passwords(call.user)]


async def _add_app_password(call: Call) -> Any:
    context = call.context
    body = call.json
    scopes = body.get("scopes") or ["smtp", "imap", "pop3"]
    expires = None
    if body.get("expires_in"):
        expires = float(context.reactor.seconds()) + body["expires_in"]
    ident, plaintext = await context.credentials.add_app_password(
        call.user, body["name"], scopes, expires
    )
    context.record("app_password_added", call.user, call.client_ip, "ok", name=body["name"])
    return {"id": ident, "name": body["name"].strip(), "password": plaintext,
            "scopes": sorted(scopes), "expires": expires}


async def _revoke_app_password(call: Call) -> None:
    ident = call.params["id"].strip().lower()
    # ids are 8 hex digits; anything else is no app password (and not ASCII-safe to store)
    if len(ident) != 8 or not all(c in "0123456789abcdef" for c in ident):
        raise Problem(404, "Not Found", "no such app password")
    if not await call.context.credentials.revoke(call.user, ident):
        raise Problem(404, "Not Found", f"no app password {ident}")
    call.context.record("app_password_revoked", call.user, call.client_ip, "ok", id=ident)


async def _enrol_totp(call: Call) -> Any:
    enrolment = await call.context.credentials.enable_totp(call.user)
    return {"secret": enrolment.secret, "uri": enrolment.uri}


async def _confirm_totp(call: Call) -> Any:
    credentials = call.context.credentials
    if not credentials.totp_pending(call.user):
        raise Problem(409, "Conflict", "no two-factor enrolment is waiting: POST /me/totp first")
    codes = await credentials.confirm_totp(call.user, call.json["code"])
    if codes is None:
        raise Problem(400, "Bad Request", "the code is wrong; check the device's clock")
    call.context.record("totp_enabled", call.user, call.client_ip, "ok")
    return {"recovery_codes": codes}


async def _disable_totp(call: Call) -> None:
    credentials = call.context.credentials
    if not credentials.totp_enabled(call.user):
        if await credentials.disable_totp(call.user):  # a pending enrolment: just drop it
            return
        raise Problem(404, "Not Found", "two-factor authentication is not on")
    if not call.json:
        raise Problem(400, "Bad Request", "send a current code as {\"code\": ...}")
    ok = await credentials.verify_second_factor(call.user, call.json["code"])
    if not ok:
        call.context.record("totp_disabled", call.user, call.client_ip, "failed")
        raise Problem(403, "Forbidden", "the code is wrong or was used already")
    await credentials.disable_totp(call.user)
    call.context.record("totp_disabled", call.user, call.client_ip, "ok")


_ME_ROUTES = [
    Route("GET", "/me", _me, "The signed-in account", response=_ME, tag="auth"),
    Route("GET", "/me/app-passwords", _list_app_passwords, "The user's app passwords",
          response={"type": "array", "items": _APP_PASSWORD}, tag="auth"),
    Route("POST", "/me/app-passwords", _add_app_password,
          "A new app password (the password is shown only in this reply)",
          body=_NEW_APP_PASSWORD, status=201, tag="auth", errors=(409,),
          response={"type": "object", "properties": {
              "id": {"type": "string"}, "name": {"type": "string"},
              "password": {"type": "string"}}, "required": ["id", "password"]}),
    Route("DELETE", "/me/app-passwords/{id}", _revoke_app_password, "Revoke an app password",
          status=204, tag="auth"),
    Route("POST", "/me/totp", _enrol_totp, "Start TOTP enrolment: a seed and otpauth URI",
          tag="auth", errors=(409,), response={"type": "object", "properties": {
              "secret": {"type": "string"}, "uri": {"type": "string"}},
              "required": ["secret", "uri"]}),
    Route("POST", "/me/totp/confirm", _confirm_totp,
          "Switch TOTP on with a first code: the recovery codes (shown once)",
          body=_CODE, tag="auth", errors=(409,), response={"type": "object", "properties": {
              "recovery_codes": {"type": "array", "items": {"type": "string"}}},
              "required": ["recovery_codes"]}),
    Route("DELETE", "/me/totp", _disable_totp, "Switch TOTP off (needs a current code)",
          body=_CODE, body_required=False, status=204, tag="auth"),
]

#: The auth routes with the default lifetimes (15 minutes, 30 days).
ROUTES = make_routes()
