"""FETCH, STORE, COPY/MOVE and UID EXPUNGE, with their UID forms."""

from __future__ import annotations

import pytest

from mailserver.imap.parse_fetch import (
    BinarySize,
    BodySection,
    Copy,
    Fetch,
    FetchAtt,
    Section,
    Store,
    UidExpunge,
)
from mailserver.imap.sequence import SequenceSet
from tests.imap.helpers import args, bad, parse

S = SequenceSet.parse


def items(line: str) -> tuple:
    result = args(line)
    assert isinstance(result, Fetch)
    return result.items


# -- FETCH ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("macro", "names"),
    [
        ("ALL", ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"]),
        ("fast", ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]),
        ("Full", ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"]),
    ],
)
def test_fetch_macros(macro, names):
    """RFC 9051 §6.4.5: ALL, FAST and FULL expand to their attributes."""
    assert args(f"A1 FETCH 1:* {macro}") == Fetch(
        S("1:*"), False, tuple(FetchAtt(n) for n in names)
    )


def test_macro_inside_list_is_bad():
    """Macros stand alone; inside parentheses they are unknown attributes."""
    assert bad("A1 FETCH 1 (ALL)").reason == "Unknown fetch attribute ALL"


@pytest.mark.parametrize(
    "name",
    ["ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE",
     "RFC822.TEXT", "BODY", "BODYSTRUCTURE", "UID", "MODSEQ", "EMAILID", "THREADID",
     "SAVEDATE"],
)  # fmt: skip
def test_simple_attributes(name):
    assert items(f"A1 FETCH 2 {name.lower()}") == (FetchAtt(name),)


def test_attribute_list_keeps_order_and_drops_repeats():
    assert items("A1 FETCH 2,4 (UID FLAGS uid)") == (FetchAtt("UID"), FetchAtt("FLAGS"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("BODY[]", BodySection(Section())),
        ("BODY.PEEK[]", BodySection(Section(), peek=True)),
        ("BODY[HEADER]", BodySection(Section((), "HEADER"))),
        ("BODY[TEXT]", BodySection(Section((), "TEXT"))),
        ("BODY[1]", BodySection(Section((1,)))),
        ("BODY[1.2.3]", BodySection(Section((1, 2, 3)))),
        ("BODY[1.MIME]", BodySection(Section((1,), "MIME"))),
        ("BODY[4.2.HEADER]", BodySection(Section((4, 2), "HEADER"))),
        ("BODY[3.TEXT]", BodySection(Section((3,), "TEXT"))),
        (
            "BODY.PEEK[HEADER.FIELDS (Date from X-Mailer)]",
            BodySection(Section((), "HEADER.FIELDS", ("DATE", "FROM", "X-MAILER")), peek=True),
        ),
        (
            "BODY[1.HEADER.FIELDS.NOT (Received)]",
            BodySection(Section((1,), "HEADER.FIELDS.NOT", ("RECEIVED",))),
        ),
        ("BODY[]<0.2048>", BodySection(Section(), partial=(0, 2048))),
        ("BODY.PEEK[TEXT]<100.1>", BodySection(Section((), "TEXT"), True, (100, 1))),
        ("BINARY[]", BodySection(Section(), binary=True)),
        ("BINARY.PEEK[1.2]<5.10>", BodySection(Section((1, 2)), True, (5, 10), True)),
        ("BINARY.SIZE[2]", BinarySize((2,))),
        ("BINARY.SIZE[]", BinarySize(())),
    ],
)
def test_body_sections(text, expected):
    """RFC 9051 §6.4.5 / RFC 3516 §4.2 section specs, partials and PEEK."""
    assert items(f"A1 FETCH 1 ({text})") == (expected,)
    assert items(f"A1 FETCH 1 {text}") == (expected,)


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("BODY.PEEK[HEADER.FIELDS (DATE FROM)]", "BODY[HEADER.FIELDS (DATE FROM)]"),
        ("BODY[]<0.2048>", "BODY[]<0>"),
        ("BODY[1.2.MIME]", "BODY[1.2.MIME]"),
        ("BINARY.PEEK[1]<7.3>", "BINARY[1]<7>"),
        ("BINARY.SIZE[1.2]", "BINARY.SIZE[1.2]"),
        ("RFC822.SIZE", "RFC822.SIZE"),
    ],
)
def test_response_labels(text, label):
    """The name in the FETCH response drops .PEEK and the partial length (RFC 9051 §7.5.2)."""
    (item,) = items(f"A1 FETCH 1 {text}")
    assert item.label() == label


@pytest.mark.parametrize(
    "text",
    [
        "BODY[MIME]",
        "BODY[0]",
        "BODY[1.0]",
        "BODY[HEADER.FIELDS]",
        "BODY[HEADER.FIELDS ()]",
        "BODY[HEADER.FIELDS (A:B)]",
        "BODY[FOO]",
        "BODY[1.FOO]",
        "BODY[",
        "BODY[]<0>",
        "BODY[]<0.0>",
        "BODY[]<.5>",
        "BODY.PEEK",
        "BINARY[HEADER]",
        "BINARY[1.MIME]",
        "BINARY.SIZE",
        "BINARY.SIZE[1]<0.5>",
        "X-UNKNOWN",
        "()",
    ],
)
def test_body_sections_bad(text):
    assert bad(f"A1 FETCH 1 ({text})").name == "FETCH"


def test_uid_fetch_with_modifiers():
    """RFC 7162: CHANGEDSINCE, and VANISHED with UID FETCH."""
    result = args("A1 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)")
    assert result == Fetch(S("300:500"), True, (FetchAtt("FLAGS"),), 12345, True)
    assert parse("A1 UID FETCH 1 FLAGS").name == "UID FETCH"


def test_fetch_changedsince():
    assert args("A1 FETCH 1:* FAST (CHANGEDSINCE 7)").changedsince == 7


@pytest.mark.parametrize(
    "line",
    [
        "A1 FETCH 1:* (FLAGS) (VANISHED CHANGEDSINCE 5)",  # VANISHED needs UID FETCH
        "A1 UID FETCH 1:* (FLAGS) (VANISHED)",  # ... and CHANGEDSINCE
        "A1 FETCH 1 (FLAGS) (CHANGEDSINCE 1 CHANGEDSINCE 2)",
        "A1 FETCH 1 (FLAGS) (FOO)",
        "A1 FETCH 1 (FLAGS) ()",
        "A1 FETCH 1 (FLAGS) (CHANGEDSINCE 9223372036854775808)",
        "A1 FETCH 0 FLAGS",
        "A1 FETCH 1:4294967296 FLAGS",
        "A1 FETCH 1,,2 FLAGS",
        "A1 FETCH FLAGS",
        "A1 FETCH 1",
        "A1 FETCH 1 (FLAGS",
        "A1 FETCH 1 (FLAGS) x",
    ],
)
def test_fetch_bad(line):
    assert bad(line).tag == "A1"


def test_fetch_saved_result():
    """RFC 5182: "$" stands for the saved search result."""
    assert args("A1 FETCH $ FLAGS").sequence == SequenceSet.saved_result()


# -- STORE ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mode", "silent"),
    [
        ("FLAGS", "replace", False),
        ("+FLAGS", "add", False),
        ("-FLAGS", "remove", False),
        ("FLAGS.SILENT", "replace", True),
        ("+flags.silent", "add", True),
        ("-FLAGS.SILENT", "remove", True),
    ],
)
def test_store_modes(text, mode, silent):
    result = args(f"A1 STORE 2:4 {text} (\\Deleted $Junk)")
    assert result == Store(S("2:4"), False, mode, silent, ("\\Deleted", "$Junk"))


def test_store_flags_without_parentheses():
    """RFC 9051 §9: store-att-flags may list flags without parentheses."""
    assert args("A1 STORE 1 +FLAGS \\seen \\ANSWERED foo").flags == ("\\Seen", "\\Answered", "foo")


def test_store_empty_flag_list():
    assert args("A1 STORE 1 FLAGS ()").flags == ()


def test_uid_store_unchangedsince():
    """RFC 7162 §3.1.3: STORE (UNCHANGEDSINCE n)."""
    assert args("A1 UID STORE 1:* (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Seen)") == Store(
        S("1:*"), True, "add", True, ("\\Seen",), 320162338
    )


@pytest.mark.parametrize(
    "line",
    [
        "A1 STORE 1 FLAGS",
        "A1 STORE 1 LABELS (x)",
        "A1 STORE 1 *FLAGS (x)",
        "A1 STORE 1 FLAGS (\\)",
        "A1 STORE 1 FLAGS (a b",
        "A1 STORE 1 (UNCHANGEDSINCE) FLAGS (x)",
        "A1 STORE 1 (FOO 1) FLAGS (x)",
        "A1 STORE 1 FLAGS (a)(b)",
        "A1 STORE 1 FLAGS (\\Seen) extra",
    ],
)
def test_store_bad(line):
    assert bad(line).name == "STORE"


# -- COPY, MOVE, UID EXPUNGE ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("A1 COPY 2:4 MEETING", Copy(S("2:4"), False, "MEETING")),
        ('A1 UID COPY 5,9:* "Old mail"', Copy(S("5,9:*"), True, "Old mail")),
        ("A1 MOVE 1 inbox", Copy(S("1"), False, "INBOX", move=True)),
        ("A1 UID MOVE $ Trash", Copy(SequenceSet.saved_result(), True, "Trash", move=True)),
    ],
)
def test_copy_and_move(line, expected):
    assert args(line) == expected


def test_copy_bad():
    assert bad("A1 COPY 1").name == "COPY"
    assert bad("A1 UID MOVE x y").name == "UID MOVE"


def test_uid_expunge():
    assert args("A1 UID EXPUNGE 3000:3002") == UidExpunge(S("3000:3002"))
    assert bad("A1 UID EXPUNGE").name == "UID EXPUNGE"
