"""Memory per connection is bounded independently of message size (issue 12): the real
server takes a 40 MiB APPEND literal and a 40 MiB SMTP message while its peak resident
memory (``VmHWM`` in /proc/<pid>/status) grows by far less than the message, and both
messages read back intact.

This is a memory bound, not a timing threshold. The port-25 filter pipeline and the inbound
DKIM/SPF checks are off here: they still read the message whole (not yet streamed);
what is measured is the SMTP session, its spool, local delivery, the IMAP reader and the
store.
"""

from __future__ import annotations

import base64
import hashlib
import imaplib
import random
import smtplib
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.e2e.mail import PASSWORD, insecure_context, provision

pytestmark = pytest.mark.e2e

USER = "alice@example.org"
#: Message size; the bound asserted is a quarter of it.
SIZE = 40 * 1024 * 1024
LISTEN = ("http.listen", "smtp.listen", "imap.tls_listen")


def peak_rss(pid: int) -> int:
    """The process's peak resident set size in bytes (VmHWM)."""
    status = Path(f"/proc/{pid}/status")
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def big_message(seed: int, size: int) -> bytes:
    """A multipart message of about ``size`` octets: a short text part and a base64
    attachment in 76-character CRLF lines (as mail clients send them)."""
    blob = random.Random(seed).randbytes(size * 3 // 4 - 4096)
    attachment = base64.encodebytes(blob).replace(b"\n", b"\r\n")
    return (
        b"From: carol@example.net\r\nTo: alice@example.org\r\n"
        b"Subject: large %d\r\nMessage-ID: <large-%d@example.net>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n'
        b"--b%d\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n"
        b"--b%d\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" % (seed, seed, seed, seed, seed)
        + attachment
        + b"--b%d--\r\n" % seed
    )


def imap_client(port: int) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL(
        "127.0.0.1", port, ssl_context=insecure_context(), timeout=120
    )
    client.login(USER, PASSWORD)
    return client


def append(port: int, message: bytes) -> None:
    client = imap_client(port)
    typ, data = client.append("INBOX", "(\\Seen)", None, message)
    assert typ == "OK", data
    client.logout()


def send(port: int, message: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
        refused = client.sendmail("carol@example.net", [USER], message)
        assert not refused


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="/proc is not available")
@pytest_twisted.ensureDeferred
async def test_large_append_and_smtp_message_keep_server_memory_bounded(server_process):
    """A 40 MiB APPEND and a 40 MiB SMTP message each raise the server's peak RSS by less
    than a quarter of their size (the literal is spooled to disk, the store copies and
    parses in bounded memory), and both read back byte for byte."""
    server = server_process(
        {"filter": {"enabled": False}, "msgauth": {"enabled": False}}, listen_keys=LISTEN
    )
    await provision(server.data_dir, "example.org")
    await deferToThread(server.start)
    imap_port, smtp_port = server.ports["imap.tls_listen"], server.ports["smtp.listen"]
    pid = server.process.pid
    appended, sent = big_message(1, SIZE), big_message(2, SIZE)

    def scenario() -> dict[str, int]:
        # Warm up every code path with a small message first, so imports and caches are
        # not counted as the large messages' memory.
        small = big_message(0, 400 * 1024)
        append(imap_port, small)
        send(smtp_port, small)
        base = peak_rss(pid)
        send(smtp_port, sent)  # first: a peak set by one would hide the other's growth
        after_smtp = peak_rss(pid)
        append(imap_port, appended)
        after_append = peak_rss(pid)
        return {"base": base, "smtp": after_smtp - base, "append": after_append - after_smtp}

    growth = await deferToThread(scenario)
    print(f"peak RSS {growth['base'] >> 20} MiB; growth: SMTP {growth['smtp'] >> 10} KiB, "
          f"APPEND {growth['append'] >> 10} KiB, for messages of {SIZE >> 20} MiB")

    def read_back() -> list[bytes]:
        client = imap_client(imap_port)
        client.select("INBOX", readonly=True)
        typ, data = client.uid("FETCH", "3:4", "(BODY.PEEK[])")  # the SMTP one, then APPEND
        assert typ == "OK"
        client.logout()
        return [item[1] for item in data if isinstance(item, tuple)]

    stored = await deferToThread(read_back)
    # Reading is not bounded yet (FETCH builds a message's response whole): reported only.
    fetch_growth = peak_rss(pid) - growth["base"] - growth["smtp"] - growth["append"]
    print(f"FETCH of both messages: peak RSS growth {fetch_growth >> 10} KiB")
    assert len(stored) == 2
    assert hashlib.sha256(stored[1]).digest() == hashlib.sha256(appended).digest()
    # Local delivery adds Return-Path and our Received header in front of the message.
    assert hashlib.sha256(stored[0][-len(sent) :]).digest() == hashlib.sha256(sent).digest()
    assert stored[0].startswith(b"Return-Path: <carol@example.net>\r\n")
    assert growth["append"] < SIZE // 4, growth
    assert growth["smtp"] < SIZE // 4, growth
