"""Submission AUTH with the whole security chain, as the server wires it: app passwords
(scoped), TOTP accounts (the account password is refused with a message saying what to do),
OAUTHBEARER tokens (RFC 7628 error flow), the throttle (a burst of wrong passwords from one
IP ends in a temporary refusal) and an audit line for each event."""

from __future__ import annotations

import base64
import json
import socket

import pytest
import pytest_twisted
from twisted.internet import reactor

from mailserver.auth.realm import MailRealm
from mailserver.auth.submission import SubmissionTarget
from mailserver.smtp.factory import SMTPFactory, SMTPPolicy
from mailserver.store.local import LocalDeliveryTarget
from tests.security import audit_events, b64, security_chain, switch_totp_on
from tests.smtp.conftest import Raw, in_thread


def plain(user: str, password: str) -> str:
    return "AUTH PLAIN " + b64(f"\0{user}\0{password}")


@pytest.fixture
def secured(storage, tmp_path):
    chain = security_chain(storage, tmp_path)
    directory = storage.directory
    target = LocalDeliveryTarget(storage.store, directory)
    realm = MailRealm(lambda: target, lambda user: SubmissionTarget(
        user, directory, target, "mail.example.org", reactor))
    portal = chain.portal(realm, "smtp")
    policy = SMTPPolicy(hostname="mail.example.org", auth=True, require_auth=True,
                        auth_needs_tls=False, auth_mechanisms=("PLAIN", "LOGIN", "OAUTHBEARER"))
    chain.listen(SMTPFactory(portal, policy, None, reactor=reactor))
    yield chain
    chain.close()


def session(port: int, lines: list[str]) -> list[str]:
    """Send each line, return the last line of each reply (after the greeting and EHLO)."""
    raw = Raw(socket.create_connection(("127.0.0.1", port), timeout=10))
    raw.reply()
    raw.send(b"EHLO c.example\r\n")
    raw.reply()
    out = []
    for line in lines:
        raw.send(line.encode() + b"\r\n")
        out.append(raw.reply()[-1])
    raw.close()
    return out


@pytest_twisted.ensureDeferred
async def test_app_password_scope_and_totp_account(secured):
    creds = secured.credentials
    _id, smtp_pw = await creds.add_app_password("alice@example.org", "phone", {"smtp"})
    _id, imap_pw = await creds.add_app_password("alice@example.org", "laptop", {"imap"})
    await switch_totp_on(creds, "alice@example.org")
    replies = await in_thread(session, secured.port, [
        plain("alice@example.org", "account-pw"),  # right password, but TOTP is on
        plain("alice@example.org", imap_pw),  # an IMAP-only app password
        plain("alice@example.org", smtp_pw),
    ])
    assert replies[0].startswith("535 5.7.8") and "app password" in replies[0]
    assert replies[1].startswith("535 5.7.8")  # scope: imap only
    assert replies[2].startswith("235 2.7.0")
    events = audit_events(secured.audit_path)
    kinds = [(e["event"], e["outcome"]) for e in events]
    assert kinds.count(("login_failed", "failed")) == 2 and ("login_ok", "ok") in kinds
    assert all(e["where"] == "127.0.0.1" for e in events)
    assert not any("account-pw" in json.dumps(e) or smtp_pw in json.dumps(e) for e in events)


@pytest_twisted.ensureDeferred
async def test_wrong_password_and_unknown_user_look_the_same(secured):
    replies = await in_thread(session, secured.port, [
        plain("alice@example.org", "wrong"),
        plain("nobody@example.org", "wrong"),
    ])
    assert replies[0] == replies[1] and replies[0].startswith("535 5.7.8")


@pytest_twisted.ensureDeferred
async def test_oauthbearer_token_and_error_flow(secured):
    token = await secured.credentials.issue_token("bob@example.org", {"smtp"}, 3600)
    good = b64(f"n,a=bob@example.org,\x01auth=Bearer {token}\x01\x01")
    bad = b64("n,a=bob@example.org,\x01auth=Bearer not-a-token\x01\x01")
    replies = await in_thread(session, secured.port, [
        "AUTH OAUTHBEARER " + bad,
        b64("\x01"),
        "AUTH OAUTHBEARER " + good,
    ])
    assert replies[0].startswith("334 ")
    error = json.loads(base64.b64decode(replies[0][4:]))
    assert error["status"] == "invalid_token"
    assert replies[1].startswith("535 5.7.8")
    assert replies[2].startswith("235 2.7.0")


@pytest_twisted.ensureDeferred
async def test_burst_of_wrong_passwords_is_throttled_then_banned(secured):
    replies = await in_thread(
        session, secured.port, [plain("alice@example.org", f"guess{n}") for n in range(8)]
    )
    assert all(r.startswith("535 5.7.8") for r in replies[:6])
    assert replies[6].startswith("454 4.7.0") and "try again later" in replies[6]
    events = [e["event"] for e in audit_events(secured.audit_path)]
    assert "banned" in events and "throttled" in events
