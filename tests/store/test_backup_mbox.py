"""mbox entries (:mod:`mailserver.store.mbox`): writing then reading gives back the message's
bytes, flags and internal date whatever its lines hold; foreign mbox files are split where
mutt and Python split them."""

from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st

from mailserver.store import mbox

LINE = st.one_of(
    st.sampled_from(["From here", ">From there", ">>From x", "From", "", " folded", "Status: RO"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
)
FLAGS = st.frozensets(
    st.sampled_from(["\\Seen", "\\Answered", "\\Flagged", "\\Draft", "\\Deleted", "$label", "x"])
)


def read_all(data: bytes) -> list[mbox.Message]:
    return [mbox.decode(separator, raw) for separator, raw in mbox.entries(io.BytesIO(data))]


@given(st.lists(LINE, max_size=8), FLAGS, st.integers(0, 2**32 - 1))
def test_entry_then_decode_gives_back_the_message(body, flags, date):
    """Any message with CRLF lines (From lines in the body, blank lines at the end
    included) comes back byte for byte, with its flags and internal date (to the second)."""
    data = b"From: a@example.org\r\nSubject: s\r\n\r\n" + b"".join(
        line.encode() + b"\r\n" for line in body
    )
    entries = mbox.entry(data, flags, float(date)) * 2  # two of them, back to back
    assert read_all(entries) == [mbox.Message(data, flags, float(date))] * 2


def test_flag_fields_are_written_as_mutt_writes_them():
    entry = mbox.entry(
        b"Return-Path: <bob@example.net>\r\nSubject: s\r\n\r\nbody\r\n",
        frozenset({"\\Seen", "\\Flagged", "\\Answered", "$label"}),
        0.0,
    )
    assert entry == (
        b"From bob@example.net Thu Jan 01 00:00:00 1970\n"
        b"Return-Path: <bob@example.net>\nSubject: s\n"
        b"Status: RO\nX-Status: AF\nX-Keywords: $label\n\nbody\n\n"
    )


def test_a_from_line_without_a_blank_line_before_splits_only_when_it_carries_a_date():
    """mutt's and Python's separators carry a date; a body line 'From me' does not."""
    data = (
        b"From a@b Sat Jan  3 01:05:34 1996\nSubject: 1\n\nFrom me to you\n"
        b"From b@c Sat Jan  3 01:05:35 1996\nSubject: 2\n\nx\n"
    )
    first, second = read_all(data)
    assert first.data == b"Subject: 1\r\n\r\nFrom me to you\r\n"
    assert first.internaldate == 820631134.0
    assert second.data == b"Subject: 2\r\n\r\nx\r\n"


def test_a_separator_without_a_date_takes_the_date_header():
    [message] = read_all(b"From x\nDate: Thu, 01 Jan 2015 00:00:10 +0000\nSubject: d\n\nb\n")
    assert message.internaldate == 1420070410.0
    [undated] = read_all(b"From x\nSubject: d\n\nb\n")
    assert undated.internaldate is None


def test_flag_fields_are_taken_out_with_their_continuation_lines():
    [message] = read_all(
        b"From a@b Sat Jan  3 01:05:34 1996\nSubject: k\nX-Keywords: one,\n two\n"
        b"X-Status: DT\nStatus: O\nTo: c@d\n\nbody\n"
    )
    assert message.data == b"Subject: k\r\nTo: c@d\r\n\r\nbody\r\n"
    assert message.flags == {"one", "two", "\\Deleted", "\\Draft"}
