"""Response serialisation: strings, literals, mailbox names, codes and status lines."""

from __future__ import annotations

import base64
import datetime as dt
import email.header

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailserver.imap import response as r
from mailserver.imap.grammar import Command
from mailserver.imap.parse_session import Login
from mailserver.imap.scanner import Scanner, decode_mailbox
from mailserver.imap.sequence import SequenceSet
from tests.imap.helpers import parse

# -- strings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "utf8", "wire"),
    [
        ("abc", False, b'"abc"'),
        ("", False, b'""'),
        ('say "hi" \\o/', False, b'"say \\"hi\\" \\\\o/"'),
        ("two\r\nlines", False, b"{10}\r\ntwo\r\nlines"),
        ("bare\nlf", False, b"{7}\r\nbare\nlf"),
        ("caf\u00e9", False, b"{5}\r\ncaf\xc3\xa9"),
        ("caf\u00e9", True, b'"caf\xc3\xa9"'),
        (b"\xff\xfe", True, b"{2}\r\n\xff\xfe"),
        (b"a\x00b", False, b"~{3}\r\na\x00b"),
    ],
)
def test_string_chooses_quoted_or_literal(value, utf8, wire):
    """Quoted unless CR, LF, NUL or (without UTF8=ACCEPT) 8-bit; NUL needs literal8."""
    assert r.string(value, utf8=utf8) == wire


def test_quoted_refuses_what_it_cannot_carry():
    with pytest.raises(ValueError):
        r.quoted("a\r\nb")
    with pytest.raises(ValueError):
        r.quoted("\u00e9")


def test_literal_forms():
    assert r.literal(b"hello") == b"{5}\r\nhello"
    assert r.literal(b"") == b"{0}\r\n"
    assert r.literal(b"\x00", binary=True) == b"~{1}\r\n\x00"


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("INBOX", b"INBOX"),
        ("a]b", b"a]b"),
        ("NIL", b'"NIL"'),
        ("nil", b'"nil"'),
        ("", b'""'),
        ("a b", b'"a b"'),
        ("50%", b'"50%"'),
        ("x*", b'"x*"'),
        ("(x)", b'"(x)"'),
        ("{3}", b'"{3}"'),
    ],
)
def test_astring(value, wire):
    assert r.astring(value) == wire


def test_nstring():
    assert r.nstring(None) == b"NIL"
    assert r.nstring("NIL") == b'"NIL"'


_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


@given(value=_TEXT, utf8=st.booleans())
def test_astring_round_trip(value, utf8):
    """Serialising then parsing gives the same string back, quoted or literal."""
    wire = r.astring(value, utf8=utf8)
    scanner = Scanner(wire, utf8=utf8)
    assert scanner.astring() == value.encode("utf-8")
    assert scanner.at_end()


@given(value=st.binary(), utf8=st.booleans())
def test_string_round_trip_bytes(value, utf8):
    """Any octets survive string(): a NUL goes as literal8, which the scanner accepts where
    literal8 is allowed."""
    wire = r.string(value, utf8=utf8)
    scanner = Scanner(wire, utf8=utf8)
    got = scanner.literal(binary=True)[0] if scanner.is_literal() else scanner.quoted()
    assert got == value and scanner.at_end()


@given(user=_TEXT, password=_TEXT, utf8=st.booleans())
def test_login_round_trip(user, password, utf8):
    """A LOGIN built with astring() parses back to the same credentials."""
    line = b"A1 LOGIN " + r.astring(user, utf8=utf8) + b" " + r.astring(password, utf8=utf8)
    assert parse(line, utf8=utf8) == Command("A1", "LOGIN", Login(user, password))


# -- mailbox names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "utf8", "wire"),
    [
        ("INBOX", False, b"INBOX"),
        ("Entw\u00fcrfe", False, b"Entw&APw-rfe"),
        ("Entw\u00fcrfe", True, b'"Entw\xc3\xbcrfe"'),
        ("A & B", False, b'"A &- B"'),
        ("A & B", True, b'"A & B"'),
        ("\u65e5\u672c\u8a9e", False, b"&ZeVnLIqe-"),
    ],
)
def test_mailbox_encoding(name, utf8, wire):
    assert r.mailbox(name, utf8=utf8) == wire


@given(
    name=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1).filter(
        lambda n: n.upper() != "INBOX"
    ),
    utf8=st.booleans(),
)
def test_mailbox_round_trip(name, utf8):
    """A name encoded for either kind of client decodes back to itself."""
    scanner = Scanner(r.mailbox(name, utf8=utf8), utf8=utf8)
    assert scanner.mailbox() == name
    assert decode_mailbox(r.mailbox("inbox", utf8=utf8), utf8=utf8) == "INBOX"


def test_flag_list():
    assert r.flag_list(["\\Seen", "$Forwarded"]) == b"(\\Seen $Forwarded)"
    assert r.flag_list([]) == b"()"


# -- dates, sets, codes -----------------------------------------------------------------------


def test_date_time():
    """RFC 9051 §9 date-time; the day is space-padded (date-day-fixed)."""
    pdt = dt.timezone(dt.timedelta(hours=-7))
    assert r.date_time(dt.datetime(1996, 7, 17, 2, 44, 25, tzinfo=pdt)) == (
        b'"17-Jul-1996 02:44:25 -0700"'
    )
    assert r.date_time(0.0) == b'" 1-Jan-1970 00:00:00 +0000"'
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))
    assert r.date_time(dt.datetime(2024, 2, 9, 23, 5, 1, tzinfo=ist)) == (
        b'" 9-Feb-2024 23:05:01 +0530"'
    )


@given(st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(9999, 1, 1)),
       st.integers(min_value=-23 * 60, max_value=23 * 60))  # fmt: skip
def test_date_time_round_trip(moment, offset):
    value = moment.replace(microsecond=0, tzinfo=dt.timezone(dt.timedelta(minutes=offset)))
    parsed = Scanner(r.date_time(value)).date_time()
    assert parsed == value and parsed.utcoffset() == value.utcoffset()


@pytest.mark.parametrize(
    ("numbers", "sort", "wire"),
    [
        ([1, 2, 3, 5, 7, 8], True, b"1:3,5,7:8"),
        ([8, 7, 3, 2, 1, 3], True, b"1:3,7:8"),
        ([9], True, b"9"),
        ([304, 319, 320], False, b"304,319:320"),
        ([5, 6, 1, 2], False, b"5:6,1:2"),
    ],
)
def test_uid_set(numbers, sort, wire):
    """RFC 4315 §3 uid-set, compacted into ranges."""
    assert r.uid_set(numbers, sort=sort) == wire


def test_uid_set_from_sequence_set_and_empty():
    assert r.uid_set(SequenceSet.parse("3,1:2,9:*")) == b"1:3,9:*"
    with pytest.raises(ValueError):
        r.uid_set([])


@pytest.mark.parametrize(
    ("built", "wire"),
    [
        (r.code("UIDVALIDITY", 3857529045), b"UIDVALIDITY 3857529045"),
        (r.code("APPENDUID", 38505, 3955), b"APPENDUID 38505 3955"),
        (
            r.code("COPYUID", 38505, r.uid_set([304, 319, 320]), r.uid_set([3956, 3957, 3958])),
            b"COPYUID 38505 304,319:320 3956:3958",
        ),
        (r.code("HIGHESTMODSEQ", 715194045007), b"HIGHESTMODSEQ 715194045007"),
        (r.code("BADCHARSET", ["US-ASCII", "UTF-8"]), b"BADCHARSET (US-ASCII UTF-8)"),
        (r.code("PERMANENTFLAGS", ["\\Deleted", "\\*"]), b"PERMANENTFLAGS (\\Deleted \\*)"),
        (r.code("MODIFIED", SequenceSet.parse("7,9")), b"MODIFIED 7,9"),
        (r.code("TRYCREATE"), b"TRYCREATE"),
        (r.code("ALERT"), b"ALERT"),
        (r.code("AUTHENTICATIONFAILED"), b"AUTHENTICATIONFAILED"),
        (r.code("TOOBIG"), b"TOOBIG"),
    ],
)
def test_response_codes(built, wire):
    assert built == wire


def test_code_refuses_unknown_types():
    with pytest.raises(TypeError):
        r.code("X", True)
    with pytest.raises(TypeError):
        r.code("X", 1.5)


# -- lines ------------------------------------------------------------------------------------


def test_tagged():
    assert r.tagged("A142", "OK", "SELECT completed", response_code=b"READ-WRITE") == (
        b"A142 OK [READ-WRITE] SELECT completed\r\n"
    )
    assert r.tagged("A3", "NO", "No such mailbox", response_code=r.code("TRYCREATE")) == (
        b"A3 NO [TRYCREATE] No such mailbox\r\n"
    )
    assert r.tagged("*", "BAD", "bad\r\nline") == b"* BAD bad  line\r\n"
    with pytest.raises(ValueError):
        r.tagged("A1", "BYE", "x")


def test_untagged_lines():
    assert r.untagged(b"172", b"EXISTS") == b"* 172 EXISTS\r\n"
    assert r.untagged_status("OK", "UIDs valid", response_code=r.code("UIDVALIDITY", 7)) == (
        b"* OK [UIDVALIDITY 7] UIDs valid\r\n"
    )
    assert r.untagged_status("PREAUTH", "hi") == b"* PREAUTH hi\r\n"
    assert r.bye("Autologout; idle too long") == b"* BYE Autologout; idle too long\r\n"
    assert r.untagged_status("OK", "") == b"* OK .\r\n"


def test_continuation():
    assert r.continuation() == b"+ Ready\r\n"
    assert r.continuation("idling") == b"+ idling\r\n"
    assert r.continuation(challenge=b"") == b"+ \r\n"
    assert r.continuation(challenge=b"\x01\x02") == b"+ " + base64.b64encode(b"\x01\x02") + b"\r\n"


def test_fetch_line():
    assert r.fetch(12, [("FLAGS", r.flag_list(["\\Seen"])), ("UID", b"4827313")]) == (
        b"* 12 FETCH (FLAGS (\\Seen) UID 4827313)\r\n"
    )


def test_esearch():
    """RFC 4731 §3.1; an empty ALL is omitted."""
    assert r.esearch("A282", True, {"MIN": 2, "COUNT": 3, "ALL": [2, 3, 4]}) == (
        b'* ESEARCH (TAG "A282") UID MIN 2 COUNT 3 ALL 2:4\r\n'
    )
    assert r.esearch("A1", False, {"COUNT": 0, "ALL": []}) == b'* ESEARCH (TAG "A1") COUNT 0\r\n'


# -- RFC 2047 words for clients without UTF-8 -------------------------------------------------


def test_encoded_words():
    assert r.encoded_words("plain") == "plain"
    text = "Gr\u00fc\u00dfe aus K\u00f6ln " * 8
    encoded = r.encoded_words(text)
    assert encoded.isascii()
    assert all(len(word) <= 75 for word in encoded.split(" "))
    decoded = "".join(
        part.decode(charset or "ascii") if isinstance(part, bytes) else part
        for part, charset in email.header.decode_header(encoded)
    )
    assert decoded == text
