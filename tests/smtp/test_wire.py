"""Replies on the wire (``smtp/wire.py``): on a plain TCP connection a reply is sent at
once when nothing is buffered before it; otherwise it goes behind the buffered bytes, so
replies always reach the client in order. Other transports are left to ``write``."""

from __future__ import annotations

import socket

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread

from mailserver.smtp.wire import send_now


class Sender(Protocol):
    """Writes three lines when connected: the first through ``write`` (still buffered when
    the others come), the next two through :func:`send_now`; records what it answered."""

    answers: list[bool]

    def connectionMade(self) -> None:
        self.answers = [send_now(self.transport, b"one\r\n")]
        self.transport.write(b"two\r\n")
        for line in (b"three\r\n", b"four\r\n"):
            sent = send_now(self.transport, line)
            self.answers.append(sent)
            if not sent:
                self.transport.write(line)
        self.factory.protocols.append(self)
        self.transport.loseConnection()


def read_all(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest_twisted.ensureDeferred
async def test_sent_at_once_when_nothing_waits_and_in_order_otherwise():
    """The first line goes out at once; once bytes wait in Twisted's buffer, send_now
    declines and the lines are written behind them: the client reads them in order."""
    factory = Factory.forProtocol(Sender)
    factory.protocols = []
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        received = await deferToThread(read_all, port.getHost().port)
    finally:
        await port.stopListening()
    assert received == b"one\r\ntwo\r\nthree\r\nfour\r\n"
    assert factory.protocols[0].answers == [True, False, False]


def test_other_transports_are_left_to_write():
    """An in-memory transport (as a TLS wrapper would be) is never written to directly."""
    transport = StringTransport()
    assert send_now(transport, b"250 OK\r\n") is False
    assert transport.value() == b""
