"""Slowloris before login (mailserver/pop3/server.py): the AUTHORIZATION state lasts at most
``timeout`` from the connection's start, however busy the client keeps it; in TRANSACTION
the autologout timer (RFC 1939 §3) restarts with every command. Time is a Clock."""

from __future__ import annotations

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mailserver.auth.realm import MailRealm
from mailserver.pop3.factory import POP3Factory, POP3Policy
from mailserver.testing import MemoryStore

POLICY = POP3Policy(hostname="pop.test", timeout=600.0, auth_needs_tls=False)


def session() -> tuple[StringTransport, Clock, object]:
    store = MemoryStore()
    store.create_account("alice@example.org")
    portal = Portal(
        MailRealm(None, imap_account=store.account),
        [InMemoryUsernamePasswordDatabaseDontUse(**{"alice@example.org": b"secret"})],
    )
    clock = Clock()
    server = POP3Factory(portal, POLICY, None, reactor=clock).buildProtocol(None)
    server.in_thread = lambda function, *args: maybeDeferred(function, *args)  # as in test_fuzz
    transport = StringTransport()
    server.makeConnection(transport)
    assert transport.value().startswith(b"+OK")
    transport.clear()
    return transport, clock, server


def test_commands_before_login_do_not_extend_the_timeout():
    """CAPA every 100 s without logging in: closed once ``timeout`` has passed."""
    transport, clock, server = session()
    for _ in range(10):
        server.dataReceived(b"CAPA\r\n")
        clock.advance(100)
        if transport.disconnecting:
            break
    assert b"-ERR Autologout" in transport.value() and transport.disconnecting
    assert clock.seconds() == 600


def test_in_transaction_each_command_restarts_the_timer():
    transport, clock, server = session()
    clock.advance(500)
    server.dataReceived(b"USER alice@example.org\r\nPASS secret\r\n")
    assert transport.value().count(b"+OK") == 2, transport.value()
    for _ in range(5):
        clock.advance(POLICY.timeout - 1)
        server.dataReceived(b"NOOP\r\n")
    assert not transport.disconnecting
