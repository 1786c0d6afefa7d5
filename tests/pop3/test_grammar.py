"""The POP3 wire level without a socket: line splitting, command parsing, status lines,
byte-stuffing and TOP's cut, each independent of how the input is split (RFC 1939 §3)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailserver.pop3.grammar import (
    BadLine,
    Command,
    Line,
    LineReader,
    Stuffer,
    TopLimiter,
    err,
    multiline,
    ok,
    parse_command,
    parse_number,
)

#: Message-ish bytes: lines, dots, CRs and LFs in every arrangement.
message_bytes = st.lists(
    st.sampled_from([b".", b"\r\n", b"\n", b"\r", b"a", b"..", b"x" * 7, b".\r\n", b" "]),
    max_size=60,
).map(b"".join)


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[last:point])
        last = point
    return pieces


def reference_stuffing(data: bytes) -> bytes:
    """RFC 1939 §3 line by line: normalise line ends, double a leading dot, end with '.'."""
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    last = lines.pop()
    out = [(b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines]
    if last:
        out.append((b"." + last if last.startswith(b".") else last) + b"\r\n")
    return b"".join(out) + b".\r\n"


@given(message_bytes, st.lists(st.integers(min_value=0), max_size=8))
def test_stuffing_does_not_depend_on_chunks(data, cuts):
    """Any split of the message gives the same bytes as stuffing it line by line."""
    stuffer = Stuffer()
    out = b"".join(stuffer.feed(piece) for piece in splits(data, cuts)) + stuffer.end()
    whole = Stuffer()
    assert out == whole.feed(data) + whole.end()
    if b"\r" not in data.replace(b"\r\n", b""):  # bare CRs are data, not line ends
        assert out == reference_stuffing(data)


@given(message_bytes, st.lists(st.integers(min_value=0), max_size=8))
def test_stuffed_output_has_one_terminator(data, cuts):
    """The only lone '.' line on the wire is the last one."""
    stuffer = Stuffer()
    out = b"".join(stuffer.feed(piece) for piece in splits(data, cuts)) + stuffer.end()
    assert out.endswith(b"\r\n.\r\n") or out == b".\r\n"
    assert (b"\r\n" + out).count(b"\r\n.\r\n") == 1


@given(
    st.lists(st.sampled_from([b"", b"a", b".b", b"Subject: x", b"\r"]), max_size=12),
    st.integers(min_value=0, max_value=6),
    st.lists(st.integers(min_value=0), max_size=6),
)
def test_top_cut_does_not_depend_on_chunks(lines, count, cuts):
    """TOP n: the header up to its empty line, then n lines, however the input is split."""
    data = b"".join(line + b"\r\n" for line in lines)
    limiter = TopLimiter(count)
    out = b"".join(limiter.feed(piece) for piece in splits(data, cuts))
    expected_lines = []
    body = None
    for line in lines:
        if body is not None and body >= count:
            break
        expected_lines.append(line)
        if body is not None:
            body += 1
        elif line == b"":
            body = 0
            if count == 0:
                break
    assert out == b"".join(line + b"\r\n" for line in expected_lines)


def test_line_reader_events():
    """CRLF lines become Lines; bare LF, bare CR and NUL are bad lines; a long line is one
    bad line and the next line is read normally."""
    reader = LineReader(max_line=20)
    events = reader.feed(b"USER a\r\nNOOP\nX\rY\r\nA\0\r\n" + b"Z" * 30 + b"\r\nSTAT\r\n")
    assert events == [
        Line(b"USER a"),
        BadLine("Lines must end with CRLF"),
        BadLine("Bare CR or NUL in the command"),
        BadLine("Bare CR or NUL in the command"),
        BadLine("Line too long"),
        Line(b"STAT"),
    ]


@given(st.lists(st.integers(min_value=0), max_size=10))
def test_line_reader_does_not_depend_on_chunks(cuts):
    data = b"USER alice\r\n" + b"Q" * 50 + b"\r\nPASS x y\r\nbad\nLIST 1\r\npartial"
    reader = LineReader(max_line=32)
    events = []
    for piece in splits(data, cuts):
        events += reader.feed(piece)
    assert events == [
        Line(b"USER alice"),
        BadLine("Line too long"),
        Line(b"PASS x y"),
        BadLine("Lines must end with CRLF"),
        Line(b"LIST 1"),
    ]


def test_parse_command():
    """The keyword is case-insensitive; arguments are split on spaces; the raw rest is kept
    (PASS may contain spaces)."""
    assert parse_command(b"retr 1") == Command("RETR", ("1",), b"1")
    assert parse_command(b"PASS a b ") == Command("PASS", ("a", "b"), b"a b ")
    assert parse_command(b"NOOP") == Command("NOOP", (), b"")
    assert parse_command(b"") == BadLine("Unknown command")
    assert parse_command(b"R\xe9TR 1") == BadLine("Unknown command")
    assert parse_command(b"USER \xff") == BadLine("Arguments must be UTF-8")
    assert parse_command("USER jörg@example.org".encode()).args == ("jörg@example.org",)


def test_parse_number():
    assert parse_number("0") == 0 and parse_number("0012") == 12
    assert parse_number("-1") is None and parse_number("1a") is None
    assert parse_number("") is None and parse_number("1" * 11) is None


def test_status_lines():
    """+OK/-ERR with an optional RFC 2449 response code; never more than one line."""
    assert ok() == b"+OK\r\n"
    assert ok("2 320") == b"+OK 2 320\r\n"
    assert err("In use", "IN-USE") == b"-ERR [IN-USE] In use\r\n"
    assert err("a\r\nb") == b"-ERR a  b\r\n"
    assert multiline(ok("x"), [b".a", b"b"]) == b"+OK x\r\n..a\r\nb\r\n.\r\n"
