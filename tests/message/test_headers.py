"""Tests for header block splitting, unfolding and RFC 2047 decoding."""

from __future__ import annotations

import email.utils

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.message.headers import (
    decode_header_value,
    get_header,
    get_headers,
    header_length,
    parse_headers,
    rfc5322_date,
    split_message,
    strip_mbox_from,
)


@pytest.mark.parametrize(
    ("data", "header", "body"),
    [
        (b"A: 1\r\nB: 2\r\n\r\nbody\r\n", b"A: 1\r\nB: 2\r\n\r\n", b"body\r\n"),
        (b"A: 1\nB: 2\n\nbody\n", b"A: 1\nB: 2\n\n", b"body\n"),
        (b"A: 1\r\n\r\n", b"A: 1\r\n\r\n", b""),
        (b"A: 1\r\nB: 2\r\n", b"A: 1\r\nB: 2\r\n", b""),
        (b"A: 1", b"A: 1", b""),
        (b"\r\nbody", b"\r\n", b"body"),
        (b"\nbody", b"\n", b"body"),
        (b"", b"", b""),
        (b"A: 1\n\r\nbody\n\nmore", b"A: 1\n\r\n", b"body\n\nmore"),
    ],
)
def test_split_message(data, header, body):
    """The header block ends after the first empty line, CRLF or LF; without one all is header."""
    assert split_message(data) == (header, body)


def test_strip_mbox_from():
    """A leading mbox "From " line is removed; other data is returned unchanged."""
    assert strip_mbox_from(b"From a@b Mon Jan  1 00:00:00 2002\nA: 1\n\nx") == b"A: 1\n\nx"
    assert strip_mbox_from(b"From: a@b\n\nx") == b"From: a@b\n\nx"
    assert strip_mbox_from(b"From nowhere") == b""
    assert strip_mbox_from(b"A: 1\n\nFrom x\n") == b"A: 1\n\nFrom x\n"


def test_parse_headers_unfolds_and_keeps_order():
    """Fields come back in order with folded values unfolded and outer whitespace stripped."""
    block = b"Subject: hello\r\n  world\r\nTo: a@b,\r\n\tc@d\r\nX-Empty:\r\nSubject: again\r\n\r\n"
    assert parse_headers(block) == [
        ("Subject", b"hello  world"),
        ("To", b"a@b,\tc@d"),
        ("X-Empty", b""),
        ("Subject", b"again"),
    ]


def test_parse_headers_tolerates_garbage():
    """Lines that are not header fields are skipped with their continuations, never raised on."""
    block = (
        b"From sender@example.org Mon Jan  1 12:00:00 2002\n"
        b"  continuation of nothing\n"
        b"no colon here\n"
        b"\tcontinued garbage\n"
        b"Bad Name: x\n"
        b"Subject : spaced\n"
        b"Good: yes\n"
        b"\n"
        b"Body: not a header\n"
    )
    assert parse_headers(block) == [("Subject", b"spaced"), ("Good", b"yes")]


def test_parse_headers_leading_continuation_ignored():
    """A continuation line before any field is ignored."""
    assert parse_headers(b" stray\nA: 1\n") == [("A", b"1")]


def test_get_header_is_case_insensitive_and_first():
    """get_header returns the first field of that name regardless of case, or None."""
    headers = [("Received", b"1"), ("SUBJECT", b"first"), ("subject", b"second")]
    assert get_header(headers, "Subject") == b"first"
    assert get_header(headers, "To") is None
    assert get_headers(headers, "subject") == [b"first", b"second"]


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"plain text", "plain text"),
        (b"=?utf-8?q?caf=C3=A9_au_lait?=", "café au lait"),
        (b"=?UTF-8?B?5pel5pys6Kqe?=", "日本語"),
        (b"=?iso-8859-1?q?a?= =?iso-8859-1?q?b?=", "ab"),
        (b"=?iso-8859-1?q?a?=\r\n =?iso-8859-1?q?b?=", "ab"),
        (b"=?utf-8?b?5pel?= =?utf-8?b?5pys?=", "日本"),
        (b"=?utf-8?b?5pc=?= =?utf-8?b?pQ==?=", "日"),
        (b"Re: =?utf-8?q?x?= y", "Re: x y"),
        (b"=?utf-8*en?q?hello?=", "hello"),
        (b"=?utf-8?b?5pel5pys?", "=?utf-8?b?5pel5pys?"),
        (b"=?utf-8?b?@@@?= tail", "=?utf-8?b?@@@?= tail"),
        (b"=?x-unknown?q?abc?=", "abc"),
        (b"caf\xc3\xa9", "café"),
        (b"caf\xe9", "café"),
        (b"\x93quoted\x94", "\u201cquoted\u201d"),
        (b"\x81\x8d", "\x81\x8d"),
        (b"=?utf-8?q??=", ""),
        (b"=?utf-8?b?w6k?=", "é"),
    ],
)
def test_decode_header_value(raw, text):
    """Header values decode RFC 2047 words, 8-bit UTF-8 and the windows-1252/latin-1 fallback."""
    assert decode_header_value(raw) == text


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_decode_header_value_never_raises(raw):
    """decode_header_value returns text for any bytes."""
    assert isinstance(decode_header_value(raw), str)


_HEADERISH = st.lists(
    st.sampled_from([b"A: 1", b" cont", b"\t", b"", b"\r", b"garbage", b":", b"X :y", b"=?"])
    | st.binary(max_size=20),
    max_size=12,
).map(b"\n".join)


@given(_HEADERISH)
@settings(max_examples=300)
def test_header_parsing_never_raises(data):
    """split_message and parse_headers accept any bytes; the split loses no bytes."""
    header, body = split_message(data)
    assert header + body == data
    for name, value in parse_headers(header):
        assert name and ":" not in name
        assert isinstance(value, bytes)


def _header_length_by_definition(data: bytes, start: int, end: int) -> int:
    """The header block's length as its definition says: up to the first empty line, CRLF
    or LF (the earliest of the first ``\\n\\n`` and the first ``\\n\\r\\n``)."""
    if start >= end:
        return 0
    if data.startswith(b"\n", start, end):
        return 1
    if data.startswith(b"\r\n", start, end):
        return 2
    ends = [p + 2 for p in range(start, end - 1) if data[p : p + 2] == b"\n\n"]
    ends += [p + 3 for p in range(start, end - 2) if data[p : p + 3] == b"\n\r\n"]
    return (min(ends) if ends else end) - start


_LINE = st.sampled_from([b"A: 1", b" b", b"", b"\r", b"x"]) | st.binary(max_size=6)
_LINES = st.lists(st.tuples(_LINE, st.sampled_from([b"\n", b"\r\n"])), max_size=12).map(
    lambda lines: b"".join(line + ending for line, ending in lines)
)


@given(_LINES, st.integers(0, 80), st.integers(0, 80))
@settings(max_examples=500)
def test_header_length_is_the_first_empty_line(data, start, stop):
    """header_length of any range is where the first empty line (CRLF or LF, mixed line
    ends, a CRLF blank line after an earlier LF one and the reverse) ends, or the range's
    end when there is none."""
    end = min(stop, len(data))
    assert header_length(data, start, end) == _header_length_by_definition(data, start, end)
    assert header_length(data) == _header_length_by_definition(data, 0, len(data))


_TIMES = st.floats(min_value=0, max_value=4e9)


@given(_TIMES, _TIMES)
@settings(max_examples=300)
def test_rfc5322_date_is_the_standard_form_every_time(first, second):
    """rfc5322_date of any time, asked before or after another time of the same or another
    second, is email.utils' RFC 5322 date of that time written +0000."""
    for timestamp in (first, second, first, int(first) + 0.9999996, first):
        assert rfc5322_date(timestamp) == email.utils.formatdate(timestamp).replace(
            "-0000", "+0000"
        )
