"""Every SMTP conformance dialog (rfc-conformance/dialogs/smtp/*.dialog) played against the
in-process server over a real loopback socket.

The dialogs prove wire-level rules; where a rule is about what gets stored (dot-stuffing,
smuggling, trace headers), ``AFTER`` adds a check of the store once the dialog has passed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted

from mailserver import config
from mailserver.smtp.factory import SMTPPolicy
from tests.conformance import dialogs, load_runner
from tests.smtp.conftest import in_thread

DIALOGS = dialogs("smtp")
runner = load_runner()


def _dot_stuffing(server: Any) -> None:
    """RFC 5321 §4.5.2: one leading dot is removed; a lone ".." line is stored as "."."""
    [stored] = server.messages("alice")
    body = stored.split(b"\r\n\r\n", 1)[1]
    assert body == b".leading dot\r\n.\r\n...\r\nlast line\r\n", body


def _nothing_stored(server: Any) -> None:
    """Nothing reached any mailbox (refused, aborted or smuggled content)."""
    assert server.messages("alice") == [] and server.messages("bob") == []


def _one_message(server: Any) -> None:
    """Exactly one message reached alice (and none reached bob)."""
    assert len(server.messages("alice")) == 1 and server.messages("bob") == []


def _long_line_kept(server: Any) -> None:
    """RFC 5321 §4.5.3.1.6: the 1000-octet line is stored whole."""
    [stored] = server.messages("alice")
    assert b"\r\n" + b"z" * 998 + b"\r\n" in stored


def _trace_headers(server: Any) -> None:
    """RFC 5321 §4.4: Return-Path and our Received come first, the old Received is kept
    verbatim, and with two recipients our Received has no FOR clause; §2.4: the sender's
    local-part keeps its case."""
    [stored] = server.messages("bob")
    assert server.messages("alice") == [stored]
    head, body = stored.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"Return-Path: <Old.Sender@"), lines[0]
    assert lines[1].startswith(b"Received: from client.example "), lines[1]
    ours = b"\r\n".join(lines[1:]).split(b"\r\nReceived: ", 1)[0]
    assert b"for <" not in ours
    old = b"Received: from old.example by relay.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    assert old + b"Subject: trace\r\n\r\n" in stored
    assert body == b"Trace test.\r\n"


def _bdat_verbatim(server: Any) -> None:
    """RFC 3030 §2: BDAT content is stored as sent, with no dot-unstuffing."""
    [stored] = server.messages("alice")
    assert stored.endswith(b"\r\nSubject: chunks\r\n\r\n..dots stay\r\n")


def _binary_verbatim(server: Any) -> None:
    """RFC 3030 §3: BINARYMIME content (NUL, bare CR/LF, 8-bit) is stored untouched."""
    [stored] = server.messages("alice")
    assert stored.endswith(b"\r\nSubject: bin\r\n\r\n\x00\x01\n\r\xff\xfe")


def _eight_bit_kept(server: Any) -> None:
    """RFC 6152 §3: every bit of every octet is preserved."""
    [stored] = server.messages("alice")
    assert stored.endswith("\r\n\r\nGrüße aus Köln — café\r\n".encode())


def _utf8_stored(server: Any) -> None:
    """RFC 6531: the UTF-8 sender and headers are kept; the trace says UTF8SMTP (§3.7.3)."""
    [stored] = server.messages("alice")
    assert stored.startswith("Return-Path: <josé@example.net>\r\n".encode())
    assert b" with UTF8SMTP id " in stored
    assert "From: José <josé@example.net>\r\nSubject: café\r\n".encode() in stored


AFTER: dict[str, Callable[[Any], None]] = {
    "data-dot-stuffing.dialog": _dot_stuffing,
    "data-bare-lf.dialog": _nothing_stored,
    "data-smuggling-lf-dot-lf.dialog": _nothing_stored,
    "data-smuggling-cr-dot-cr.dialog": _nothing_stored,
    "quit-aborts-transaction.dialog": _nothing_stored,
    "postmaster.dialog": _one_message,
    "too-many-recipients.dialog": _one_message,
    "text-line-1000.dialog": _long_line_kept,
    "trace-headers.dialog": _trace_headers,
    "bdat-chunks.dialog": _bdat_verbatim,
    "binarymime.dialog": _binary_verbatim,
    "eightbitmime.dialog": _eight_bit_kept,
    "smtputf8.dialog": _utf8_stored,
}


def test_every_check_names_a_dialog():
    """A renamed dialog must not silently lose its store check."""
    assert set(AFTER) <= {path.name for path in DIALOGS}


@pytest.mark.parametrize("path", DIALOGS, ids=[path.name for path in DIALOGS])
@pytest_twisted.ensureDeferred
async def test_dialog(smtp_server, submission_server, path):
    """The dialog passes against our server (and the store holds what it should).
    ``submission-*`` dialogs run against a submission listener (AUTH after STARTTLS),
    the others against the port-25 listener."""
    server = submission_server if path.name.startswith("submission-") else smtp_server
    dialog = runner.parse_dialog(path)
    result = await in_thread(runner.play, dialog, server.host, server.port)
    assert result.passed, result.summary()
    check = AFTER.get(path.name)
    if check is not None:
        check(server)


def test_policy_defaults_meet_rfc_5321_minimums():
    """What the dialogs cannot show (they run with the test policy): the shipped defaults
    wait 5 minutes for a command (§4.5.3.2.7), buffer 100 recipients (§4.5.3.1.8), take
    512-octet command lines (§4.5.3.1.4) and messages of 64K octets (§4.5.3.1.7)."""
    for limits in (SMTPPolicy(), config.load(None).smtp):
        assert limits.command_timeout >= 300
        assert limits.max_recipients >= 100
        assert limits.max_line_length >= 512
        assert limits.max_message_size == 0 or limits.max_message_size >= 64 * 1024
