"""MessageSender streams RETR/TOP from the file in bounded chunks: a small message goes out
in one write with its status line and terminator; a big one is a streaming producer that
stops reading while the transport is paused and reads on when resumed, so a slow client
never makes the server hold the message in memory."""

from __future__ import annotations

import io

from twisted.internet.defer import maybeDeferred
from twisted.internet.testing import StringTransport

from mailserver.pop3.grammar import TopLimiter
from mailserver.pop3.sender import MessageSender


class CountingFile(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads = 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        return super().read(size)


def sender_for(data: bytes, chunk: int = 1024, limiter=None):
    transport = StringTransport()
    source = CountingFile(data)
    first = source.read(chunk)
    sender = MessageSender(transport, transport.write, maybeDeferred, source, limiter, chunk)
    return transport, source, sender, first


def test_small_message_is_one_write():
    transport, source, sender, first = sender_for(b"Subject: s\r\n\r\n.x\r\n")
    writes = []
    sender.write = writes.append
    done = sender.start(b"+OK 19 octets\r\n", first)
    assert done.called and source.closed
    assert writes == [b"+OK 19 octets\r\nSubject: s\r\n\r\n..x\r\n.\r\n"]
    assert transport.producer is None


def test_big_message_waits_while_paused():
    """The sender registers as a streaming producer; a pause stops the reads (nothing more is
    written), a resume finishes the message exactly."""
    data = b"".join(b".%06d\r\n" % n for n in range(2000))  # 18,000 octets
    transport, source, sender, first = sender_for(data)
    sender.pauseProducing()  # the transport's buffer is full before we start
    done = sender.start(b"+OK\r\n", first)
    assert transport.producer is sender and transport.streaming
    assert source.reads == 1 and not done.called  # only the first chunk was read
    written = len(transport.value())
    sender.resumeProducing()
    assert done.called and source.closed and transport.producer is None
    assert len(transport.value()) > written
    assert transport.value() == b"+OK\r\n" + data.replace(b".", b"..") + b".\r\n"


def test_stop_producing_closes_the_file():
    """A lost connection stops the sender: the file is closed and the command is over."""
    data = b"x" * 10_000 + b"\r\n"
    transport, source, sender, first = sender_for(data)
    sender.pauseProducing()
    done = sender.start(b"+OK\r\n", first)
    sender.stopProducing()
    assert done.called and source.closed


def test_top_stops_reading_early():
    """TOP 1 of a long message reads no further than the chunk holding the line it needs."""
    data = b"Subject: t\r\n\r\nfirst\r\n" + b"y" * 100 + b"\r\n" * 5000
    transport, source, sender, first = sender_for(data, chunk=64, limiter=TopLimiter(1))
    done = sender.start(b"+OK\r\n", first)
    assert done.called and source.reads == 1
    assert transport.value() == b"+OK\r\nSubject: t\r\n\r\nfirst\r\n.\r\n"
