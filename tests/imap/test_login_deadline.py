"""Slowloris before login (mailserver/imap/server.py): a session that has not logged in is
closed login_timeout after it started, however busy it keeps the connection; after LOGIN the
idle timer (idle_timeout, RFC 9051 §5.4) restarts with every command. Time is a Clock."""

from __future__ import annotations

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mailserver.auth.realm import MailRealm
from mailserver.imap.factory import IMAPFactory, IMAPPolicy
from mailserver.testing import MemoryStore

POLICY = IMAPPolicy(
    hostname="imap.test", login_timeout=120.0, idle_timeout=1800.0, auth_needs_tls=False
)


def session() -> tuple[StringTransport, Clock, object]:
    store = MemoryStore()
    store.create_account("alice@example.org")
    portal = Portal(
        MailRealm(None, imap_account=store.account),
        [InMemoryUsernamePasswordDatabaseDontUse(**{"alice@example.org": b"secret"})],
    )
    clock = Clock()
    server = IMAPFactory(portal, POLICY, None, reactor=clock).buildProtocol(None)
    transport = StringTransport()
    server.makeConnection(transport)
    assert transport.value().startswith(b"* OK")
    transport.clear()
    return transport, clock, server


def test_commands_before_login_do_not_extend_the_login_timeout():
    """NOOP every 30 s before login: BYE once login_timeout has passed since connecting."""
    transport, clock, server = session()
    for n in range(10):
        server.dataReceived(f"a{n} NOOP\r\n".encode())
        clock.advance(30)
        if transport.disconnecting:
            break
    assert b"* BYE Autologout" in transport.value() and transport.disconnecting
    assert clock.seconds() == 120


def test_bytes_of_an_unfinished_command_do_not_either():
    transport, clock, server = session()
    for byte in b"a LOGIN alice@example.org " * 4:
        server.dataReceived(bytes([byte]))
        clock.advance(2)
        if transport.disconnecting:
            break
    assert b"* BYE Autologout" in transport.value() and transport.disconnecting
    assert clock.seconds() <= 122


def test_after_login_each_command_restarts_the_idle_timer():
    transport, clock, server = session()
    clock.advance(100)
    server.dataReceived(b"a LOGIN alice@example.org secret\r\n")
    assert b"a OK" in transport.value()
    for n in range(5):
        clock.advance(POLICY.idle_timeout - 1)
        server.dataReceived(f"b{n} NOOP\r\n".encode())
    assert not transport.disconnecting
    clock.advance(POLICY.idle_timeout)
    assert transport.disconnecting
