"""BODY[HEADER.FIELDS (...)]: the one-regex fast path cuts exactly what the line-by-line
reading cuts, for any header block (hypothesis), and a hand-checked example."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from mailserver.imap.commands.sections import _header_fields, header_fields

BLOCK = (
    b"From: a@example.org\r\n"
    b"X-Long: one\r\n"
    b"  two\r\n"
    b"subject : Hi\r\n"
    b"\tthere\r\n"
    b"Subjects: not this\r\n"
    b"no colon line\r\n"
    b" continuation of nothing\r\n"
    b"To:b@example.org\r\n"
    b"\r\n"
)


def test_fields_with_continuations_any_case():
    assert header_fields(BLOCK, ("SUBJECT", "TO"), exclude=False) == (
        b"subject : Hi\r\n\tthere\r\nTo:b@example.org\r\n\r\n"
    )
    assert header_fields(b"From: x", ("FROM",), exclude=False) == b"From: x\r\n\r\n"
    assert header_fields(BLOCK, ("CC",), exclude=False) == b"\r\n"
    # Nothing after the first empty line is a header field.
    assert header_fields(b"\r\nFrom: x\r\n", ("FROM",), exclude=False) == b"\r\n"


# Field names: ASCII letters and the characters that make parsing interesting. (Latin-1
# letters are left out: the line reader upper-cases a name decoded as Latin-1, so "\xdf"
# would equal "SS"; field names are ASCII, RFC 5322 §2.2.)
_NAMES = st.text(alphabet="FromTSubjectx-X: \t", min_size=0, max_size=8)
_LINE = st.tuples(
    st.sampled_from(["", " ", "\t"]),
    _NAMES,
    st.sampled_from([":", " :", "", ": value", ":v\x00", "\xe9:"]),
    st.sampled_from(["\r\n", "\n", ""]),
)


@given(
    lines=st.lists(
        st.one_of(_LINE, st.just(("", "", "", "\r\n")), st.just(("", "", "", "\n"))), max_size=12
    ),
    names=st.lists(st.sampled_from(["FROM", "TO", "SUBJECT", "X-X", "T"]), min_size=1, max_size=3),
)
@example(lines=[("", "", "", "\r\n"), ("", "From", ":", "\r\n")], names=["FROM"])
def test_fast_path_equals_line_reader(lines, names):
    block = "".join(a + b + c + d for a, b, c, d in lines).encode("latin-1")
    wanted = tuple(names)
    assert header_fields(block, wanted, exclude=False) == _header_fields(block, wanted, False)


@given(
    block=st.binary(max_size=300).map(
        lambda raw: bytes(b"FROMTfromto:Subject \t\r\n-xX\x00\xe9"[byte % 22] for byte in raw)
    ),
    names=st.lists(
        st.sampled_from(["FROM", "TO", "SUBJECT", "X-X", "T", "FROMTO"]), min_size=1, max_size=4
    ),
)
def test_fast_path_equals_line_reader_on_any_bytes(block, names):
    """Any octets made of the characters that matter to the cut (names in either case,
    colons, blanks, CR, LF, NUL, 8-bit) are cut alike by both readers."""
    wanted = tuple(names)
    assert header_fields(block, wanted, exclude=False) == _header_fields(block, wanted, False)
