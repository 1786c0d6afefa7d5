"""CHUNKING and BINARYMIME (RFC 3030): BDAT transfers, errors, and staying in sync."""

from __future__ import annotations

import pytest_twisted

from tests.smtp.conftest import in_thread


def talk(server, *exchanges):
    raw = server.connect()
    raw.reply()
    raw.send(b"EHLO c.example\r\n")
    raw.reply()
    out = []
    for data, replies in exchanges:
        raw.send(data)
        out.extend(raw.code() for _ in range(replies))
    raw.close()
    return out


@pytest_twisted.ensureDeferred
async def test_bdat_in_chunks(smtp_server):
    """A message sent in BDAT chunks is stored byte for byte (no dot-stuffing)."""
    part1, part2 = b"Subject: chunks\r\n\r\n.line one\r\n", b"line two\r\n"
    replies = await in_thread(
        talk, smtp_server,
        (b"MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\n", 2),
        (b"BDAT %d\r\n" % len(part1) + part1, 1),
        (b"BDAT %d LAST\r\n" % len(part2) + part2, 1),
        (b"NOOP\r\n", 1),
    )
    assert [r[:9] for r in replies] == ["250 2.1.0", "250 2.1.5", "250 2.0.0", "250 2.0.0",
                                        "250 2.0.0"]
    [stored] = smtp_server.messages("alice")
    assert stored.endswith(part1 + part2)


@pytest_twisted.ensureDeferred
async def test_binarymime_needs_bdat(smtp_server):
    """BODY=BINARYMIME refuses DATA (503) and accepts bare bytes through BDAT."""
    body = b"Subject: bin\r\n\r\n\x00\x01\n\r\xff"
    replies = await in_thread(
        talk, smtp_server,
        (b"MAIL FROM:<a@example.net> BODY=BINARYMIME\r\nRCPT TO:<alice@example.org>\r\n", 2),
        (b"DATA\r\n", 1),
        (b"BDAT %d LAST\r\n" % len(body) + body, 1),
    )
    assert replies[2].startswith("503 5.5.1")
    assert replies[3].startswith("250 2.0.0")
    assert smtp_server.messages("alice")[0].endswith(body)


@pytest_twisted.ensureDeferred
async def test_bdat_without_transaction_is_read_then_refused(smtp_server):
    """A BDAT chunk out of sequence is consumed (never run as commands) and refused."""
    chunk = b"RSET\r\nMAIL FROM:<evil@example.net>\r\n"
    replies = await in_thread(
        talk, smtp_server, (b"BDAT %d\r\n" % len(chunk) + chunk + b"NOOP\r\n", 2)
    )
    assert replies[0].startswith("503 5.5.1")
    assert replies[1].startswith("250 2.0.0")


@pytest_twisted.ensureDeferred
async def test_bdat_after_refused_recipients(smtp_server):
    """BDAT with no accepted recipient reads the chunk and answers 554."""
    chunk = b"Subject: x\r\n\r\nx\r\n"
    replies = await in_thread(
        talk, smtp_server,
        (b"MAIL FROM:<a@example.net>\r\nRCPT TO:<nobody@example.org>\r\n", 2),
        (b"BDAT %d LAST\r\n" % len(chunk) + chunk + b"NOOP\r\n", 2),
    )
    assert replies[2].startswith("554") and replies[3].startswith("250")


@pytest_twisted.ensureDeferred
async def test_bdat_too_big(smtp_server):
    """Chunks adding up beyond the size limit are refused with 552 5.3.4; nothing is stored."""
    chunk = b"x" * 60_000
    replies = await in_thread(
        talk, smtp_server,
        (b"MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\n", 2),
        (b"BDAT 60000\r\n" + chunk, 1),
        (b"BDAT 60000 LAST\r\n" + chunk, 1),
        (b"NOOP\r\n", 1),
    )
    assert replies[3].startswith("552 5.3.4")
    assert replies[4].startswith("250")
    assert smtp_server.messages("alice") == []


@pytest_twisted.ensureDeferred
async def test_bad_bdat_syntax(smtp_server):
    """BDAT without a valid size gets 501."""
    replies = await in_thread(talk, smtp_server, (b"BDAT x\r\n", 1), (b"BDAT 5 NOW\r\n", 1))
    assert all(r.startswith("501") for r in replies)
