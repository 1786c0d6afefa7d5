"""A big FETCH is streamed: the server holds a bounded amount of output however big the
response, while the client does not read (issue 6: nothing loads a whole mailbox into
memory), and the whole response still arrives intact once it does."""

from __future__ import annotations

import array
import fcntl
import re
import socket
import sys
import termios

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from mailserver.imap.commands.fetch import BATCH_BYTES
from tests.imap.conftest import in_thread, message

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads socket queues with Linux ioctls"
)

COUNT = 80
BODY_LINE = b"x" * 998 + b"\r\n"
BODY = BODY_LINE * 250  # 250 KB per message, 20 MB in all


def _queued(sock: socket.socket, request: int) -> int:
    value = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), request, value)
    return value[0]


@pytest_twisted.ensureDeferred
async def test_fetch_all_bodies_keeps_output_bounded(memory_imap):
    """FETCH 1:* BODY.PEEK[] of 20 MB to a client that reads nothing: once the server stops
    producing, what it wrote that is neither in the kernel's send queue nor in the client's
    receive queue (its own buffered output) stays within a batch, a message and the
    transport's buffer; the rest is produced only as the client reads, and arrives whole."""
    data = message("big", body=BODY.decode())
    for _ in range(COUNT):
        await memory_imap.deliver(data)
    protocols = []
    build = memory_imap.factory.buildProtocol

    def recording(addr):
        protocol = build(addr)
        protocols.append(protocol)
        return protocol

    memory_imap.factory.buildProtocol = recording  # type: ignore[method-assign]
    client = await in_thread(memory_imap.raw)
    await in_thread(client.login)
    assert (await in_thread(client.command, "S", "SELECT INBOX"))[-1].startswith("S OK")
    server = protocols[0]
    written = [0]
    write = server.transport.write

    def counting(chunk):
        written[0] += len(chunk)
        write(chunk)

    server.transport.write = counting
    client.send("F FETCH 1:* BODY.PEEK[]\r\n")
    stable, last = 0, -1
    while stable < 20:  # until the server has written nothing more for 20 reactor rounds
        await deferLater(reactor, 0.02, lambda: None)
        stable = stable + 1 if written[0] == last else 0
        last = written[0]
    server_socket = server.transport.getHandle()
    in_kernel = _queued(server_socket, termios.TIOCOUTQ) + _queued(client.sock, termios.FIONREAD)
    held = written[0] - in_kernel
    total = COUNT * len(data)
    assert written[0] < total // 2  # the response waits for the client
    assert held <= BATCH_BYTES + len(data) + 2 * 65536

    lines = await in_thread(client.until_bytes, "F")
    assert lines[-1].startswith(b"F OK")
    fetched = [line for line in lines if line.startswith(b"* ")]
    assert len(fetched) == COUNT
    for number, line in enumerate(fetched, 1):
        assert re.match(rb"\* %d FETCH \(BODY\[\] \{%d\}\r\n" % (number, len(data)), line)
        assert line.endswith(data + b")")
    client.close()


@pytest_twisted.ensureDeferred
async def test_client_gone_mid_stream(memory_imap):
    """A client that closes the connection while a big FETCH waits for it to read: the
    session ends (the stream stops producing) and the server serves the next client."""
    data = message("big", body=BODY.decode())
    for _ in range(COUNT):
        await memory_imap.deliver(data)
    client = await in_thread(memory_imap.raw)
    await in_thread(client.login)
    await in_thread(client.command, "S", "SELECT INBOX")
    client.send("F FETCH 1:* BODY.PEEK[]\r\n")
    await in_thread(client.line)  # the stream has begun
    client.close()
    while memory_imap.factory.connections:
        await deferLater(reactor, 0.02, lambda: None)
    other = await in_thread(memory_imap.raw)
    await in_thread(other.login)
    lines = await in_thread(other.command, "S", "SELECT INBOX")
    assert lines[-1].startswith("S OK") and f"* {COUNT} EXISTS" in lines
    other.close()


@pytest_twisted.ensureDeferred
async def test_unknown_encoding_after_answered_messages(memory_imap):
    """BINARY of 1:3 where message 2 has an unknown transfer encoding: message 1 is answered,
    then the command ends NO [UNKNOWN-CTE] (RFC 3516 §4.1); nothing after it is sent."""
    await memory_imap.deliver(message("one", body="first\r\n"))
    await memory_imap.deliver(message("two", body="odd\r\n", Content_Transfer_Encoding="x-frob"))
    await memory_imap.deliver(message("three", body="third\r\n"))
    client = await in_thread(memory_imap.raw)
    await in_thread(client.login)
    await in_thread(client.command, "S", "SELECT INBOX")
    lines = await in_thread(client.command, "F", "FETCH 1:3 (BINARY.PEEK[1])")
    assert lines[0] == "* 1 FETCH (BINARY[1] {7}\r\nfirst\r\n)"
    assert len(lines) == 2 and lines[1].startswith("F NO [UNKNOWN-CTE]")
    client.close()


@pytest_twisted.ensureDeferred
async def test_stream_over_starttls(tls_imap):
    """The streamed FETCH after STARTTLS (the TLS layer is then the producer's consumer):
    several batches of messages arrive whole and in order, and the session goes on."""
    data = message("big", body=BODY.decode())
    count = 12  # 3 MB: several batches
    for _ in range(count):
        await tls_imap.deliver(data)

    def dialog():
        client = tls_imap.raw()
        assert client.command("T", "STARTTLS") == ["T OK Begin TLS negotiation now"]
        client.starttls()
        client.login()
        client.command("S", "SELECT INBOX")
        client.send("F FETCH 1:* (UID BODY.PEEK[])\r\n")
        lines = client.until_bytes("F")
        assert lines[-1].startswith(b"F OK")
        assert lines[:-1] == [
            b"* %d FETCH (UID %d BODY[] {%d}\r\n%s)" % (n, n, len(data), data)
            for n in range(1, count + 1)
        ]
        assert client.command("N", "NOOP") == ["N OK NOOP completed"]
        client.close()

    await in_thread(dialog)
