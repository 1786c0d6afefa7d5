"""A real Postfix relays into our server: the message lands in the INBOX intact, with our
Received header (naming Postfix's HELO) on top of Postfix's own, and Message-ID/Date untouched.

Topology (all on loopback): smtplib -> Postfix smtpd on 127.0.0.2:P -> Postfix queue ->
Postfix smtp client (STARTTLS opportunistic) -> our server on 127.0.0.1:Q -> maildir store.
"""

from __future__ import annotations

import email.parser
import email.policy
import smtplib
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.conftest import Storage
from tests.e2e import mail
from tests.e2e.conftest import ServerProcess
from tests.peers.postfix import PostfixInstance, relay_settings, unavailable_reason

REASON = unavailable_reason()
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

PEER_HELO = "relay.peer.test"
DELIVERY_TIMEOUT = 30.0

MESSAGE = (
    b"From: Bob <bob@example.net>\r\n"
    b"To: Alice <alice@example.org>\r\n"
    b"Subject: via postfix\r\n"
    b"Date: Tue, 03 Mar 2026 10:00:00 +0000\r\n"
    b"Message-ID: <postfix-relay-1@example.net>\r\n"
    b"\r\n"
    b"Hello Alice,\r\n"
    b".a line that starts with a dot (stuffed twice on the way)\r\n"
    b"\r\n"
    b"-- \r\nBob\r\n"
)


async def provision(data_dir: Path) -> None:
    """example.org with alice, written before the server starts."""
    storage = Storage(data_dir, fsync=True)
    try:
        await storage.directory.add_domain("example.org")
        await storage.directory.add_user("alice@example.org", "secret-pw")
        await storage.store.create_account("alice@example.org")
    finally:
        await storage.aclose()


async def inbox_messages(data_dir: Path) -> list[bytes]:
    """alice's INBOX through the store (read after the server stopped), in UID order."""
    return await mail.inbox_messages(data_dir, "alice@example.org")


def stored_files(data_dir: Path) -> int:
    """Message files in the store's Maildirs (new/ + cur/), without touching the index."""
    mail = data_dir / "mail"
    return sum(1 for p in mail.glob("**/cur/*")) + sum(1 for p in mail.glob("**/new/*"))


def wait_for_delivery(
    server: ServerProcess, peer: PostfixInstance, count: int, timeout: float = DELIVERY_TIMEOUT
) -> None:
    """Poll until ``count`` messages are in the store; fail with both MTAs' logs if not."""
    deadline = time.monotonic() + timeout
    while stored_files(server.data_dir) < count:
        if time.monotonic() > deadline:
            pytest.fail(
                f"{stored_files(server.data_dir)}/{count} messages stored after {timeout}s; "
                f"{peer.queued()} still queued in Postfix\n--- postfix maillog ---\n"
                f"{peer.maillog_text()}\n{server.output()}"
            )
        time.sleep(0.1)


def inject(peer: PostfixInstance, message: bytes, options: tuple[str, ...] = ()) -> None:
    """Submit ``message`` for alice@example.org to Postfix's smtpd."""
    with smtplib.SMTP(peer.smtpd_host, peer.smtpd_port, timeout=30) as client:
        client.ehlo("client.example.net")
        refused = client.sendmail(
            "bob@example.net", ["alice@example.org"], message, mail_options=list(options)
        )
        assert not refused, refused


async def start_pair(server_process, postfix_peer) -> tuple[ServerProcess, PostfixInstance]:
    """Our server (example.org, alice) and a Postfix relaying example.org to it."""
    server = server_process(
        {"store": {"fsync": True}, "server": {"hostname": "mx.test"}},
        listen_keys=("smtp.listen",),
    )
    await provision(Path(server.data_dir))
    await deferToThread(server.start)
    settings = relay_settings("example.org", "127.0.0.1", server.ports["smtp.listen"])
    settings["smtp_helo_name"] = PEER_HELO
    peer = postfix_peer(settings=settings)
    await deferToThread(peer.start)
    return server, peer


def split(stored: bytes) -> tuple[list[bytes], bytes]:
    """The header lines (unfolded) and the rest, from the first blank line on."""
    head, _, _ = stored.partition(b"\r\n\r\n")
    lines: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and lines:
            lines[-1] += b" " + line.strip()
        else:
            lines.append(line)
    return lines, stored[len(head) :]


@pytest_twisted.ensureDeferred
async def test_postfix_relays_into_inbox(server_process, postfix_peer):
    """Postfix -> us: body and original headers intact, trace headers in the right order."""
    server, peer = await start_pair(server_process, postfix_peer)
    await deferToThread(inject, peer, MESSAGE)
    await deferToThread(wait_for_delivery, server, peer, 1)
    log = peer.maillog_text()
    assert "status=sent" in log, log
    server.stop()
    [stored] = await inbox_messages(Path(server.data_dir))

    # Everything Postfix got is there byte for byte, below the trace headers.
    assert stored.endswith(MESSAGE), stored[:2000]
    lines, _ = split(stored)
    assert lines[0] == b"Return-Path: <bob@example.net>"
    received = [line for line in lines if line.lower().startswith(b"received:")]
    assert len(received) == 2, lines
    ours, theirs = received
    # Ours is on top and names the HELO Postfix's client sent ...
    assert lines[1] == ours
    assert ours.startswith(f"Received: from {PEER_HELO} ".encode()), ours
    assert b"by mx.test (mailserver) with ESMTP" in ours, ours
    # ... Postfix's own is kept below it, naming our test client's HELO.
    assert theirs.startswith(b"Received: from client.example.net "), theirs
    assert b"by postfix-peer.test (Postfix) with ESMTP" in theirs, theirs
    assert lines.index(theirs) == 2

    parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(stored)
    assert parsed["Message-ID"] == "<postfix-relay-1@example.net>"
    assert parsed["Date"] == "Tue, 03 Mar 2026 10:00:00 +0000"
    assert len(parsed.get_all("Message-ID")) == 1 and len(parsed.get_all("Date")) == 1


@pytest_twisted.ensureDeferred
async def test_postfix_relays_8bit_and_1mb(server_process, postfix_peer):
    """An 8BITMIME body and a 1 MB message both arrive unchanged (no MIME downgrade).

    Both carry a Date: Postfix's cleanup adds one to local clients' mail that has none."""
    server, peer = await start_pair(server_process, postfix_peer)
    eight_bit = (
        b"From: bob@example.net\r\nTo: alice@example.org\r\nSubject: 8bit\r\n"
        b"Date: Tue, 03 Mar 2026 10:00:01 +0000\r\n"
        b"Message-ID: <postfix-relay-8bit@example.net>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + "Grüße aus Köln – ✓ ☃\r\n".encode()
        + b"\xc3\xa9t\xc3\xa9\r\n"
    )
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_+=\r\n"
    body = line * (1024 * 1024 // len(line) + 1)
    big = (
        b"From: bob@example.net\r\nTo: alice@example.org\r\nSubject: big\r\n"
        b"Date: Tue, 03 Mar 2026 10:00:02 +0000\r\n"
        b"Message-ID: <postfix-relay-big@example.net>\r\n\r\n" + body + b".\r\n..\r\nend\r\n"
    )
    assert len(big) > 1024 * 1024
    await deferToThread(inject, peer, eight_bit, ("BODY=8BITMIME",))
    await deferToThread(inject, peer, big)
    await deferToThread(wait_for_delivery, server, peer, 2)
    server.stop()
    stored = await inbox_messages(Path(server.data_dir))
    assert len(stored) == 2
    by_id = {b"8bit" if b"<postfix-relay-8bit@" in m else b"big": m for m in stored}
    assert by_id[b"8bit"].endswith(eight_bit), by_id[b"8bit"][:1500]
    assert by_id[b"big"].endswith(big), len(by_id[b"big"])
