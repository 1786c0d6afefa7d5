"""Session limits of the SMTP server (mailserver/smtp/limits.py): a slow client cannot hold a
session open by trickling bytes (slowloris), and a spool file that cannot be written (the
disk is full) refuses the message with 452 4.3.1 instead of breaking the session.

Time is a ``task.Clock``: the tests advance it, so nothing here waits or measures time."""

from __future__ import annotations

import errno
import os
from dataclasses import replace

import pytest
from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.portal import Portal
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mailserver.auth.realm import MailRealm, MXTarget
from mailserver.smtp.factory import SMTPFactory, SMTPPolicy
from mailserver.smtp.limits import GuardedSpool
from mailserver.smtp.server import ESMTPServer
from mailserver.testing import MemoryDeliveryTarget, MemoryDirectory, MemoryStore
from tests.lines import populate
from tests.stored import contents

POLICY = SMTPPolicy(
    hostname="mx.test", command_timeout=300.0, data_timeout=180.0, min_data_rate=500
)
DEV_FULL = "/dev/full"


class Session:
    """One SMTP session over a StringTransport on a Clock."""

    def __init__(self, factory: SMTPFactory, clock: Clock) -> None:
        self.clock = clock
        self.transport = StringTransport(peerAddress=None)
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        self.read()

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def read(self) -> str:
        """Everything the server wrote since the last read."""
        text = self.transport.value().decode()
        self.transport.clear()
        return text

    def command(self, line: bytes) -> str:
        self.send(line)
        return self.read()

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting


@pytest.fixture
def server():
    """A factory over the in-memory store on a Clock; ``server(policy)`` opens a session."""
    store, directory = MemoryStore(), MemoryDirectory()
    populate(store, directory, "pw")
    target = MemoryDeliveryTarget(store, directory)
    portal = Portal(
        MailRealm(lambda: MXTarget(target, directory, "postmaster@example.org")),
        [AllowAnonymousAccess()],
    )
    clock = Clock()

    def open_session(policy: SMTPPolicy = POLICY, protocol: type = ESMTPServer) -> Session:
        factory = SMTPFactory(portal, policy, None, reactor=clock)
        factory.buildProtocol = lambda _addr: protocol(factory)  # type: ignore[method-assign]
        return Session(factory, clock)

    open_session.store = store  # type: ignore[attr-defined]
    return open_session


def start_data(session: Session) -> None:
    assert session.command(b"EHLO client.test\r\n").startswith("250")
    assert session.command(b"MAIL FROM:<carol@example.net>\r\n").startswith("250")
    assert session.command(b"RCPT TO:<alice@example.org>\r\n").startswith("250")
    assert session.command(b"DATA\r\n").startswith("354")


def test_a_command_line_trickled_byte_by_byte_times_out(server):
    """Bytes of an unfinished command line do not restart the command timer: a client
    sending one byte every 10 seconds is cut off with 421 4.4.2 once command_timeout has
    passed since its last whole line."""
    session = server()
    for byte in b"EHLO " + b"x" * 40:
        session.send(bytes([byte]))
        session.clock.advance(10)
        if session.closed:
            break
    assert session.read().startswith("421 4.4.2") and session.closed
    assert session.clock.seconds() == pytest.approx(POLICY.command_timeout, abs=10)


def test_whole_command_lines_keep_a_session_open(server):
    """Each whole command line gives the client a new command_timeout."""
    session = server()
    for _ in range(5):
        session.clock.advance(POLICY.command_timeout - 1)
        assert session.command(b"NOOP\r\n").startswith("250 ")
    assert not session.closed


def test_message_content_trickled_slowly_times_out(server):
    """DATA content arriving below min_data_rate is cut off with 421 4.4.2 once its budget
    (data_timeout + bytes / min_data_rate) is spent, although each block comes well within
    data_timeout of the one before."""
    session = server()
    start_data(session)
    for _ in range(100):
        session.send(b"Subject: x\r\n")
        session.clock.advance(60)
        if session.closed:
            break
    assert session.read().startswith("421 4.4.2") and session.closed
    assert session.clock.seconds() < 100 * 60


def test_a_message_at_the_minimum_rate_is_accepted(server):
    """Content that keeps up with min_data_rate is delivered, even when it takes far longer
    than data_timeout in all."""
    session = server()
    start_data(session)
    block = b"x" * 998 + b"\r\n"
    for _ in range(20):  # 200 kB in 20 blocks over 400 s: 500 bytes/s
        session.send(block * 10)
        session.clock.advance(20)
    assert session.command(b".\r\n").startswith("250 2.0.0")
    assert session.clock.seconds() > POLICY.data_timeout
    assert len(contents(server.store.account("alice@example.org").folder("INBOX"))) == 1


def test_bdat_chunks_trickled_slowly_time_out(server):
    """A client cannot stretch one message over many small BDAT chunks, each sent within
    command_timeout: the message's content budget spans all its chunks."""
    session = server()
    assert session.command(b"EHLO client.test\r\n").startswith("250")
    assert session.command(b"MAIL FROM:<carol@example.net>\r\n").startswith("250")
    assert session.command(b"RCPT TO:<alice@example.org>\r\n").startswith("250")
    for _ in range(100):
        session.send(b"BDAT 10\r\nSubject: x")
        if session.closed:
            break
        assert session.read().startswith("250 ")
        session.clock.advance(100)
    assert session.read().startswith("421 4.4.2") and session.closed
    assert session.clock.seconds() < 100 * 100


def test_no_rate_limit_without_min_data_rate(server):
    """min_data_rate = 0 keeps only data_timeout between blocks."""
    session = server(replace(POLICY, min_data_rate=0))
    start_data(session)
    for _ in range(10):
        session.send(b"Subject: x\r\n")
        session.clock.advance(POLICY.data_timeout - 1)
    assert not session.closed
    assert session.command(b"\r\nbody\r\n.\r\n").startswith("250 2.0.0")


@pytest.mark.skipif(not os.path.exists(DEV_FULL), reason="/dev/full not available")
def test_guarded_spool_keeps_enospc():
    """A write failing with ENOSPC is kept, not raised; later writes are dropped; the
    refusal is 452 4.3.1."""
    with open(DEV_FULL, "wb", buffering=0) as full:
        spool = GuardedSpool(full)
        assert spool.write(b"abc") == 3
        assert spool.error is not None and spool.error.errno == errno.ENOSPC
        assert spool.write(b"more") == 4
        reply = spool.reply()
    assert (reply.code, reply.enhanced) == (452, "4.3.1")


class FullDiskSession(ESMTPServer):
    """The real session whose spool file, past its Received header, is /dev/full: every
    write to it fails with ENOSPC, as on a full disk."""

    def _start_message(self, transaction) -> None:
        super()._start_message(transaction)
        transaction.sink.file.close()
        transaction.sink.file = open(DEV_FULL, "wb", buffering=0)


@pytest.mark.skipif(not os.path.exists(DEV_FULL), reason="/dev/full not available")
def test_a_full_disk_refuses_the_message_with_452_and_the_session_goes_on(server):
    """When the spool cannot be written the rest of DATA is still read, the message is
    refused with 452 4.3.1 (nothing delivered), and the session takes the next one."""
    session = server(protocol=FullDiskSession)
    start_data(session)
    session.send(b"Subject: lost\r\n\r\n" + b"y" * 5000 + b"\r\n")
    reply = session.command(b".\r\n")
    assert reply.startswith("452 4.3.1"), reply
    assert not session.closed
    assert session.command(b"RSET\r\n").startswith("250")
    assert contents(server.store.account("alice@example.org").folder("INBOX")) == []
