"""IMAP logins with the whole security chain, as the server wires it: app passwords scoped to
IMAP, TOTP accounts (the account password is refused with ``[AUTHENTICATIONFAILED]`` and a
text saying what to do), OAUTHBEARER tokens (RFC 7628 over RFC 9051 AUTHENTICATE), the
throttle, and an audit line for each event without secrets."""

from __future__ import annotations

import base64
import json
import socket

import pytest
import pytest_twisted
from twisted.internet import reactor

from mailserver.auth.realm import MailRealm
from mailserver.imap.factory import IMAPFactory, IMAPPolicy
from tests.imap.conftest import Raw, in_thread
from tests.security import audit_events, b64, security_chain, switch_totp_on


@pytest.fixture
def secured(storage, tmp_path):
    chain = security_chain(storage, tmp_path)
    realm = MailRealm(None, imap_account=storage.store.account)
    portal = chain.portal(realm, "imap")
    policy = IMAPPolicy(hostname="mail.example.org", auth_needs_tls=False,
                        auth_mechanisms=("PLAIN", "LOGIN", "OAUTHBEARER"))
    chain.listen(IMAPFactory(portal, policy, None, reactor=reactor))
    yield chain
    chain.close()


def session(port: int, commands: list[str]) -> list[str]:
    """Send each command (tagged T0, T1, ...); the tagged reply line of each."""
    raw = Raw(socket.create_connection(("127.0.0.1", port), timeout=10))
    assert raw.text().startswith("* OK")
    out = []
    for number, text in enumerate(commands):
        out.append(raw.command(f"T{number}", text)[-1])
    raw.close()
    return out


@pytest_twisted.ensureDeferred
async def test_app_password_scope_and_totp_account(secured):
    creds = secured.credentials
    _id, smtp_pw = await creds.add_app_password("alice@example.org", "phone", {"smtp"})
    _id, imap_pw = await creds.add_app_password("alice@example.org", "laptop", {"imap"})
    await switch_totp_on(creds, "alice@example.org")
    replies = await in_thread(session, secured.port, [
        'LOGIN alice@example.org "account-pw"',  # right password, but TOTP is on
        f'LOGIN alice@example.org "{smtp_pw}"',  # an SMTP-only app password
        "AUTHENTICATE PLAIN " + b64(f"\0alice@example.org\0{imap_pw}"),
    ])
    assert replies[0].startswith("T0 NO [AUTHENTICATIONFAILED]") and "app password" in replies[0]
    assert replies[1].startswith("T1 NO [AUTHENTICATIONFAILED]")  # scope: smtp only
    assert replies[2].startswith("T2 OK")
    events = audit_events(secured.audit_path)
    kinds = [(e["event"], e["outcome"]) for e in events]
    assert kinds.count(("login_failed", "failed")) == 2 and ("login_ok", "ok") in kinds
    assert all(e["where"] == "127.0.0.1" for e in events)
    assert not any("account-pw" in json.dumps(e) or imap_pw in json.dumps(e) for e in events)


@pytest_twisted.ensureDeferred
async def test_wrong_password_and_unknown_user_look_the_same(secured):
    replies = await in_thread(session, secured.port, [
        'LOGIN alice@example.org "wrong"',
        'LOGIN nobody@example.org "wrong"',
    ])
    assert replies[0][3:] == replies[1][3:]
    assert replies[0].startswith("T0 NO [AUTHENTICATIONFAILED]")


@pytest_twisted.ensureDeferred
async def test_oauthbearer_token_scoped_to_imap(secured):
    imap_token = await secured.credentials.issue_token("bob@example.org", {"imap"}, 3600)
    smtp_token = await secured.credentials.issue_token("bob@example.org", {"smtp"}, 3600)

    def bearer(token: str) -> str:
        return "AUTHENTICATE OAUTHBEARER " + b64(
            f"n,a=bob@example.org,\x01auth=Bearer {token}\x01\x01")

    def dialog(port: int) -> tuple[str, str, list[str]]:
        raw = Raw(socket.create_connection(("127.0.0.1", port), timeout=10))
        raw.text()
        raw.send(f"T0 {bearer(smtp_token)}\r\n")
        challenge = raw.text()  # RFC 7628 §3.2.2: an error challenge, then the client's ^A
        raw.send(b64("\x01") + "\r\n")
        refused = raw.until("T0")[-1]
        accepted = raw.command("T1", bearer(imap_token))
        raw.close()
        return challenge, refused, accepted

    challenge, refused, accepted = await in_thread(dialog, secured.port)
    assert challenge.startswith("+ ")
    error = json.loads(base64.b64decode(challenge[2:]))
    assert error["status"] == "invalid_token"
    assert refused.startswith("T0 NO [AUTHENTICATIONFAILED]")
    assert accepted[-1].startswith("T1 OK")


@pytest_twisted.ensureDeferred
async def test_burst_of_wrong_passwords_is_throttled(secured):
    replies = await in_thread(session, secured.port, [
        f'LOGIN alice@example.org "guess{n}"' for n in range(8)
    ])
    assert all(r.startswith(f"T{n} NO [AUTHENTICATIONFAILED]") for n, r in enumerate(replies[:6]))
    assert replies[6].startswith("T6 NO [UNAVAILABLE]") and "try again later" in replies[6]
    events = [e["event"] for e in audit_events(secured.audit_path)]
    assert "banned" in events and "throttled" in events
