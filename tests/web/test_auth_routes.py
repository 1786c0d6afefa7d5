"""Log-in, refresh, log-out, /me, app passwords and TOTP through the real API server."""

from __future__ import annotations

import pyotp
import pytest_twisted

from mailserver.types import Role

ALICE, PW = "alice@example.test", "pw-alice-1"


def _code(secret: str, reactor, offset: int = 0) -> str:
    """The TOTP code of the step ``offset`` steps from now."""
    return pyotp.TOTP(secret).at(reactor.seconds() + offset * 30)


async def _enrol(api, token: str) -> tuple[str, list[str]]:
    started = await api.call("POST", "/me/totp", token=token)
    assert started.status == 200
    secret = started.json["secret"]
    assert started.json["uri"].startswith("otpauth://totp/")
    confirmed = await api.call(
        "POST", "/me/totp/confirm", token=token,
        json_body={"code": _code(secret, api.context.reactor, -1)},
    )
    assert confirmed.status == 200, confirmed.body
    return secret, confirmed.json["recovery_codes"]


@pytest_twisted.ensureDeferred
async def test_login_gives_a_token_pair_and_me(api):
    await api.add_user(ALICE, PW, roles=["user", "domain-admin"], admin_domains=["example.test"])
    reply = await api.call("POST", "/auth/login", json_body={"username": ALICE, "password": PW})
    assert reply.status == 200
    pair = reply.json
    assert pair["token_type"] == "Bearer" and pair["expires_in"] == 900
    assert pair["refresh_token"] != pair["access_token"]
    me = await api.call("GET", "/me", token=pair["access_token"])
    assert me.json == {
        "address": ALICE,
        "roles": sorted([Role.USER.value, Role.DOMAIN_ADMIN.value]),
        "totp_enabled": False,
        "admin_domains": ["example.test"],
    }
    # The refresh token is no access token.
    assert (await api.call("GET", "/me", token=pair["refresh_token"])).status == 401


@pytest_twisted.ensureDeferred
async def test_wrong_password_and_unknown_user_look_the_same(api):
    await api.add_user(ALICE, PW)
    wrong = await api.call("POST", "/auth/login", json_body={"username": ALICE, "password": "x"})
    nobody = await api.call(
        "POST", "/auth/login", json_body={"username": "bob@example.test", "password": "x"}
    )
    assert wrong.status == nobody.status == 401
    assert wrong.json["detail"] == nobody.json["detail"]
    assert "totp_required" not in wrong.json
    missing = await api.call("POST", "/auth/login", json_body={"username": ALICE})
    assert missing.status == 422


@pytest_twisted.ensureDeferred
async def test_refresh_rotates_the_refresh_token(api):
    await api.add_user(ALICE, PW)
    first = (await api.call(
        "POST", "/auth/login", json_body={"username": ALICE, "password": PW})).json
    second = await api.call(
        "POST", "/auth/refresh", json_body={"refresh_token": first["refresh_token"]}
    )
    assert second.status == 200
    assert (await api.call("GET", "/me", token=second.json["access_token"])).status == 200
    replay = await api.call(
        "POST", "/auth/refresh", json_body={"refresh_token": first["refresh_token"]}
    )
    assert replay.status == 401
    access = await api.call(
        "POST", "/auth/refresh", json_body={"refresh_token": first["access_token"]}
    )
    assert access.status == 401  # an access token is no refresh token


@pytest_twisted.ensureDeferred
async def test_logout_revokes_both_tokens(api):
    await api.add_user(ALICE, PW)
    pair = (await api.call(
        "POST", "/auth/login", json_body={"username": ALICE, "password": PW})).json
    out = await api.call("POST", "/auth/logout", token=pair["access_token"],
                         json_body={"refresh_token": pair["refresh_token"]})
    assert out.status == 204 and out.body == b""
    assert (await api.call("GET", "/me", token=pair["access_token"])).status == 401
    again = await api.call(
        "POST", "/auth/refresh", json_body={"refresh_token": pair["refresh_token"]}
    )
    assert again.status == 401
    other = await api.login(ALICE, PW)
    bare = await api.call("POST", "/auth/logout", token=other)
    assert bare.status == 204
    assert (await api.call("GET", "/me", token=other)).status == 401


@pytest_twisted.ensureDeferred
async def test_app_passwords_for_the_signed_in_user(api):
    await api.add_user(ALICE, PW)
    token = await api.login(ALICE, PW)
    made = await api.call("POST", "/me/app-passwords", token=token,
                          json_body={"name": "phone", "scopes": ["imap", "smtp"]})
    assert made.status == 201
    ident, password = made.json["id"], made.json["password"]
    assert await api.credentials.check_app_password(ALICE, password, "imap")
    listed = await api.call("GET", "/me/app-passwords", token=token)
    assert [(a["id"], a["name"], a["scopes"]) for a in listed.json] == [
        (ident, "phone", ["imap", "smtp"])
    ]
    assert "password" not in listed.json[0]
    twice = await api.call("POST", "/me/app-passwords", token=token, json_body={"name": "phone"})
    assert twice.status == 409
    bad = await api.call("POST", "/me/app-passwords", token=token,
                         json_body={"name": "x", "scopes": ["ftp"]})
    assert bad.status == 422
    gone = await api.call("DELETE", f"/me/app-passwords/{ident}", token=token)
    assert gone.status == 204
    assert not await api.credentials.check_app_password(ALICE, password, "imap")
    again = await api.call("DELETE", f"/me/app-passwords/{ident}", token=token)
    assert again.status == 404


@pytest_twisted.ensureDeferred
async def test_totp_enrolment_and_login(api):
    """With TOTP on, the password alone is 401 totp_required; with a code it passes; a
    code works once; a recovery code works; disabling needs a current code."""
    await api.add_user(ALICE, PW)
    token = await api.login(ALICE, PW)
    reactor = api.context.reactor
    unconfirmed = await api.call("POST", "/me/totp/confirm", token=token,
                                 json_body={"code": "123456"})
    assert unconfirmed.status == 409
    secret, recovery = await _enrol(api, token)
    assert len(recovery) == 10
    assert (await api.call("GET", "/me", token=token)).json["totp_enabled"] is True

    bare = await api.call("POST", "/auth/login", json_body={"username": ALICE, "password": PW})
    assert bare.status == 401 and bare.json["totp_required"] is True
    wrong_pw = await api.call(
        "POST", "/auth/login",
        json_body={"username": ALICE, "password": "nope", "totp": _code(secret, reactor)},
    )
    assert wrong_pw.status == 401 and "totp_required" not in wrong_pw.json

    code = _code(secret, reactor)
    body = {"username": ALICE, "password": PW, "totp": code}
    ok = await api.call("POST", "/auth/login", json_body=body)
    assert ok.status == 200, ok.body
    replay = await api.call("POST", "/auth/login", json_body=body)
    assert replay.status == 401 and replay.json["totp_required"] is True
    by_recovery = await api.call(
        "POST", "/auth/login",
        json_body={"username": ALICE, "password": PW, "totp": recovery[0]},
    )
    assert by_recovery.status == 200

    api.throttle.succeeded("127.0.0.1", ALICE)  # forget the failures above
    refused = await api.call("DELETE", "/me/totp", token=token, json_body={"code": "000000"})
    assert refused.status == 403
    no_code = await api.call("DELETE", "/me/totp", token=token)
    assert no_code.status == 400
    off = await api.call("DELETE", "/me/totp", token=token,
                         json_body={"code": _code(secret, reactor, 1)})
    assert off.status == 204
    assert (await api.call("GET", "/me", token=token)).json["totp_enabled"] is False
    assert await api.login(ALICE, PW)


@pytest_twisted.ensureDeferred
async def test_a_token_of_a_removed_user_is_refused(api):
    await api.add_user(ALICE, PW)
    token = await api.login(ALICE, PW)
    await api.storage.directory.remove_user(ALICE)
    assert (await api.call("GET", "/me", token=token)).status == 401
