"""Byte-stuffing at every size (RFC 1939 §3): a ``.`` at the start of a line gets a second
``.``, wherever the server's read chunks and the client's receive buffers happen to split
the message. Twisted's own POP3 server got this wrong at 16 KiB; these messages put a lone
``.`` line at 16,384 and at every 1 KiB boundary up to 1 MiB, and messages bigger than the
server's 64 KiB read chunk are streamed."""

from __future__ import annotations

from tests.pop3.conftest import in_thread

KIB = 1024


def dotted_message(size: int = 1024 * KIB) -> bytes:
    """A message whose every 1 KiB boundary starts a lone ``.`` line (odd blocks also have
    a line that starts with ``.`` and goes on); the first block is the header."""
    header = b"From: carol@example.net\r\nTo: alice@example.org\r\nSubject: dots\r\n"
    header += b"X-Pad: " + b"p" * (KIB - len(header) - 11) + b"\r\n\r\n"
    assert len(header) == KIB
    blocks = [header]
    for k in range(1, size // KIB):
        filler = (b".x" if k % 2 else b"y") + b"z" * (KIB - 3 - 2 - (2 if k % 2 else 1))
        blocks.append(b".\r\n" + filler + b"\r\n")
        assert len(blocks[-1]) == KIB, len(blocks[-1])
    data = b"".join(blocks)
    assert data[16384:16387] == b".\r\n"
    return data


def retrieve(server, number: int = 1) -> tuple[bytes, bytes]:
    client = server.poplib()
    try:
        status, lines, _octets = client.retr(number)
    finally:
        client.quit()
    return status, b"\r\n".join(lines) + b"\r\n"


async def test_lone_dots_at_every_kib_boundary_up_to_1_mib(pop3_server):
    """poplib gets the 1 MiB message back byte for byte."""
    data = dotted_message()
    await pop3_server.deliver(data)
    status, got = await in_thread(retrieve, pop3_server)
    assert status == f"+OK {len(data)} octets".encode()
    assert got == data


async def test_stuffed_bytes_on_the_wire(maildir_pop3):
    """On the wire every line that starts with ``.`` carries one more ``.``, and the response
    ends with the only lone ``.`` line."""
    data = dotted_message(256 * KIB)
    await maildir_pop3.deliver(data)

    def raw_retr():
        client = maildir_pop3.raw()
        client.login()
        client.send("RETR 1\r\n")
        status = client.line()
        while not client.buffer.endswith(b"\r\n.\r\n"):
            client._fill()
        wire = client.buffer
        client.command("QUIT")
        return status, wire

    status, wire = await in_thread(raw_retr)
    assert status == f"+OK {len(data)} octets".encode()
    expected = data.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    assert wire == expected
    assert wire.count(b"\r\n.\r\n") == 1


async def test_sizes_around_the_read_chunk(maildir_pop3):
    """Messages of 64 KiB - 1, 64 KiB, 64 KiB + 1 and 3 MiB (streamed) come back exactly,
    one after another in one session."""
    sizes = [64 * KIB - 1, 64 * KIB, 64 * KIB + 1, 3 * 1024 * KIB]
    messages = []
    for size in sizes:
        body = dotted_message(size - size % KIB + KIB)[:size]
        if not body.endswith(b"\r\n"):
            body = body[:-2] + b"\r\n"
        messages.append(body)
        await maildir_pop3.deliver(body)

    def retrieve_all():
        client = maildir_pop3.poplib()
        try:
            return [b"\r\n".join(client.retr(n)[1]) + b"\r\n" for n in range(1, len(sizes) + 1)]
        finally:
            client.quit()

    assert await in_thread(retrieve_all) == messages


async def test_message_without_final_crlf_ends_cleanly(pop3_server):
    """A message whose last line has no CRLF still ends with CRLF ``.`` CRLF."""
    data = b"Subject: tail\r\n\r\n.no newline at the end"
    await pop3_server.deliver(data)

    def raw_retr():
        client = pop3_server.raw()
        client.login()
        client.send("RETR 1\r\n")
        client.line()
        while not client.buffer.endswith(b"\r\n.\r\n"):
            client._fill()
        return client.buffer

    assert await in_thread(raw_retr) == b"Subject: tail\r\n\r\n..no newline at the end\r\n.\r\n"
