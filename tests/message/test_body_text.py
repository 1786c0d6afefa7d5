"""SEARCH BODY's text (mailserver/message/body_text.py): the ASCII shortcut of contains()
answers as decoding every leaf would, the packed form round-trips, and the leaves of real
structures are the text leaves in search order."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from bench.imap_bench import generate
from mailserver.message import body_text
from mailserver.message.headers import decode_charset
from mailserver.message.mime import parse

CHARSETS = ["utf-8", "us-ascii", "iso-8859-1", "windows-1252", "utf-16", "utf-7", "x-unknown",
            "iso-2022-jp", "koi8-r", "cp037", "UTF8"]  # fmt: skip
ENCODINGS = ["7bit", "8bit", "base64", "quoted-printable", "x-uuencode", ""]
WORDS = ["zeppelin", "ZEPPELIN", "Zeppelin", "ß", "ss", "STRASSE", "straße", "ﬃ", "ffi",
         "K", "k", "İ", "i̇", "é", "+AGE-", "=C3=A9", "\x1b$B", "", "a"]  # fmt: skip


def _naive(wanted: str, data: bytes, leaves: list[body_text.Leaf]) -> bool:
    """What SEARCH BODY answered before the shortcut: decode, case-fold, look."""
    out = []
    for start, length, encoding, charset in leaves:
        body = data[start : start + length]
        try:
            raw = body_text.decode_transfer(body, encoding)
        except body_text.UnknownEncoding:
            raw = body
        out.append(decode_charset(raw, charset))
    return any(wanted in text.casefold() for text in out)


@given(
    pieces=st.lists(
        st.one_of(
            st.sampled_from(WORDS).map(lambda w: w.encode("utf-8")),
            st.binary(max_size=12),
            st.sampled_from([b"zeppelin", b"ZEPP=\r\nELIN", b"emVwcGVsaW4=", b"+AHo-eppelin"]),
        ),
        max_size=8,
    ),
    cuts=st.lists(
        st.tuples(st.sampled_from(ENCODINGS), st.sampled_from(CHARSETS)), min_size=1, max_size=3
    ),
    wanted=st.sampled_from(WORDS).map(str.casefold),
)
def test_contains_equals_decoding_every_leaf(pieces, cuts, wanted):
    """For any octets split into leaves of any encoding and charset, contains() is the naive
    decode-case-fold-look answer (ASCII folding, ß/ss, ligatures, Kelvin sign, UTF-7...)."""
    data = b"".join(pieces)
    step = max(1, len(data) // len(cuts))
    leaves = [
        (n * step, step if n < len(cuts) - 1 else len(data), encoding, charset)
        for n, (encoding, charset) in enumerate(cuts)
    ]
    assert body_text.contains(wanted, data, leaves) == _naive(wanted, data, leaves)


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**64 - 1),
            st.integers(0, 2**64 - 1),
            st.text(max_size=20),
            st.text(max_size=20),
        ),
        max_size=5,
    )
)
def test_pack_round_trips(leaves):
    """unpack(pack(leaves)) == leaves; a cut-short form is refused."""
    packed = body_text.pack(leaves)
    assert packed is not None
    assert body_text.unpack(packed) == leaves
    if packed:
        try:
            assert body_text.unpack(packed[:-1]) != leaves
        except ValueError:
            pass


def test_leaves_of_generated_messages_give_their_texts():
    """On the IMAP bench's varied and broken MIME, the leaves decode to the text parts, and
    contains() finds the bench's body word exactly where the naive reading does."""
    for n in range(200):
        data = generate(random.Random(n), n, 1_700_000_000.0)
        leaves = body_text.text_leaves(parse(data).bodystructure)
        assert body_text.unpack(body_text.pack(leaves) or b"") == leaves
        for word in ("zeppelin", "the", "grüße", "ß"):
            assert body_text.contains(word, data, leaves) == _naive(word, data, leaves), n
