"""The Received trace header (RFC 5321 §4.4, RFC 3848, RFC 6531 §3.7.3)."""

from __future__ import annotations

from email import message_from_bytes

from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.message.received import protocol_name, received_header


def test_protocol_names():
    """The with-clause names follow RFC 3848 and RFC 6531."""
    assert protocol_name(esmtp=False, tls=False, authenticated=False, utf8=False) == "SMTP"
    assert protocol_name(esmtp=True, tls=False, authenticated=False, utf8=False) == "ESMTP"
    assert protocol_name(esmtp=True, tls=True, authenticated=True, utf8=False) == "ESMTPSA"
    assert protocol_name(esmtp=True, tls=True, authenticated=False, utf8=True) == "UTF8SMTPS"


def test_header_parses_and_names_one_recipient():
    """The header is one folded field with from, by, with, id, for and a date."""
    raw = received_header(
        helo="client.example", client_address="127.0.0.1", client_name=None,
        hostname="mx.test", protocol="ESMTPS", queue_id="ABC123",
        recipient="alice@example.org", timestamp=0.0,
        tls="TLSv1.3 with cipher TLS_AES_256_GCM_SHA384",
    )
    assert raw.endswith(b"\r\n") and raw.count(b"\r\n\t") >= 3
    value = message_from_bytes(raw + b"\r\n")["Received"]
    for part in ("from client.example ([127.0.0.1])", "by mx.test (mailserver) with ESMTPS id",
                 "ABC123", "for <alice@example.org>;", "Thu, 01 Jan 1970 00:00:00 +0000",
                 "(using TLSv1.3 with cipher"):
        assert part in value


def test_header_text_cannot_inject_lines():
    """CR, LF and parentheses from the client's HELO never reach the header raw."""
    raw = received_header(
        helo="evil\r\nX-Injected: 1 (x)", client_address="127.0.0.1", client_name=None,
        hostname="mx.test", protocol="ESMTP", queue_id="Q", recipient=None, timestamp=0.0,
    )
    assert b"\r\nX-Injected" not in raw and b"for <" not in raw


@given(st.text(max_size=300))
@settings(max_examples=300)
def test_header_text_is_the_text_without_breaks_or_comment_characters(helo):
    """Any HELO is written without its CR, LF, parentheses and backslashes, cut at 255
    characters, and nothing else of it changes."""
    raw = received_header(
        helo=helo, client_address="127.0.0.1", client_name=None, hostname="mx.test",
        protocol="ESMTP", queue_id="Q", recipient=None, timestamp=0.0,
    )
    kept = "".join(c for c in helo if c not in "\r\n()\\")[:255] or "unknown"
    assert raw.startswith(f"Received: from {kept} ([127.0.0.1])\r\n".encode())
