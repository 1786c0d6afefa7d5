"""How the session ends or fails: autologout, shutdown, internal errors, OAUTHBEARER
refusals, too many bad commands."""

from __future__ import annotations

import base64

import pytest_twisted
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.defer import fail, succeed
from zope.interface import implementer

from mailserver.auth.checkers import PasswordChecker
from mailserver.auth.realm import MailRealm
from mailserver.imap.factory import IMAPFactory
from mailserver.smtp.sasl import IBearerToken
from tests.imap.conftest import HOST, IMAPServerFixture, in_thread


@pytest_twisted.ensureDeferred
async def test_autologout(memory_imap, make_policy):
    """An idle session gets BYE and is closed when its timer runs out (RFC 9051 §5.4)."""
    memory_imap.factory.policy = make_policy(login_timeout=0.2)

    def dialog():
        client = memory_imap.raw()
        assert client.text() == "* BYE Autologout; idle for too long"
        assert client.closed()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_shutdown_says_bye(memory_imap):
    """While the server shuts down, the next command gets BYE and the connection closes."""

    def dialog():
        client = memory_imap.raw()
        memory_imap.factory.shutting_down = True
        client.send("a NOOP\r\n")
        assert client.text() == "* BYE Server shutting down"
        assert client.closed()

    try:
        await in_thread(dialog)
    finally:
        memory_imap.factory.shutting_down = False


@pytest_twisted.ensureDeferred
async def test_internal_errors_are_no_serverbug(memory_imap):
    """An unexpected exception in a handler is logged and answered NO [SERVERBUG], without
    a traceback; the session goes on."""
    account = memory_imap.store.account("alice@example.org")

    def broken():
        raise RuntimeError("disk on fire")

    account.list_folders = broken

    def dialog():
        client = memory_imap.raw()
        client.login()
        assert client.command("a", 'LIST "" *') == ["a NO [SERVERBUG] Internal server error"]
        assert client.command("b", "SELECT INBOX")[-1] == "b OK [READ-WRITE] SELECT completed"
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_too_many_bad_commands(memory_imap, make_policy):
    """After max_errors BAD commands the session gets BYE and is closed."""
    memory_imap.factory.policy = make_policy(max_errors=3)

    def dialog():
        client = memory_imap.raw()
        client.send("a FOO\r\nb BAR\r\nc BAZ\r\nd NOOP\r\n")
        assert [client.text() for _ in range(4)] == [
            "a BAD unknown command",
            "b BAD unknown command",
            "c BAD unknown command",
            "* BYE Too many errors",
        ]
        assert client.closed()

    await in_thread(dialog)


@implementer(ICredentialsChecker)
class TokenChecker:
    """Accepts the bearer token "good" for alice."""

    credentialInterfaces = (IBearerToken,)

    def requestAvatarId(self, credentials):
        if credentials.token == "good" and credentials.protocol == "imap":
            return succeed("alice@example.org")
        return fail(UnauthorizedLogin("bad token"))


@pytest_twisted.ensureDeferred
async def test_oauthbearer(memory_imap, make_policy):
    """A refused token gets the RFC 7628 error challenge; the client's ^A ends it with NO
    [AUTHENTICATIONFAILED]; a good token logs in."""
    store = memory_imap.store
    realm = MailRealm(lambda: None, imap_account=store.account)  # type: ignore[arg-type,return-value]
    portal = Portal(realm, [PasswordChecker(memory_imap.directory), TokenChecker()])
    policy = make_policy(auth_mechanisms=("PLAIN", "OAUTHBEARER"))
    factory = IMAPFactory(portal, policy, None, reactor=reactor)
    port = reactor.listenTCP(0, factory, interface=HOST)
    server = IMAPServerFixture(factory, port.getHost().port, store, memory_imap.directory)

    def response(token: str) -> str:
        raw = f"n,a=alice@example.org,\x01auth=Bearer {token}\x01\x01".encode()
        return base64.b64encode(raw).decode()

    def dialog():
        client = server.raw()
        client.send(f"a AUTHENTICATE OAUTHBEARER {response('bad')}\r\n")
        challenge = client.text()
        assert challenge.startswith("+ ")
        assert b'"status":"invalid_token"' in base64.b64decode(challenge[2:])
        client.send("AQ==\r\n")
        assert client.text() == "a NO [AUTHENTICATIONFAILED] Authentication failed"
        ok = client.command("b", f"AUTHENTICATE OAUTHBEARER {response('good')}")
        assert ok[-1].endswith("Logged in")
        client.close()

    try:
        await in_thread(dialog)
    finally:
        await port.stopListening()
