"""CAPA (RFC 2449), STLS (RFC 2595), SASL AUTH (RFC 5034) and the login security chain as
the server wires it: no login before TLS, pop3-scoped app passwords and tokens, TOTP
accounts told to use an app password with ``-ERR [AUTH]``, throttling as ``[SYS/TEMP]``,
and implicit TLS (RFC 8314)."""

from __future__ import annotations

import base64
import io
import json
import poplib
import socket
from dataclasses import replace

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailserver.auth.credentials import CredentialStore
from mailserver.auth.realm import MailRealm
from mailserver.pop3.factory import MaildropLocks, POP3Factory, POP3Policy
from tests.pop3.conftest import Raw, client_context, in_thread
from tests.security import audit_events, b64, security_chain, switch_totp_on

ALICE = "alice@example.org"


class Secured:
    """The STLS and the implicit-TLS listener over one maildir store, as service.py wires
    them (login guard, pop3 scope, shared locks)."""

    port: int
    tls_port: int
    credentials: CredentialStore
    audit_path: object
    store: object

    def raw(self) -> Raw:
        client = Raw(socket.create_connection(("127.0.0.1", self.port), timeout=10))
        assert client.text().startswith("+OK")
        return client

    def tls_raw(self) -> Raw:
        client = Raw(socket.create_connection(("127.0.0.1", self.tls_port), timeout=10))
        client.starttls()
        assert client.text().startswith("+OK")
        return client


@pytest.fixture
def secured(storage, tmp_path, tls_options):
    chain = security_chain(storage, tmp_path)
    realm = MailRealm(None, imap_account=storage.store.account)
    portal = chain.portal(realm, "pop3")
    locks = MaildropLocks()
    policy = POP3Policy(
        hostname="mail.example.org", auth_mechanisms=("PLAIN", "LOGIN", "OAUTHBEARER")
    )
    plain = POP3Factory(portal, policy, tls_options, reactor=reactor, locks=locks)
    implicit_policy = replace(policy, implicit_tls=True, offer_starttls=False)
    implicit = POP3Factory(portal, implicit_policy, tls_options, reactor=reactor, locks=locks)
    port = reactor.listenTCP(0, plain, interface="127.0.0.1")
    tls_port = reactor.listenTCP(
        0, TLSMemoryBIOFactory(tls_options, False, implicit), interface="127.0.0.1"
    )
    s = Secured()
    s.port, s.tls_port = port.getHost().port, tls_port.getHost().port
    s.credentials, s.audit_path, s.store = chain.credentials, chain.audit_path, storage.store
    yield s
    chain.audit.close()
    pytest_twisted.blockon(port.stopListening())
    pytest_twisted.blockon(tls_port.stopListening())


def capa(client: Raw) -> list[str]:
    assert client.command("CAPA") == "+OK Capability list follows"
    return client.multi()


async def test_capa_before_and_after_stls(secured):
    """Before STLS: STLS offered, no USER and no SASL, logins refused with [AUTH]. After the
    handshake: USER and SASL, no STLS; the extensions of RFC 2449 in both."""

    def dialog():
        client = secured.raw()
        before = capa(client)
        refused = [client.command(f"USER {ALICE}"), client.command("AUTH PLAIN")]
        assert client.command("STLS") == "+OK Begin TLS negotiation"
        client.starttls()
        after = capa(client)
        again = client.command("STLS")
        client.login_reply = client.command(f"USER {ALICE}"), client.command("PASS account-pw")
        client.close()
        return before, refused, after, again, client.login_reply

    before, refused, after, again, login = await in_thread(dialog)
    for caps in (before, after):
        for name in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "UTF8 USER"):
            assert name in caps
        assert "EXPIRE NEVER" in caps and "LOGIN-DELAY 0" in caps
        assert any(c.startswith("IMPLEMENTATION mailserver-") for c in caps)
    assert "STLS" in before and "USER" not in before
    assert not any(c.startswith("SASL") for c in before)
    assert "STLS" not in after and "USER" in after and "SASL PLAIN LOGIN OAUTHBEARER" in after
    assert all(r.startswith("-ERR [AUTH] ") for r in refused)
    assert again == "-ERR Already using TLS"
    assert login[1].startswith("+OK Logged in, 0 messages")


async def test_stls_discards_input_sent_with_it(secured):
    """A command pipelined behind STLS in the clear is never executed (RFC 2595 §4, the
    STARTTLS injection of CVE-2011-0411)."""

    def dialog():
        client = secured.raw()
        client.send("STLS\r\nCAPA\r\n")
        assert client.text() == "+OK Begin TLS negotiation"
        assert client.buffer == b""
        client.starttls()
        return client.command("NOOP")

    assert await in_thread(dialog) == "-ERR NOOP: Log in first"


async def test_implicit_tls_with_poplib(secured):
    """poplib.POP3_SSL logs in on the implicit-TLS listener; CAPA there has no STLS."""
    inbox = secured.store.account(ALICE).folder("INBOX")
    await inbox.append(io.BytesIO(b"Subject: hi\r\n\r\nhello\r\n"))

    def dialog():
        client = poplib.POP3_SSL("127.0.0.1", secured.tls_port, context=client_context())
        caps = client.capa()
        client.user(ALICE)
        client.pass_("account-pw")
        got = client.retr(1)[1]
        client.quit()
        return caps, got

    caps, got = await in_thread(dialog)
    assert "STLS" not in caps and "USER" in caps
    assert got == [b"Subject: hi", b"", b"hello"]


async def test_poplib_stls(secured):
    """poplib's stls() then a login."""

    def dialog():
        client = poplib.POP3("127.0.0.1", secured.port, timeout=10)
        client.stls(client_context())
        client.user(ALICE)
        reply = client.pass_("account-pw")
        client.quit()
        return reply

    assert (await in_thread(dialog)).startswith(b"+OK Logged in")


async def test_auth_plain_with_and_without_initial_response(secured):
    """RFC 5034 §4: AUTH PLAIN with an initial response, and with an empty ``+ `` challenge;
    ``*`` cancels."""

    def dialog():
        client = secured.tls_raw()
        cancelled = client.command("AUTH PLAIN"), client.command("*")
        challenge = client.command("AUTH PLAIN")
        answer = client.command(b64(f"\0{ALICE}\0account-pw"))
        client.close()
        other = secured.tls_raw()
        initial = other.command("AUTH PLAIN " + b64(f"\0{ALICE}\0account-pw"))
        other.close()
        return cancelled, challenge, answer, initial

    cancelled, challenge, answer, initial = await in_thread(dialog)
    assert cancelled == ("+ ", "-ERR Authentication cancelled")
    assert challenge == "+ "
    assert answer.startswith("+OK Logged in")
    assert initial.startswith("+OK Logged in")


async def test_auth_login_mechanism_and_bad_input(secured):
    """AUTH LOGIN asks for the user name and the password; bad base64 and unknown
    mechanisms get -ERR and the session goes on."""

    def dialog():
        client = secured.tls_raw()
        replies = [
            client.command("AUTH CRAM-MD5"),
            client.command("AUTH PLAIN !!!"),
            client.command("AUTH LOGIN"),
            client.command(b64(ALICE)),
            client.command(b64("account-pw")),
        ]
        client.close()
        return replies

    replies = await in_thread(dialog)
    assert replies[0] == "-ERR Unsupported authentication mechanism"
    assert replies[1].startswith("-ERR Invalid SASL response")
    assert replies[2] == "+ " + b64("Username:")
    assert replies[3] == "+ " + b64("Password:")
    assert replies[4].startswith("+OK Logged in")


async def test_totp_account_is_told_to_use_an_app_password(secured):
    """The account password of a TOTP account is refused with -ERR [AUTH] and the reason;
    a pop3-scoped app password logs in, an smtp-scoped one does not."""
    creds = secured.credentials
    _id, smtp_pw = await creds.add_app_password(ALICE, "phone", {"smtp"})
    _id, pop_pw = await creds.add_app_password(ALICE, "mail client", {"pop3"})
    await switch_totp_on(creds, ALICE)

    def dialog():
        client = secured.tls_raw()
        replies = []
        for password in ("account-pw", smtp_pw, pop_pw):
            client.command(f"USER {ALICE}")
            replies.append(client.command(f"PASS {password}"))
        client.close()
        return replies

    totp, smtp, pop = await in_thread(dialog)
    assert totp.startswith("-ERR [AUTH] ") and "app password" in totp
    assert smtp == "-ERR [AUTH] Authentication failed"
    assert pop.startswith("+OK Logged in")
    events = audit_events(secured.audit_path)
    assert all(e["where"] == "127.0.0.1" for e in events)
    assert not any(pop_pw in json.dumps(e) for e in events)


async def test_oauthbearer_token_scoped_to_pop3(secured):
    """RFC 7628 over RFC 5034: an smtp-only token gets the JSON error challenge and then
    -ERR [AUTH]; a pop3 token logs in with the initial response."""
    pop_token = await secured.credentials.issue_token("bob@example.org", {"pop3"}, 3600)
    smtp_token = await secured.credentials.issue_token("bob@example.org", {"smtp"}, 3600)

    def bearer(token: str) -> str:
        return "AUTH OAUTHBEARER " + b64(f"n,a=bob@example.org,\x01auth=Bearer {token}\x01\x01")

    def dialog():
        client = secured.tls_raw()
        challenge = client.command(bearer(smtp_token))
        refused = client.command(b64("\x01"))
        accepted = client.command(bearer(pop_token))
        client.close()
        return challenge, refused, accepted

    challenge, refused, accepted = await in_thread(dialog)
    assert challenge.startswith("+ ")
    assert json.loads(base64.b64decode(challenge[2:]))["status"] == "invalid_token"
    assert refused == "-ERR [AUTH] Authentication failed"
    assert accepted.startswith("+OK Logged in")


async def test_burst_of_wrong_passwords_is_throttled(secured):
    """The guard's throttle answers -ERR [SYS/TEMP] (try later), not [AUTH]."""

    def dialog():
        client = secured.tls_raw()
        replies = []
        for n in range(8):
            client.command(f"USER {ALICE}")
            replies.append(client.command(f"PASS guess{n}"))
        client.close()
        return replies

    replies = await in_thread(dialog)
    assert all(r == "-ERR [AUTH] Authentication failed" for r in replies[:6])
    assert replies[6].startswith("-ERR [SYS/TEMP] ")


async def test_auth_without_arguments_lists_mechanisms(secured):
    def dialog():
        client = secured.tls_raw()
        first = client.command("AUTH")
        return first, client.multi()

    first, mechanisms = await in_thread(dialog)
    assert first.startswith("+OK")
    assert mechanisms == ["PLAIN", "LOGIN", "OAUTHBEARER"]
