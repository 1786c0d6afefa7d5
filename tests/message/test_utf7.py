"""Tests for modified UTF-7 mailbox names (RFC 3501 §5.1.3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.message.utf7 import decode, encode

RFC_ENCODED = "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
RFC_DECODED = "~peter/mail/台北/日本語"


def test_rfc_vector_encodes():
    """The RFC 3501 §5.1.3 example name encodes to the example modified UTF-7."""
    assert encode(RFC_DECODED) == RFC_ENCODED


def test_rfc_vector_decodes():
    """The RFC 3501 §5.1.3 example modified UTF-7 decodes to the example name."""
    assert decode(RFC_ENCODED) == RFC_DECODED


def test_ampersand():
    """An ampersand is written "&-" and "&-" reads back as an ampersand."""
    assert encode("&") == "&-"
    assert decode("&-") == "&"
    assert encode("Tom & Jerry") == "Tom &- Jerry"


def test_printable_ascii_is_unchanged():
    """Printable US-ASCII other than "&" represents itself."""
    name = "INBOX/Sent Items.2024 ~!#$%'()*+,-./:;<=>?@[\\]^_`{|}"
    assert encode(name) == name
    assert decode(name) == name


def test_astral_character_uses_surrogate_pair():
    """A character outside the BMP is encoded as its UTF-16 surrogate pair."""
    assert encode("😀") == "&2D3eAA-"
    assert decode("&2D3eAA-") == "😀"


def test_ampersand_inside_non_ascii_run():
    """An ampersand between non-ASCII characters splits the run into two shift sequences."""
    assert encode("日&本") == "&ZeU-&-&Zyw-"
    assert decode("&ZeU-&-&Zyw-") == "日&本"


def test_empty_name():
    """The empty name encodes and decodes to the empty string."""
    assert encode("") == ""
    assert decode("") == ""


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        ("&AGE-", "printable US-ASCII"),
        ("&U,BTFw", "unterminated"),
        ("abc&", "unterminated"),
        ("&*-", "neither"),
        ("&U,BTFw-&ZeVnLIqe-", "adjacent"),
        ("&ZeX-", "non-canonical"),
        ("&A-", "truncated"),
        ("&AGEA-", "whole UTF-16 units"),
        ("&2D0-", "surrogate"),
        ("&U,B*Fw-", "BASE64 character"),
        ("caf\u00e9", "not printable US-ASCII"),
        ("tab\there", "not printable US-ASCII"),
    ],
)
def test_invalid_input_raises_value_error(encoded, message):
    """Invalid or non-canonical modified UTF-7 raises ValueError saying what is wrong."""
    with pytest.raises(ValueError, match=message):
        decode(encoded)


@given(st.text())
@settings(max_examples=300)
def test_round_trip(name):
    """Any text survives encode then decode."""
    encoded = encode(name)
    assert encoded.isascii()
    assert decode(encoded) == name


@given(st.text(alphabet=st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF)))
@settings(max_examples=100)
def test_round_trip_astral(name):
    """Text made only of astral characters survives encode then decode."""
    assert decode(encode(name)) == name


@given(st.text(alphabet=st.sampled_from("&-AZaz09+,/~ ")))
@settings(max_examples=300)
def test_decode_is_canonical_or_raises(encoded):
    """Decoding either raises ValueError or gives a name whose encoding is the input."""
    try:
        name = decode(encoded)
    except ValueError:
        return
    assert encode(name) == encoded
