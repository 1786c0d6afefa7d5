"""Tests for differential_imap.py: what normalising an IMAP play takes out, what it keeps, and
under which step a response is filed (no peers)."""

from __future__ import annotations

import re

import differential
import pytest
from differential import Trace
from differential_imap import CONTINUATION, normalise_imap, tagged_steps
from runner import SEND, Dialog, parse_dialog_text

SAMPLE = parse_dialog_text(
    "# protocol: imap\n"
    "s~ \\* OK .*\n"  # 2
    "c: a1 LOGIN alice@example.org secret\n"
    "s* a1 OK .*\n"  # 4
    "c: a2 SELECT INBOX\n"
    "s* a2 OK .*\n"  # 6
    "c: a3 FETCH 1 (FLAGS INTERNALDATE BODY[TEXT])\n"
    "s* a3 OK .*\n"  # 8
    'c: a4 LIST (SUBSCRIBED) "" *\n'
    "s* a4 OK .*\n"  # 10
    "c: a5 STATUS Work (MESSAGES UIDNEXT)\n"
    "s* a5 OK .*\n"  # 12
    "c: a6 SEARCH ALL\n"
    "s* a6 OK .*\n"  # 14
    "c: a7 APPEND Work {3}\n"
    "s~ \\+.*\n"  # 16
    "c: abc\n"
    "s* a7 OK .*\n",  # 18
    "sample.dialog",
)

OURS = (
    "* OK [CAPABILITY IMAP4rev1 IMAP4rev2 AUTH=PLAIN] imap.test IMAP4rev2 server ready\n"
    "a1 OK [CAPABILITY IMAP4rev1 IMAP4rev2] Logged in\n"
    "* FLAGS (\\Answered \\Seen)\n* 3 EXISTS\n* OK [UIDVALIDITY 17] UIDs valid\n"
    "* OK [HIGHESTMODSEQ 4] Highest\n* OK [MAILBOXID (F1)] Mailbox id\n"
    "a2 OK [READ-WRITE] SELECT completed\n"
    "* 1 FETCH (BODY[TEXT] {4}\nab\n FLAGS (\\Seen \\Recent)"
    ' INTERNALDATE " 1-Jan-2024 10:00:00 +0000")\n'
    "a3 OK FETCH completed\n"
    '* LIST (\\HasNoChildren \\Subscribed) "/" INBOX\na4 OK LIST completed\n'
    "* STATUS Work (MESSAGES 1 UIDNEXT 2)\na5 OK STATUS completed\n"
    "* SEARCH 1 2 3\na6 OK SEARCH completed\n"
    "+ Ready\na7 OK [APPENDUID 17 2] APPEND completed"
)
THEIRS = (
    "* OK [CAPABILITY IMAP4rev1 SASL-IR] Dovecot ready.\n"
    "* CAPABILITY IMAP4rev1 SORT\na1 OK Logged in\n"
    "* 3 EXISTS\n* OK [UIDVALIDITY 99] UIDs valid\n* FLAGS (\\Seen \\Answered)\n"
    "a2 OK [READ-WRITE] Select completed (0.001 secs).\n"
    '* 1 FETCH (FLAGS (\\Recent \\Seen) INTERNALDATE "01-Jan-2024 10:00:00 +0000"'
    " BODY[TEXT] {4}\nab\n)\n"
    "a3 OK Fetch completed.\n"
    '* LIST (\\Subscribed) "/" INBOX\na4 OK List completed.\n'
    "* STATUS Work (UIDNEXT 2 MESSAGES 1)\na5 OK Status completed.\n"
    "* SEARCH 3 2 1\na6 OK Search completed.\n"
    "+ OK\na7 OK [APPENDUID 99 2] Append completed."
)


_ENDS_STEP = re.compile(r"\+.*|[a-z]\d (OK|NO|BAD) .*")


def play_trace(dialog: Dialog, server: str) -> Trace:
    """A trace as runner.play records it for a server that sends ``server`` (lines): each
    expectation reads up to a tagged line or a continuation request (the first, the greeting)."""
    trace: Trace = []
    lines = iter(server.split("\n"))
    for step in dialog.steps:
        if step.kind == SEND:
            trace.append(("c", step.line, step.text.encode() + b"\r\n"))
            continue
        for line in lines:
            trace.append(("s", step.line, line.encode() + b"\r\n"))
            if _ENDS_STEP.fullmatch(line) or len(trace) == 1:
                break
    return trace


def test_allowed_variations_are_normalised_away() -> None:
    """Texts, CAPABILITY lists (untagged or code), UIDVALIDITY, informational untagged OKs,
    untagged order, FETCH item order around a literal, flag order, INTERNALDATE, unrequested
    CHILDREN attributes, STATUS item order and SEARCH number order make no difference."""
    ours = normalise_imap(play_trace(SAMPLE, OURS), SAMPLE)
    assert ours == normalise_imap(play_trace(SAMPLE, THEIRS), SAMPLE)
    assert [step for step, _ in ours] == [2, 4, 6, 8, 10, 12, 14, 18]  # "+" goes with a7


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("a2 OK [READ-WRITE]", "a2 OK [READ-ONLY]"),
        ("* 3 EXISTS", "* 4 EXISTS"),
        ("FLAGS (\\Recent \\Seen)", "FLAGS (\\Recent)"),
        ("\nab\n)", "\nAB\n)"),
        ("* SEARCH 3 2 1", "* SEARCH 3 2"),
        ("[APPENDUID 99 2]", "[APPENDUID 99 3]"),
        ("a5 OK Status", "a5 NO Status"),
        ("* OK [CAPABILITY IMAP4rev1 SASL-IR] Dovecot ready.", "* PREAUTH Dovecot ready."),
    ],
)
def test_real_differences_remain(old: str, new: str) -> None:
    """A different status, response code, count, flag, body octet, search result or UID is
    still a difference after normalising."""
    assert old in THEIRS
    changed = normalise_imap(play_trace(SAMPLE, THEIRS.replace(old, new)), SAMPLE)
    assert changed != normalise_imap(play_trace(SAMPLE, OURS), SAMPLE)


SHIFTED = parse_dialog_text(
    "# protocol: imap\n"
    "s~ \\* OK .*\n"  # 2
    "c: a1 NOOP extra\n"
    "s~ a1 BAD .*\n"  # 4
    "c: a2 STATUS Work (MESSAGES)\n"
    "s: * STATUS Work (MESSAGES 1)\n"  # 6
    "s~ a2 OK .*\n",  # 7
    "shifted.dialog",
)


def test_tagged_steps_are_the_expectations_that_start_with_the_tag() -> None:
    """Each tag's response belongs to the first expectation after its command that starts
    with the tag."""
    assert tagged_steps(SHIFTED) == {"a1": [4], "a2": [7]}


def test_a_response_read_by_another_step_is_filed_under_its_tag() -> None:
    """A reference that answers a line less than the dialog expects has its tagged line read
    by an earlier step; the response is still filed under the step of its tag, so it is
    compared with ours there and not shown as two differences."""
    trace: Trace = [
        ("s", 2, b"* OK ready\r\n"),
        ("c", 3, b"a1 NOOP extra\r\n"),
        ("s", 4, b"a1 OK done\r\n"),
        ("c", 5, b"a2 STATUS Work (MESSAGES)\r\n"),
        ("s", 6, b"a2 NO no such mailbox\r\n"),  # read by the untagged expectation
    ]
    assert normalise_imap(trace, SHIFTED) == [(2, "* OK"), (4, "a1 OK"), (7, "a2 NO")]
    assert normalise_imap(trace) == [(2, "* OK"), (4, "a1 OK"), (6, "a2 NO")]


def test_a_play_that_ends_inside_a_response_keeps_its_lines() -> None:
    """Untagged lines with no tagged line after them (the play ended) are still compared,
    normalised."""
    trace: Trace = [("s", 2, b"* OK ready\r\n"), ("c", 3, b"a1 LOGOUT\r\n")]
    trace.append(("s", 4, b"* BYE Logging out\r\n"))
    assert normalise_imap(trace, SHIFTED) == [(2, "* OK"), (4, "* BYE")]


def test_importing_registers_imap_with_differential() -> None:
    """differential.compare finds the IMAP normaliser, and Dovecot's lenient play reads a
    response it did not expect up to its tagged line."""
    assert differential.NORMALISERS["imap"] is normalise_imap
    assert differential.CONTINUATION["imap"] == CONTINUATION
