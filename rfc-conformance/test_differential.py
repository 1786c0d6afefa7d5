"""Tests for differential.py: normalising, comparing and the variations file (no peers)."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from differential import (
    VARIATIONS,
    Difference,
    compare,
    differences,
    judge,
    load_variations,
    normalise_pop3,
    normalise_smtp,
    report,
)
from runner import Result, parse_dialog_text

POP3 = parse_dialog_text(
    "# protocol: pop3\n"
    "s~ \\+OK.*\n"  # 2
    "c: CAPA\n"
    "s* \\.\n"  # 4
    "c: AUTH PLAIN\n"
    "s: + \n"  # 6
    "c: AGFsaWNlAHNlY3JldA==\n"
    "s~ \\+OK.*\n"  # 8
    "c! STAT\\r\\nUIDL\\r\\nUIDL 1\\r\\n\n"
    "s~ \\+OK.*\n"  # 10
    "s* \\.\n"  # 11
    "s~ \\+OK.*\n"  # 12
    "c: RETR 1\n"
    "s* \\.\n"  # 14
    "c: DELE 9\n"
    "s~ -ERR.*\n",  # 16
    "dialogs/pop3/sample.dialog",
)

OUR_POP3 = [
    ("s", 2, b"+OK ready <1.2@host>\r\n"),
    ("c", 3, b"CAPA\r\n"),
    ("s", 4, b"+OK Capability list follows\r\n"),
    ("s", 4, b"TOP\r\n"),
    ("s", 4, b"UIDL\r\n"),
    ("s", 4, b".\r\n"),
    ("c", 5, b"AUTH PLAIN\r\n"),
    ("s", 6, b"+ \r\n"),
    ("c", 7, b"AGFsaWNlAHNlY3JldA==\r\n"),
    ("s", 8, b"+OK Logged in.\r\n"),
    ("c", 9, b"STAT\r\nUIDL\r\nUIDL 1\r\n"),
    ("s", 10, b"+OK 2 165\r\n"),
    ("s", 11, b"+OK\r\n"),
    ("s", 11, b"1 abc\r\n"),
    ("s", 11, b"2 def\r\n"),
    ("s", 11, b".\r\n"),
    ("s", 12, b"+OK 1 abc\r\n"),
    ("c", 13, b"RETR 1\r\n"),
    ("s", 14, b"+OK 92 octets\r\n"),
    ("s", 14, b"Subject: one\r\n"),
    ("s", 14, b"\r\n"),
    ("s", 14, b"..leading dot\r\n"),
    ("s", 14, b".\r\n"),
    ("c", 15, b"DELE 9\r\n"),
    ("s", 16, b"-ERR [SYS/PERM] no such message\r\n"),
]


def _theirs(replace: dict[bytes, bytes]) -> list[tuple[str, int, bytes]]:
    return [(kind, step, replace.get(data, data)) for kind, step, data in OUR_POP3]


def test_pop3_normalising_keeps_what_the_rfcs_fix():
    """Status text, UIDL ids and the CAPA list go; STAT and LIST numbers, response codes and
    message content stay; a SASL answer is not taken for a command; pipelined commands are
    matched in order."""
    assert normalise_pop3(OUR_POP3) == [
        (2, "+OK"),
        (4, "+OK / ."),
        (6, "+"),
        (8, "+OK"),
        (10, "+OK 2 165"),
        (11, "+OK / 1 _ / 2 _ / ."),
        (12, "+OK 1 _"),
        (14, "+OK / Subject: one /  / ..leading dot / ."),
        (16, "-ERR [SYS/PERM]"),
    ]


def test_pop3_allowed_variations_make_no_difference():
    """Another greeting, other status texts, other UIDs and another CAPA list compare equal."""
    theirs = _theirs(
        {
            b"+OK ready <1.2@host>\r\n": b"+OK Dovecot ready.\r\n",
            b"TOP\r\n": b"SASL PLAIN\r\n",
            b"1 abc\r\n": b"1 00000001deadbeef\r\n",
            b"+OK 1 abc\r\n": b"+OK 1 00000001deadbeef\r\n",
            b"+OK 92 octets\r\n": b"+OK\r\n",
            b"-ERR [SYS/PERM] no such message\r\n": b"-ERR [SYS/PERM] There's no message 9.\r\n",
        }
    )
    passed = Result(POP3, True)
    assert differences(POP3, "d", (passed, OUR_POP3), (passed, theirs)) == []


@pytest.mark.parametrize(
    ("old", "new", "step"),
    [
        (b"+OK 2 165\r\n", b"+OK 2 166\r\n", 10),
        (b"..leading dot\r\n", b".leading dot\r\n", 14),
        (b"-ERR [SYS/PERM] no such message\r\n", b"-ERR no such message\r\n", 16),
        (b"2 def\r\n", b"3 def\r\n", 11),
        (b"+OK Logged in.\r\n", b"-ERR [AUTH] no\r\n", 8),
    ],
)
def test_pop3_real_differences_remain(old, new, step):
    """A different count, octet of content, response code, message number or status is a
    difference, reported at the step that read it."""
    passed = Result(POP3, True)
    found = differences(POP3, "d", (passed, OUR_POP3), (passed, _theirs({old: new})))
    assert [difference.step for difference in found] == [step]


def test_smtp_normalising_keeps_codes_only():
    """Reply text and the EHLO keyword list go; each reply is its code and enhanced code."""
    trace = [
        ("s", 1, b"220 mx.test ESMTP ready\r\n"),
        ("c", 2, b"EHLO x\r\n"),
        ("s", 3, b"250-mx.test greets x\r\n"),
        ("s", 3, b"250-PIPELINING\r\n"),
        ("s", 3, b"250 SIZE 100000\r\n"),
        ("s", 5, b"550 5.1.1 <nobody@example.org>: no such user\r\n"),
        ("s", 6, b"354 Go ahead\r\n"),
        ("s", 7, b"221 2.0.0 Bye\r\n"),
    ]
    assert normalise_smtp(trace) == [
        (1, "220"),
        (3, "250"),
        (5, "550 5.1.1"),
        (6, "354"),
        (7, "221 2.0.0"),
    ]


def test_reference_play_ending_early_is_one_difference_at_that_step():
    """An expectation the reference did not meet is compared like any other step, and the
    later steps too; when its play ended (closed, timeout inside a reply), that step is the
    difference (what it sent, then how it ended) and later steps are not compared."""
    dialog = parse_dialog_text(
        "# protocol: smtp\ns~ 220 .*\nc: RCPT TO:<x@y>\ns~ 550 5\\.7\\.1 .*\nc: QUIT\ns~ 221 .*\n",
        "d",
    )
    ours = [("s", 2, b"220 a\r\n"), ("s", 4, b"550 5.7.1 no\r\n"), ("s", 6, b"221 bye\r\n")]
    theirs = [("s", 2, b"220 b\r\n"), ("s", 4, b"554 5.7.1 Relay access denied\r\n")]
    unmet = Result(dialog, False, dialog.steps[2], "line does not match", "550", "554 ...")
    went_on = [*theirs, ("s", 6, b"221 Bye\r\n")]
    found = differences(dialog, "d", (Result(dialog, True), ours), (unmet, went_on))
    assert found == [Difference("d", 4, "550 5.7.1", "554 5.7.1")]
    closed = Result(
        dialog, False, dialog.steps[2], "server closed the connection", "550", "<connection closed>"
    )
    found = differences(dialog, "d", (Result(dialog, True), ours), (closed, theirs[:1]))
    assert found == [Difference("d", 4, "550 5.7.1", "<closed>")]
    cut = Result(
        dialog, False, dialog.steps[2], "server closed the connection", "550", "<connection closed>"
    )
    inside = [theirs[0], ("s", 4, b"550-5.7.1 first line of a reply that never ends\r\n")]
    found = differences(dialog, "d", (Result(dialog, True), ours), (cut, inside))
    assert found == [Difference("d", 4, "550 5.7.1", "<closed>")]


def test_hang_up_is_one_stable_difference_whatever_the_client_noticed_first():
    """A reference that answers 221/421 and closes while the client is still sending gives
    the same difference whether the client read that reply or failed to send first."""
    dialog = parse_dialog_text(
        "# protocol: smtp\ns~ 220 .*\nc: X\nc: Y\nc: Z\ns~ 250 .*\nc: QUIT\ns~ 221 .*\n", "d"
    )
    ours = [("s", 2, b"220 a\r\n"), ("s", 6, b"250 ok\r\n"), ("s", 8, b"221 bye\r\n")]
    greeting = [("s", 2, b"220 b\r\n")]
    read_it = greeting + [("s", 6, b"221 2.7.0 Goodbye\r\n")]
    closed = Result(
        dialog, False, dialog.steps[6], "server closed the connection", "221", "<connection closed>"
    )
    send_failed = Result(dialog, False, dialog.steps[2], "send failed: [Errno 32] Broken pipe")
    first = differences(dialog, "d", (Result(dialog, True), ours), (closed, read_it))
    second = differences(dialog, "d", (Result(dialog, True), ours), (send_failed, greeting))
    assert first == second == [Difference("d", 6, "250", "<closed>")]


def test_judge_separates_unexplained_differences_and_stale_variations(tmp_path):
    """A difference recorded exactly is explained; one recorded with other texts is not; a
    recorded variation that did not occur is stale; the report says what to do."""
    table = tmp_path / "variations.tsv"
    dialogs = tmp_path / "dialogs" / "smtp"
    dialogs.mkdir(parents=True)
    (dialogs / "d.dialog").write_text("# protocol: smtp\ns~ 220 .*\nc: X\ns~ 5.*\ns~ 2.*\n")
    table.write_text(
        "dialog\tstep\tours\ttheirs\trfc\n"
        "dialogs/smtp/d.dialog\t4\t500 5.5.2\t502 5.5.2\tRFC 5321 §4.2.4: either\n"
        "dialogs/smtp/d.dialog\t5\t250\t251\tRFC 5321 §3.6: either\n"
    )
    rows, problems = load_variations(table)
    assert problems == []
    found = [
        Difference("dialogs/smtp/d.dialog", 4, "500 5.5.2", "502 5.5.2"),
        Difference("dialogs/smtp/d.dialog", 2, "220", "421"),
    ]
    unexplained, stale = judge(found, rows, "dialogs/smtp/d.dialog")
    assert unexplained == [found[1]]
    assert [row.step for row in stale] == [5]
    text = report(unexplained, stale)
    assert "dialogs/smtp/d.dialog\t2\t220\t421\tRFC ..." in text
    assert "line 3: dialogs/smtp/d.dialog:5" in text


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("dialogs/smtp/none.dialog\t2\ta\tb\tRFC 5321 §1: x", "no dialog dialogs/smtp/none.dialog"),
        (
            "dialogs/smtp/d.dialog\t3\ta\tb\tRFC 5321 §1: x",
            "line 3 of dialogs/smtp/d.dialog is not an expectation",
        ),
        (
            "dialogs/smtp/d.dialog\tfour\ta\tb\tRFC 5321 §1: x",
            "step 'four' is not a dialog line number",
        ),
        (
            "dialogs/smtp/d.dialog\t2\ta\ta\tRFC 5321 §1: x",
            "ours and theirs must be given and differ",
        ),
        ("dialogs/smtp/d.dialog\t2\ta\tb\tbecause", "must quote the RFC text"),
        ("dialogs/smtp/d.dialog\t2\ta\tb", "expected 5 columns, found 4"),
    ],
)
def test_malformed_variation_rows_are_reported(tmp_path, line, expected):
    table = tmp_path / "variations.tsv"
    (tmp_path / "dialogs" / "smtp").mkdir(parents=True)
    (tmp_path / "dialogs" / "smtp" / "d.dialog").write_text("# protocol: smtp\ns~ 220 .*\nc: X\n")
    table.write_text("# comment\ndialog\tstep\tours\ttheirs\trfc\n" + line + "\n")
    _, problems = load_variations(table)
    assert len(problems) == 1 and problems[0].startswith("variations.tsv:3: ")
    assert expected in problems[0]


def test_real_variations_file_is_consistent():
    rows, problems = load_variations(VARIATIONS)
    assert problems == []
    assert all(Path(VARIATIONS.parent / row.dialog).is_file() for row in rows)


class Scripted(socketserver.StreamRequestHandler):
    """Greets, then answers each command line from the server's `replies` by verb."""

    def handle(self):
        self.wfile.write(self.server.greeting)
        for line in self.rfile:
            self.wfile.write(self.server.replies[line.split()[0]])
            if line.startswith(b"QUIT"):
                return


@contextmanager
def serve(greeting: bytes, replies: dict[bytes, bytes]) -> Iterator[int]:
    """A Scripted server on a loopback port for the duration of the block."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Scripted)
    server.daemon_threads = True
    server.greeting, server.replies = greeting, replies
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_compare_plays_both_servers_over_loopback():
    """compare() plays the dialog against two live line servers and reports the step where
    their answers differ beyond the allowed text."""
    dialog = parse_dialog_text(
        "# protocol: smtp\ns~ 220 .*\nc: NOOP\ns~ 250 .*\nc: QUIT\ns~ 221 .*\nclose\n",
        "dialogs/smtp/x.dialog",
    )
    ours = {b"NOOP": b"250 2.0.0 Ok\r\n", b"QUIT": b"221 2.0.0 Bye\r\n"}
    theirs = {b"NOOP": b"250 Fine\r\n", b"QUIT": b"221 2.0.0 See you\r\n"}
    with (
        serve(b"220 ours\r\n", ours) as our_port,
        serve(b"220 theirs ESMTP\r\n", theirs) as their_port,
    ):
        result, found = compare(
            dialog, "dialogs/smtp/x.dialog", ("127.0.0.1", our_port), ("127.0.0.1", their_port)
        )
    assert result.passed
    assert found == [Difference("dialogs/smtp/x.dialog", 4, "250 2.0.0", "250")]
