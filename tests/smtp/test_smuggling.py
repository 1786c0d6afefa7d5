"""SMTP smuggling (SEC Consult 2023, CVE-2023-51764/51765/51766): no end-of-data variant
other than <CRLF>.<CRLF> ends a message, so a second, smuggled message can never be injected.
The default policy rejects bare CR/LF like Postfix's ``smtpd_forbid_bare_newline = yes``."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.smtp.conftest import in_thread

SMUGGLED = (
    b"MAIL FROM:<admin@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
    b"Subject: smuggled\r\n\r\nforged\r\n.\r\n"
)
VARIANTS = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r\n.\r", b"\r.\r\n", b"\n.\r",
            b"\r\n\x00.\r\n", b"\r\n.\x00\r\n"]


def send_with(server, end: bytes):
    raw = server.connect()
    raw.reply()
    raw.send(b"EHLO c.example\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\n")
    raw.reply(), raw.reply(), raw.reply()
    raw.send(b"DATA\r\n")
    raw.reply()
    raw.send(b"Subject: first\r\n\r\nbody" + end + SMUGGLED + b"\r\n.\r\nQUIT\r\n")
    replies = []
    try:
        while True:
            replies.append(raw.code())
    except (ConnectionError, OSError):
        pass
    raw.close()
    return replies


@pytest.mark.parametrize("end", VARIANTS, ids=[repr(v) for v in VARIANTS])
@pytest_twisted.ensureDeferred
async def test_variant_never_smuggles_a_second_message(smtp_server, end):
    """The variant does not end the message, and the smuggled message reaches nobody."""
    replies = await in_thread(send_with, smtp_server, end)
    assert smtp_server.messages("bob") == []
    if b"\x00" in end and b"\n" not in end.replace(b"\r\n", b""):
        # no bare CR/LF: the whole thing is one message with a NUL in it
        assert replies[0].startswith("250 2.0.0")
        assert len(smtp_server.messages("alice")) == 1
    else:
        assert replies[0].startswith("521 5.5.2")
        assert smtp_server.messages("alice") == []


@pytest.mark.parametrize("end", VARIANTS, ids=[repr(v) for v in VARIANTS])
@pytest_twisted.ensureDeferred
async def test_variant_in_normalize_mode_stays_inside_the_message(smtp_server, make_policy, end):
    """In normalize mode the variant is message text: one message, the smuggled part inside."""
    smtp_server.factory.policy = make_policy(bare_newline="normalize")
    replies = await in_thread(send_with, smtp_server, end)
    assert replies[0].startswith("250 2.0.0")
    assert smtp_server.messages("bob") == []
    [stored] = smtp_server.messages("alice")
    assert b"forged" in stored
