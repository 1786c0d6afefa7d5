"""The incremental command reader: literals, limits, resynchronisation, pausing, chunking."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailserver.imap.grammar import (
    UNKNOWN_COMMAND,
    BadCommand,
    Command,
    CommandReader,
    ContinuationNeeded,
    LineTooLong,
    LiteralTooBig,
)
from mailserver.imap.parse_mailbox import Append, Select
from mailserver.imap.parse_session import Login

SMUGGLED = b"\r\nA001 LOGOUT\r\n"


def feed_all(reader: CommandReader, data: bytes) -> list:
    return reader.feed(data)


def feed_bytewise(reader: CommandReader, data: bytes) -> list:
    events: list = []
    for i in range(len(data)):
        events += reader.feed(data[i : i + 1])
    return events


def test_simple_command():
    """One CRLF-terminated line is one Command."""
    assert CommandReader().feed(b"a1 noop\r\n") == [Command("a1", "NOOP")]


def test_command_waits_for_crlf():
    """Nothing is reported until the CRLF arrives, wherever the pieces are split."""
    reader = CommandReader()
    assert reader.feed(b"A1 NO") == []
    assert reader.feed(b"OP\r") == []
    assert reader.feed(b"\n") == [Command("A1", "NOOP")]


def test_pipelined_commands_in_one_piece():
    """Several commands in one read come out in order."""
    events = CommandReader().feed(b"A1 NOOP\r\nA2 CAPABILITY\r\nA3 LOGOUT\r\n")
    assert [e.name for e in events] == ["NOOP", "CAPABILITY", "LOGOUT"]


def test_empty_lines_are_ignored():
    """An empty line between commands produces no event."""
    assert CommandReader().feed(b"\r\n\r\nA1 NOOP\r\n") == [Command("A1", "NOOP")]


def test_sync_literal_asks_for_continuation():
    """{n} ends a line: ContinuationNeeded first; the command once the literal and the rest
    of the line are in."""
    reader = CommandReader()
    assert reader.feed(b"A1 LOGIN {3}\r\n") == [ContinuationNeeded("A1", 3)]
    assert reader.feed(b"bob") == []
    assert reader.feed(b" {6}\r\n") == [ContinuationNeeded("A1", 6)]
    assert reader.feed(b's3cr"t\r\n') == [Command("A1", "LOGIN", Login("bob", 's3cr"t'))]


def test_nonsync_literal_needs_no_continuation():
    """{n+} (LITERAL+) is read at once, without a continuation request."""
    events = CommandReader().feed(b"A1 LOGIN {3+}\r\nbob {2+}\r\npw\r\n")
    assert events == [Command("A1", "LOGIN", Login("bob", "pw"))]


def test_zero_length_literal():
    """{0} is an empty string (a continuation is still requested)."""
    events = CommandReader().feed(b'A1 LOGIN {0}\r\n ""\r\n')
    assert events == [ContinuationNeeded("A1", 0), Command("A1", "LOGIN", Login("", ""))]


@pytest.mark.parametrize("marker", [b"{15}", b"{15+}"])
def test_literal_content_is_never_a_command(marker):
    """A literal holding CRLF + a command line is data: it never yields a command."""
    data = b"A1 LOGIN " + marker + b"\r\n" + SMUGGLED + b" pw\r\n"
    for events in (feed_all(CommandReader(), data), feed_bytewise(CommandReader(), data)):
        commands = [e for e in events if isinstance(e, Command)]
        assert commands == [Command("A1", "LOGIN", Login(SMUGGLED.decode(), "pw"))]


def test_append_message_literal_keeps_bytes():
    """APPEND's literal is taken verbatim, CRLFs and command-like lines included."""
    message = b"Subject: x\r\n\r\nA2 LOGOUT\r\n"
    data = b"A1 APPEND INBOX {%d+}\r\n%s\r\nA3 NOOP\r\n" % (len(message), message)
    events = CommandReader().feed(data)
    assert events[0] == Command("A1", "APPEND", Append("INBOX", message=message))
    assert events[0].args.message == message
    assert events[1:] == [Command("A3", "NOOP")]


def test_literal8_in_append_may_hold_nul():
    """~{n} (RFC 3516 literal8) carries NUL octets into APPEND, flagged binary."""
    message = b"a\x00b\r\n"
    events = CommandReader().feed(b"A1 APPEND INBOX ~{5+}\r\n" + message + b"\r\n")
    assert events == [Command("A1", "APPEND", Append("INBOX", message=message, binary=True))]
    assert events[0].args.message == message


def test_nul_in_plain_literal_is_bad():
    """A plain literal is CHAR8: NUL needs literal8."""
    events = CommandReader().feed(b"A1 APPEND INBOX {3+}\r\na\x00b\r\nA2 NOOP\r\n")
    assert isinstance(events[0], BadCommand) and "NUL" in events[0].reason
    assert events[1] == Command("A2", "NOOP")


def test_sync_literal_over_limit_reported_before_continuation():
    """A synchronizing literal over the limit gives LiteralTooBig and no continuation; the
    client sends nothing more of that command, so the next line is a new command."""
    reader = CommandReader(max_literal=10)
    assert reader.feed(b"A1 APPEND INBOX {11}\r\n") == [LiteralTooBig("A1", 11, True, "APPEND")]
    assert reader.feed(b"A2 NOOP\r\n") == [Command("A2", "NOOP")]


def test_nonsync_literal_over_limit_is_consumed_then_reported():
    """RFC 7888 §4: a non-synchronizing literal over the limit is read and discarded with
    the rest of its command; only then is it reported."""
    reader = CommandReader(max_literal=10)
    literal = b"0123456789" + SMUGGLED + b"xx"
    assert reader.feed(b"A1 APPEND INBOX {%d+}\r\n" % len(literal)) == []
    assert reader.feed(literal[:12]) == []
    assert reader.feed(literal[12:]) == []
    assert reader.feed(b" more {2+}\r\nzz\r\n") == [
        LiteralTooBig("A1", len(literal), False, "APPEND")
    ]
    assert reader.feed(b"A2 NOOP\r\n") == [Command("A2", "NOOP")]


def test_literal_limit_counts_all_literals_of_a_command():
    """max_literal bounds the literal octets of one command together."""
    reader = CommandReader(max_literal=10)
    events = reader.feed(b"A1 LOGIN {6+}\r\nabcdef {6+}\r\nghijkl\r\nA2 NOOP\r\n")
    assert events == [LiteralTooBig("A1", 6, False, "LOGIN"), Command("A2", "NOOP")]


def test_literal_minus_allows_small_nonsync_literals():
    """Without LITERAL+ (LITERAL-, IMAP4rev2), {n+} up to 4096 octets is fine."""
    data = b"x" * 4096
    events = CommandReader(literal_plus=False).feed(b"A1 LOGIN {4096+}\r\n" + data + b" p\r\n")
    assert events == [Command("A1", "LOGIN", Login("x" * 4096, "p"))]


def test_literal_minus_refuses_large_nonsync_literals_after_reading_them():
    """With LITERAL- a {4097+} is too big: its octets are discarded, then it is reported."""
    data = b"A2 LOGOUT\r\n" + b"x" * 4086
    events = CommandReader(literal_plus=False).feed(
        b"A1 APPEND INBOX {4097+}\r\n" + data + b"\r\nA3 NOOP\r\n"
    )
    assert events == [
        LiteralTooBig("A1", 4097, False, "APPEND", literal_minus=True),
        Command("A3", "NOOP"),
    ]


def test_huge_literal_marker_is_still_a_literal():
    """A marker with more digits than any limit is too big, never a reason to read its data
    as commands."""
    reader = CommandReader()
    assert reader.feed(b"A1 APPEND INBOX {" + b"9" * 30 + b"}\r\n") == [
        LiteralTooBig("A1", 2**64, True, "APPEND")
    ]
    assert reader.feed(b"A1 APPEND INBOX {" + b"9" * 30 + b"+}\r\nA2 NOOP\r\n") == []


def test_unknown_command_with_sync_literal_gets_no_continuation():
    """An unknown command is refused at the literal, before any continuation."""
    reader = CommandReader()
    assert reader.feed(b"A1 FROB {5}\r\n") == [BadCommand("A1", UNKNOWN_COMMAND, "FROB")]
    assert reader.feed(b"A2 NOOP\r\n") == [Command("A2", "NOOP")]


def test_unknown_command_with_nonsync_literal_skips_it():
    """An unknown command's non-synchronizing literal is still consumed, not executed."""
    events = CommandReader().feed(b"A1 FROB {15+}\r\n" + SMUGGLED + b"\r\nA2 NOOP\r\n")
    assert events == [BadCommand("A1", UNKNOWN_COMMAND, "FROB"), Command("A2", "NOOP")]


def test_literal_after_command_without_arguments_is_refused():
    """NOOP takes no argument: a literal after it is refused without a continuation."""
    events = CommandReader().feed(b"A1 NOOP {3}\r\n")
    assert events == [BadCommand("A1", "Unexpected extra arguments", "NOOP")]


def test_marker_inside_quoted_string_is_not_a_literal():
    """``"{3}`` at the end of a line is an unterminated quoted string, not a literal."""
    events = CommandReader().feed(b'A1 LOGIN "bob {3}\r\nA2 NOOP\r\n')
    assert isinstance(events[0], BadCommand) and events[0].tag == "A1"
    assert events[1] == Command("A2", "NOOP")


def test_resync_after_bad_line():
    """A malformed line is answered with BAD and the next line is a new command."""
    events = CommandReader().feed(b"A1 FETCH (\r\nA2 NOOP\r\n+++\r\nA3 NOOP\r\n")
    assert events[0].tag == "A1" and isinstance(events[0], BadCommand)
    assert events[1] == Command("A2", "NOOP")
    assert events[2] == BadCommand("*", "Invalid tag")
    assert events[3] == Command("A3", "NOOP")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"A1 NOOP\nA2 LOGOUT\r\n", "Bare LF in command line"),
        (b"A1 NOOP\rA2 LOGOUT\r\n", "Bare CR in command line"),
        (b"A1 NO\x00OP\r\n", "NUL in command line"),
    ],
)
def test_bare_newlines_and_nul_make_the_command_bad(data, reason):
    """Strict CRLF: a bare LF or CR never ends a command; the line up to CRLF is bad."""
    assert CommandReader().feed(data + b"A3 NOOP\r\n") == [
        BadCommand("A1", reason),
        Command("A3", "NOOP"),
    ]


def test_line_too_long_reported_at_its_end():
    """An over-long line is discarded (not buffered) and reported once it ends."""
    reader = CommandReader(max_line=100)
    assert reader.feed(b"A1 LOGIN " + b"x" * 200) == []
    assert reader.buffered == 0
    assert reader.feed(b" y\r\nA2 NOOP\r\n") == [
        BadCommand("A1", "Command line too long"),
        Command("A2", "NOOP"),
    ]


def test_line_limit_excludes_literals():
    """max_line counts only the non-literal parts of a command."""
    reader = CommandReader(max_line=40)
    user = b"u" * 200
    events = reader.feed(b"A1 LOGIN {200+}\r\n" + user + b" pw\r\n")
    assert events == [Command("A1", "LOGIN", Login(user.decode(), "pw"))]


def test_line_limit_counts_all_lines_of_a_command():
    """The non-literal lines of one command share the limit."""
    reader = CommandReader(max_line=30)
    events = reader.feed(b"A1 LOGIN {1+}\r\nu " + b"p" * 30 + b"\r\nA2 NOOP\r\n")
    assert events == [BadCommand("A1", "Command line too long", "LOGIN"), Command("A2", "NOOP")]


def test_over_long_line_ending_in_nonsync_literal_skips_the_literal():
    """An over-long line's non-synchronizing literal is consumed too."""
    reader = CommandReader(max_line=50)
    events = reader.feed(b"A1 LOGIN " + b"x" * 100 + b" {15+}\r\n" + SMUGGLED + b"\r\nA2 NOOP\r\n")
    assert events == [BadCommand("A1", "Command line too long"), Command("A2", "NOOP")]


def test_authenticate_pauses_for_sasl_lines():
    """After AUTHENTICATE the reader pauses; the server reads SASL lines, then resumes."""
    reader = CommandReader()
    events = reader.feed(b"A1 AUTHENTICATE PLAIN\r\nAGJvYgBwdw==\r\nA2 NOOP\r\n")
    assert [e.name for e in events] == ["AUTHENTICATE"]
    assert reader.paused
    assert reader.feed(b"A3 NOOP\r\n") == []
    assert reader.read_line() == b"AGJvYgBwdw=="
    assert reader.resume() == [Command("A2", "NOOP"), Command("A3", "NOOP")]


def test_idle_pauses_until_done():
    """IDLE: the server reads DONE with read_line, then resumes."""
    reader = CommandReader()
    assert reader.feed(b"A1 IDLE\r\nDO") == [Command("A1", "IDLE")]
    assert reader.read_line() is None
    reader.feed(b"NE\r\n")
    assert reader.read_line() == b"DONE"
    assert reader.read_line() is None
    assert reader.resume() == []


def test_starttls_discards_pipelined_input():
    """Commands sent before the TLS handshake are dropped (DESIGN decision 2)."""
    reader = CommandReader()
    assert reader.feed(b"A1 STARTTLS\r\nA2 LOGIN bob pw\r\n") == [Command("A1", "STARTTLS")]
    assert reader.discard_buffer() == len(b"A2 LOGIN bob pw\r\n")
    assert reader.resume() == []


def test_enable_then_utf8_names():
    """After ENABLE the server may switch UTF-8 on before the next command is parsed."""
    reader = CommandReader()
    events = reader.feed(b'A1 ENABLE UTF8=ACCEPT\r\nA2 SELECT "\xc3\x9cber"\r\n')
    assert [e.name for e in events] == ["ENABLE"]
    reader.utf8 = True
    assert reader.resume() == [Command("A2", "SELECT", Select("\u00dcber"))]


def test_read_line_too_long():
    """read_line refuses a line over max_line and discards the rest of it."""
    reader = CommandReader(max_line=10)
    reader.feed(b"A1 IDLE\r\n" + b"x" * 20)
    with pytest.raises(LineTooLong):
        reader.read_line()
    reader.feed(b"yyy\r\nDONE\r\n")
    assert reader.read_line() == b"DONE"


# -- properties -------------------------------------------------------------------------------

_PIECES = st.sampled_from(
    [
        b"A1 NOOP\r\n",
        b"A2 LOGIN {3}\r\nbob {2}\r\npw\r\n",
        b"A3 LOGIN {3+}\r\nbob pw\r\n",
        b"A4 APPEND INBOX {12+}\r\nA5 LOGOUT\r\n\r\n",
        b"A6 APPEND INBOX ~{3}\r\na\x00b\r\n",
        b"A7 APPEND INBOX {40+}\r\n" + b"z" * 40 + b"\r\n",
        b"A8 APPEND INBOX {40}\r\n",
        b"A9 FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (DATE)])\r\n",
        b"B1 SEARCH TEXT {4+}\r\n\r\n\r\n\r\n",
        b"B2 LOGIN " + b"x" * 60 + b" {2+}\r\nA3\r\n",
        b'B3 LOGIN "x {2+}\r\n',
        b"B4 FROB {3+}\r\nA1 \r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b"\x00",
        b"{",
        b"}",
        b"+}\r\n",
        b" ",
        b'"',
        b"x" * 30,
    ]
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(_PIECES, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
    literal_plus=st.booleans(),
)
def test_events_do_not_depend_on_how_input_is_split(pieces, cuts, literal_plus):
    """Feeding the same bytes all at once, one byte at a time, or in random pieces gives
    identical events."""
    data = b"".join(pieces)

    def reader() -> CommandReader:
        return CommandReader(max_line=50, max_literal=30, literal_plus=literal_plus)

    whole = reader().feed(data)
    assert feed_bytewise(reader(), data) == whole
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    chunked = reader()
    events: list = []
    for start, end in zip(points, points[1:], strict=False):
        events += chunked.feed(data[start:end])
    assert events == whole


_LINE_CHARS = st.sampled_from(
    list('AZaz09 ()[]<>.:,*$%\\"+-=~{}') + ["NIL", "UID", "FETCH", "BODY[", "OR", "NOT", " (", ")"]
)


@settings(max_examples=400)
@given(
    tag=st.sampled_from(["A1", "x", "*", "+", ""]),
    verb=st.sampled_from(
        ["NOOP", "LOGIN", "SELECT", "FETCH", "UID FETCH", "STORE", "SEARCH", "LIST", "STATUS",
         "APPEND", "COPY", "ENABLE", "ID", "CREATE", "RENAME", "UID EXPUNGE", "BOGUS", ""]
    ),
    rest=st.lists(_LINE_CHARS, max_size=30).map("".join),
)  # fmt: skip
def test_random_command_lines_give_command_or_bad(tag, verb, rest):
    """Any line without a literal marker yields exactly one Command or BadCommand."""
    line = f"{tag} {verb} {rest}".encode().rstrip(b"}") + b"\r\n"
    events = CommandReader().feed(line)
    assert len(events) == 1 and isinstance(events[0], Command | BadCommand)


@settings(max_examples=300)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(data):
    """Arbitrary input produces events, never an exception."""
    reader = CommandReader(max_line=64, max_literal=64)
    for event in reader.feed(data):
        assert isinstance(event, Command | BadCommand | ContinuationNeeded | LiteralTooBig)
