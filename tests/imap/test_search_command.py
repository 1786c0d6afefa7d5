"""SEARCH / UID SEARCH: every RFC 9051 §6.4.4 key, groups, CHARSET and RETURN options."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.imap.grammar import BadCommand, Command
from mailserver.imap.parse_search import (
    All,
    And,
    Contains,
    DateKey,
    HasFlag,
    Header,
    InSet,
    ModSeqKey,
    Not,
    ObjectId,
    Or,
    SaveDateSupported,
    Search,
    SizeKey,
    Within,
)
from mailserver.imap.sequence import SequenceSet
from tests.imap.helpers import args, bad, parse

S = SequenceSet.parse


def key(text: str, *, utf8: bool = False):
    result = args(f"A1 SEARCH {text}", utf8=utf8)
    assert isinstance(result, Search)
    return result.key


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ALL", All()),
        ("ANSWERED", HasFlag("\\Answered")),
        ("DELETED", HasFlag("\\Deleted")),
        ("DRAFT", HasFlag("\\Draft")),
        ("FLAGGED", HasFlag("\\Flagged")),
        ("SEEN", HasFlag("\\Seen")),
        ("RECENT", HasFlag("\\Recent")),
        ("UNANSWERED", HasFlag("\\Answered", False)),
        ("UNDELETED", HasFlag("\\Deleted", False)),
        ("UNDRAFT", HasFlag("\\Draft", False)),
        ("UNFLAGGED", HasFlag("\\Flagged", False)),
        ("UNSEEN", HasFlag("\\Seen", False)),
        ("OLD", HasFlag("\\Recent", False)),
        ("NEW", And((HasFlag("\\Recent"), HasFlag("\\Seen", False)))),
        ("KEYWORD $Junk", HasFlag("$Junk")),
        ("UNKEYWORD $Forwarded", HasFlag("$Forwarded", False)),
        ("BCC bob", Contains("BCC", "bob")),
        ('BODY "hello world"', Contains("BODY", "hello world")),
        ("CC {3}\r\nann", Contains("CC", "ann")),
        ("FROM Smith", Contains("FROM", "Smith")),
        ('SUBJECT ""', Contains("SUBJECT", "")),
        ("TEXT x", Contains("TEXT", "x")),
        ("TO alice@example.org", Contains("TO", "alice@example.org")),
        ('HEADER X-Spam-Flag "YES"', Header("X-Spam-Flag", "YES")),
        ('HEADER List-Id ""', Header("List-Id", "")),
        ("BEFORE 1-Feb-1994", DateKey("internal", "before", dt.date(1994, 2, 1))),
        ("ON 01-feb-1994", DateKey("internal", "on", dt.date(1994, 2, 1))),
        ('SINCE "1-Feb-1994"', DateKey("internal", "since", dt.date(1994, 2, 1))),
        ("SENTBEFORE 31-Dec-2023", DateKey("sent", "before", dt.date(2023, 12, 31))),
        ("SENTON 1-Jan-2024", DateKey("sent", "on", dt.date(2024, 1, 1))),
        ("SENTSINCE 1-Jan-2024", DateKey("sent", "since", dt.date(2024, 1, 1))),
        ("SAVEDBEFORE 1-Jan-2024", DateKey("saved", "before", dt.date(2024, 1, 1))),
        ("SAVEDON 1-Jan-2024", DateKey("saved", "on", dt.date(2024, 1, 1))),
        ("SAVEDSINCE 1-Jan-2024", DateKey("saved", "since", dt.date(2024, 1, 1))),
        ("SAVEDATESUPPORTED", SaveDateSupported()),
        ("LARGER 1024", SizeKey(True, 1024)),
        ("SMALLER 0", SizeKey(False, 0)),
        ("OLDER 3600", Within(True, 3600)),
        ("YOUNGER 60", Within(False, 60)),
        ("UID 1:5,9", InSet(S("1:5,9"), uid=True)),
        ("2:4,*", InSet(S("2:4,*"))),
        ("$", InSet(SequenceSet.saved_result())),
        ("UID $", InSet(SequenceSet.saved_result(), uid=True)),
        ("MODSEQ 620162338", ModSeqKey(620162338)),
        ('MODSEQ "/flags/\\\\draft" all 620162338', ModSeqKey(620162338, "/flags/\\draft", "all")),
        ("EMAILID M6d99ac3275bb4e", ObjectId("EMAILID", "M6d99ac3275bb4e")),
        ("THREADID T64b478a75b7ea9", ObjectId("THREADID", "T64b478a75b7ea9")),
        ("NOT SEEN", Not(HasFlag("\\Seen"))),
        ("OR SEEN FLAGGED", Or(HasFlag("\\Seen"), HasFlag("\\Flagged"))),
        ("(SEEN)", HasFlag("\\Seen")),
        ("(SEEN FLAGGED)", And((HasFlag("\\Seen"), HasFlag("\\Flagged")))),
    ],
)
def test_search_keys(text, expected):
    assert key(text) == expected


def test_implicit_and_with_nesting():
    """Several keys are an AND; OR, NOT and groups nest (RFC 9051 §6.4.4 examples)."""
    assert key('FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"') == And(
        (
            HasFlag("\\Flagged"),
            DateKey("internal", "since", dt.date(1994, 2, 1)),
            Not(Contains("FROM", "Smith")),
        )
    )
    assert key("OR (SEEN FLAGGED) NOT (OR DRAFT 1:3) UID 5") == And(
        (
            Or(
                And((HasFlag("\\Seen"), HasFlag("\\Flagged"))),
                Not(Or(HasFlag("\\Draft"), InSet(S("1:3")))),
            ),
            InSet(S("5"), uid=True),
        )
    )


def test_uid_search_and_return_options():
    """RFC 4731 / RFC 9051: RETURN (...) before the program; options upper-cased."""
    result = args("A1 UID SEARCH RETURN (min MAX COUNT ALL SAVE) UNSEEN")
    assert result == Search(
        HasFlag("\\Seen", False), True, None, ("MIN", "MAX", "COUNT", "ALL", "SAVE")
    )


def test_empty_return_is_all():
    """RFC 9051 §6.4.4: RETURN () is RETURN (ALL)."""
    assert args("A1 SEARCH RETURN () ALL").returns == ("ALL",)
    assert args("A1 SEARCH ALL").returns is None


def test_charset():
    """CHARSET decodes the strings; US-ASCII and UTF-8 always work."""
    assert args("A1 SEARCH CHARSET UTF-8 TEXT {5}\r\ncaf\xc3\xa9".encode("latin-1")) == Search(
        Contains("TEXT", "caf\u00e9"), False, "UTF-8"
    )
    result = args(b"A1 SEARCH CHARSET ISO-8859-1 SUBJECT {4}\r\ncaf\xe9")
    assert result.key == Contains("SUBJECT", "caf\u00e9") and result.charset == "ISO-8859-1"
    assert args('A1 SEARCH RETURN (COUNT) CHARSET "us-ascii" ALL').charset == "US-ASCII"


def test_unknown_charset_is_badcharset():
    """RFC 9051 §6.4.4: an unsupported charset is answered NO [BADCHARSET]."""
    result = bad("A1 SEARCH CHARSET X-KLINGON TEXT x")
    assert result.code == "BADCHARSET"
    assert bad("A1 SEARCH CHARSET base64 TEXT x").code == "BADCHARSET"


def test_invalid_text_in_charset_is_bad():
    assert bad(b"A1 SEARCH CHARSET US-ASCII TEXT {1}\r\n\xe9").code is None


def test_utf8_quoted_search_string():
    assert key('SUBJECT "caf\u00e9"', utf8=True) == Contains("SUBJECT", "caf\u00e9")
    assert bad('A1 SEARCH SUBJECT "caf\u00e9"').name == "SEARCH"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "FOO",
        "FROM",
        "OR SEEN",
        "NOT",
        "(SEEN",
        "SEEN)",
        "()",
        "BEFORE 1-Foo-2024",
        "BEFORE 31-Feb-2024",
        "LARGER x",
        "OLDER 0",
        "KEYWORD \\Seen",
        "UID",
        "UID x",
        'MODSEQ "/flags/x" bogus 5',
        'MODSEQ "/other" all 5',
        "RETURN (FOO) ALL",
        "RETURN ALL",
        "CHARSET",
        "SEEN  FLAGGED",
    ],
)
def test_search_bad(text):
    assert bad(f"A1 SEARCH {text}".rstrip()).name == "SEARCH"


def test_deep_nesting_is_refused_not_crashing():
    """A hostile program nested thousands deep is BAD, not a RecursionError."""
    assert "deep" in bad("A1 SEARCH " + "NOT " * 5000 + "SEEN").reason
    assert "deep" in bad("A1 SEARCH " + "(" * 5000 + "SEEN" + ")" * 5000).reason


_TOKENS = st.sampled_from(
    ["OR", "NOT", "(", ")", "SEEN", "UID", "1:*", "$", "FROM", '"x"', "x", "HEADER",
     "SINCE", "1-Jan-2024", "LARGER", "10", "MODSEQ", "KEYWORD", "CHARSET", "RETURN", "()"]
)  # fmt: skip


@settings(max_examples=300)
@given(st.lists(_TOKENS, min_size=1, max_size=15))
def test_random_programs_parse_or_are_bad(tokens):
    """Any token soup is a Search or a BadCommand, never an exception."""
    result = parse("A1 SEARCH " + " ".join(tokens))
    assert isinstance(result, Command | BadCommand)


def test_error_reasons_name_the_problem():
    assert bad("A1 SEARCH FOO").reason == "Unknown search key FOO"
    assert bad("A1 SEARCH (SEEN").reason == "Expected )"
    assert bad("A1 SEARCH FROM").reason == "Missing argument"
