"""Properties of the RFC 5322 parsers (``mailserver.message.headers`` and
``mailserver.message.envelope``) on generated input.

The header functions and the address-list parser never raise (their documented contract);
a header block built from fields, folded anywhere at its spaces, parses back to those fields;
encoded-words decode to the text they encode however the text was cut; an address list built
from mailboxes and groups parses to the ENVELOPE entries they stand for.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailserver.imap import response
from mailserver.message.envelope import build_envelope, parse_address_list
from mailserver.message.headers import (
    decode_header_value,
    parse_headers,
    split_message,
    strip_mbox_from,
)
from tests.strategies import rfc5322 as rst

_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(st.one_of(rst.headerish(), st.binary(max_size=300)))
def test_header_functions_never_raise(data):
    """For any bytes: the split loses nothing, every field name is ftext, every value
    decodes to text, and the ENVELOPE built from the fields serialises."""
    block, body = split_message(strip_mbox_from(data))
    assert block + body == strip_mbox_from(data)
    fields = parse_headers(block)
    for name, value in fields:
        assert name and all(c in rst.FTEXT for c in name)
        assert isinstance(decode_header_value(value), str)
    envelope = build_envelope(fields)
    assert json.loads(json.dumps(envelope)) == envelope
    assert response.envelope(envelope).startswith(b"(")


@_SETTINGS
@given(rst.header_blocks(), st.binary(max_size=40))
def test_header_blocks_round_trip(drawn, body):
    """A block of fields, folded at any of their spaces with CRLF or LF, parses back to the
    same names and unfolded values, and the body starts right after its empty line."""
    block, fields = drawn
    header, rest = split_message(block + body)
    assert (header, rest) == (block, body)
    assert parse_headers(header) == [(name, value.strip(b" \t")) for name, value in fields]


@_SETTINGS
@given(rst.encoded_texts())
def test_encoded_words_round_trip(drawn):
    """Text encoded as B or Q encoded-words, cut at any octet (even inside a character),
    decodes back to the text (RFC 2047 §6.2: the space between encoded-words goes)."""
    text, encoded = drawn
    assert decode_header_value(encoded.encode("ascii")) == text


@_SETTINGS
@given(rst.address_lists())
def test_address_lists_parse_to_their_entries(drawn):
    """Mailboxes (bare, with a display name, with a quoted display name) and groups parse to
    their ENVELOPE entries, group start and end entries included (RFC 3501 §7.4.2)."""
    raw, entries = drawn
    assert parse_address_list(raw) == entries


@_SETTINGS
@given(st.binary(max_size=200))
def test_address_list_parser_never_raises(raw):
    """parse_address_list returns four-slot entries for any bytes, and its groups pair up."""
    depth = 0
    for entry in parse_address_list(raw):
        assert len(entry) == 4
        if entry[3] is None and entry[2] is not None:
            depth += 1
        elif entry == [None, None, None, None]:
            depth -= 1
        assert depth in (0, 1)
    assert depth == 0


@_SETTINGS
@given(st.one_of(rst.headerish(), st.binary(max_size=300)))
def test_address_lists_parse_the_same_every_time(raw):
    """Parsing an address list again gives the same entries, as a list of its own: changing
    what one call returned changes nothing another call returns."""
    first = parse_address_list(raw)
    expected = json.loads(json.dumps(first))
    for entry in first:
        entry.append("changed")
    first.append([None, None, None, None])
    assert parse_address_list(raw) == expected
    assert parse_address_list(raw * 3) == parse_address_list(raw * 3)
