"""SEARCH HEADER and TEXT on a header block (mailserver/imap/commands/search.py): the
shortcuts for ASCII blocks without encoded words (no parse when a search string with no blank
is nowhere in the block; TEXT's header part searched as unfolded bytes) answer exactly as
parsing and decoding does, for any block (hypothesis)."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from mailserver.imap.commands.search import header_matches, header_text_contains
from mailserver.message.headers import decode_header_value, get_headers, parse_headers

_PIECES = ["Subject", "subject", "X-Tag", ":", " :", " ", "\t", "\r\n", "\n", "=?utf-8?q?",
           "?=", "=?utf-8?b?cXVhcnRlcmx5?=", "quar", "terly", "Quarterly", "é", "\xff", "ß",
           "S=C3=9F", "_", "a b", "\x00"]  # fmt: skip
_WORDS = ["quarterly", "QUARTERLY", "quar terly", "quar\tterly", "ss", "ß", "é", "", " ",
          "a b", "terly", "\r\n", "x-tag", "=?", "?=", "\x00", "subject:"]  # fmt: skip


def _reference(block: bytes, name: str, value: str) -> bool:
    """What HEADER answered before the shortcut."""
    values = get_headers(parse_headers(block), name)
    wanted = value.casefold()
    return any(wanted in decode_header_value(v).casefold() for v in values)


@given(
    pieces=st.lists(st.sampled_from(_PIECES), max_size=24),
    name=st.sampled_from(["Subject", "SUBJECT", "x-tag", "From"]),
    value=st.sampled_from(_WORDS),
    latin1=st.booleans(),
)
@example(
    pieces=["Subject", ":", "quar", "\r\n", " ", "terly", "\r\n"],
    name="subject",
    value="quar terly",
    latin1=False,
)
def test_shortcut_equals_parsing_every_field(pieces, name, value, latin1):
    """Folded values, encoded words, 8-bit octets, blanks in the search string: same answer."""
    text = "".join(pieces)
    block = text.encode("latin-1" if latin1 and all(ord(c) < 256 for c in text) else "utf-8")
    assert header_matches(block, name, value) == _reference(block, name, value)


@given(
    pieces=st.lists(st.sampled_from(_PIECES), max_size=24),
    value=st.sampled_from(_WORDS),
    latin1=st.booleans(),
)
@example(pieces=["Subject", ":", "quar", "\r\n", " ", "terly"], value="quar terly", latin1=False)
def test_text_header_shortcut_equals_decoding_the_block(pieces, value, latin1):
    """SEARCH TEXT's header part: the bytes shortcut for ASCII blocks without encoded words
    answers as decoding the whole block does."""
    text = "".join(pieces)
    block = text.encode("latin-1" if latin1 and all(ord(c) < 256 for c in text) else "utf-8")
    wanted = value.casefold()
    assert header_text_contains(block, wanted) == (wanted in decode_header_value(block).casefold())
