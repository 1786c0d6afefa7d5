"""Mailbox commands: SELECT/EXAMINE, CREATE, DELETE, RENAME, (UN)SUBSCRIBE, LIST, LSUB,
STATUS, APPEND, GETQUOTA, GETQUOTAROOT; mailbox name decoding."""

from __future__ import annotations

import datetime as dt

import pytest

from mailserver.imap.parse_mailbox import (
    Append,
    Create,
    GetQuota,
    List,
    Lsub,
    MailboxArg,
    QResync,
    Rename,
    Select,
    Status,
)
from mailserver.imap.sequence import SequenceSet
from tests.imap.helpers import args, bad

S = SequenceSet.parse


# -- mailbox names ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["INBOX", "inbox", "InBoX", '"inbox"', "{5}\r\ninBox"])
def test_inbox_is_case_insensitive(name):
    """RFC 9051 §5.1: INBOX in any case is INBOX."""
    assert args(f"A1 SELECT {name}") == Select("INBOX")


def test_other_names_keep_their_case():
    assert args("A1 SELECT Inbox.Sub") == Select("Inbox.Sub")
    assert args("A1 DELETE Work/Notes") == MailboxArg("Work/Notes")


def test_modified_utf7_is_decoded():
    """Without UTF8=ACCEPT names are modified UTF-7 (RFC 3501 §5.1.3)."""
    assert args("A1 SELECT Entw&APw-rfe") == Select("Entw\u00fcrfe")
    assert args('A1 SELECT "A &- B"') == Select("A & B")


def test_invalid_modified_utf7_is_bad():
    assert "modified UTF-7" in bad("A1 SELECT Entw&APw").reason
    assert "modified UTF-7" in bad(b"A1 SELECT {6}\r\nEntw\xc3\xbc").reason


def test_utf8_names_after_enable():
    """With UTF8=ACCEPT names are UTF-8 and "&" is just "&"."""
    assert args('A1 SELECT "Entw\u00fcrfe"', utf8=True) == Select("Entw\u00fcrfe")
    assert args('A1 SELECT "A&B"', utf8=True) == Select("A&B")


# -- SELECT / EXAMINE -------------------------------------------------------------------------


def test_examine_is_readonly():
    assert args("A1 EXAMINE Archive") == Select("Archive", readonly=True)


def test_select_condstore():
    assert args("A1 SELECT INBOX (CONDSTORE)") == Select("INBOX", condstore=True)


def test_select_qresync_minimal():
    assert args("A1 SELECT INBOX (QRESYNC (67890007 20050715194045000))") == Select(
        "INBOX", qresync=QResync(67890007, 20050715194045000)
    )


def test_select_qresync_full():
    """RFC 7162 §3.2.5.2 example: known UIDs and sequence match data."""
    line = (
        "A02 SELECT INBOX (QRESYNC (67890007 90060115194045000 41:211,214:541 (1:15,16 41,43:56)))"
    )
    assert args(line) == Select(
        "INBOX",
        qresync=QResync(
            67890007, 90060115194045000, S("41:211,214:541"), (S("1:15,16"), S("41,43:56"))
        ),
    )


def test_select_qresync_seq_match_without_known_uids():
    assert args("A1 SELECT INBOX (QRESYNC (1 2 (1 5)))").qresync == QResync(
        1, 2, None, (S("1"), S("5"))
    )


@pytest.mark.parametrize(
    "line",
    [
        "A1 SELECT",
        "A1 SELECT INBOX ()",
        "A1 SELECT INBOX (FOO)",
        "A1 SELECT INBOX (CONDSTORE CONDSTORE)",
        "A1 SELECT INBOX (QRESYNC (0 5))",
        "A1 SELECT INBOX (QRESYNC (1 5 1:*))",
        "A1 SELECT INBOX (QRESYNC (1 5 $))",
        "A1 SELECT INBOX (QRESYNC (1))",
        "A1 SELECT INBOX CONDSTORE",
        "A1 SELECT INBOX x",
    ],
)
def test_select_bad(line):
    assert bad(line).tag == "A1"


# -- CREATE, DELETE, RENAME, SUBSCRIBE --------------------------------------------------------


def test_create():
    assert args("A1 CREATE Projects/2024") == Create("Projects/2024")


def test_create_special_use():
    """RFC 6154 §3: CREATE ... (USE (\\Drafts)); known attributes' case normalised."""
    assert args("A1 CREATE MyDrafts (USE (\\drafts))") == Create("MyDrafts", ("\\Drafts",))
    assert args("A1 CREATE X (USE (\\Sent \\X-Custom))") == Create("X", ("\\Sent", "\\X-Custom"))
    assert args("A1 CREATE X (USE ())") == Create("X", ())


@pytest.mark.parametrize(
    "line", ["A1 CREATE", "A1 CREATE X (FOO (\\Drafts))", "A1 CREATE X (USE (Drafts))"]
)
def test_create_bad(line):
    assert bad(line).name == "CREATE"


@pytest.mark.parametrize("verb", ["DELETE", "SUBSCRIBE", "UNSUBSCRIBE", "GETQUOTAROOT"])
def test_single_mailbox_commands(verb):
    assert args(f'A1 {verb} "Old Stuff"') == MailboxArg("Old Stuff")
    assert bad(f"A1 {verb}").name == verb
    assert bad(f"A1 {verb} a b").name == verb


def test_rename():
    assert args('A1 RENAME "a b" inbox.c') == Rename("a b", "inbox.c")
    assert bad("A1 RENAME a").name == "RENAME"


def test_getquota():
    assert args('A1 GETQUOTA ""') == GetQuota("")
    assert args("A1 GETQUOTA ROOT") == GetQuota("ROOT")


# -- LIST and LSUB ----------------------------------------------------------------------------


def test_list_basic():
    assert args('A1 LIST "" *') == List("", ("*",))
    assert args("A1 LIST ~/Mail/ %") == List("~/Mail/", ("%",))
    assert args('A1 LIST "" "INBOX.%"') == List("", ("INBOX.%",))


def test_list_pattern_with_brackets_and_wildcards():
    """list-mailbox allows "%", "*" and "]" unquoted."""
    assert args('A1 LIST "" foo]*%') == List("", ("foo]*%",))


def test_list_pattern_decoded():
    assert args('A1 LIST "" Entw&APw-*') == List("", ("Entw\u00fc*",))


def test_list_extended_selection_and_return():
    """RFC 5258 / RFC 5819 / RFC 6154: options upper-cased, STATUS items kept."""
    line = (
        'A1 LIST (subscribed RECURSIVEMATCH) "" ("INBOX" "Sent*") '
        "RETURN (CHILDREN SPECIAL-USE STATUS (MESSAGES UNSEEN))"
    )
    assert args(line) == List(
        "",
        ("INBOX", "Sent*"),
        ("SUBSCRIBED", "RECURSIVEMATCH"),
        ("CHILDREN", "SPECIAL-USE", "STATUS"),
        ("MESSAGES", "UNSEEN"),
        extended=True,
    )


def test_list_extended_empty_options():
    assert args('A1 LIST () "" % RETURN ()') == List("", ("%",), extended=True)
    assert args('A1 LIST (SPECIAL-USE) "" *') == List("", ("*",), ("SPECIAL-USE",), extended=True)


@pytest.mark.parametrize(
    "line",
    [
        "A1 LIST",
        'A1 LIST ""',
        'A1 LIST (BOGUS) "" *',
        'A1 LIST (RECURSIVEMATCH) "" *',
        'A1 LIST (RECURSIVEMATCH REMOTE) "" *',
        'A1 LIST "" * RETURN (BOGUS)',
        'A1 LIST "" * RETURN (STATUS (MESSAGES) STATUS (UNSEEN))',
        'A1 LIST "" * RETURN (STATUS (BOGUS))',
        'A1 LIST "" * RETURN',
        'A1 LIST "" () ',
    ],
)
def test_list_bad(line):
    assert bad(line).name == "LIST"


def test_lsub():
    assert args('A1 LSUB "#news." "comp.mail.*"') == Lsub("#news.", "comp.mail.*")
    assert bad("A1 LSUB x").name == "LSUB"


# -- STATUS -----------------------------------------------------------------------------------


def test_status_all_items():
    line = (
        "A1 STATUS blurdybloop (MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE RECENT "
        "HIGHESTMODSEQ APPENDLIMIT mailboxid MESSAGES)"
    )
    assert args(line) == Status(
        "blurdybloop",
        ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT",
         "HIGHESTMODSEQ", "APPENDLIMIT", "MAILBOXID"),
    )  # fmt: skip


@pytest.mark.parametrize(
    "line", ["A1 STATUS INBOX", "A1 STATUS INBOX ()", "A1 STATUS INBOX (FOO)", "A1 STATUS (x)"]
)
def test_status_bad(line):
    assert bad(line).name == "STATUS"


# -- APPEND -----------------------------------------------------------------------------------

MESSAGE = b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nSubject: hi\r\n\r\nHello\r\n"


def _append(prefix: str) -> bytes:
    return prefix.encode() + b"{%d}\r\n" % len(MESSAGE) + MESSAGE


def test_append_plain():
    assert args(_append("A1 APPEND saved-messages ")) == Append("saved-messages", message=MESSAGE)


def test_append_flags_and_date():
    """RFC 9051 §6.3.12 example shape: flags, date-time with zone, literal."""
    result = args(
        _append('A1 APPEND INBOX (\\Seen $Forwarded \\seen) " 7-Feb-1994 21:52:25 -0800" ')
    )
    assert result == Append(
        "INBOX",
        ("\\Seen", "$Forwarded"),
        dt.datetime(1994, 2, 7, 21, 52, 25, tzinfo=dt.timezone(dt.timedelta(hours=-8))),
        MESSAGE,
    )


def test_append_date_without_flags():
    result = args(_append('A1 APPEND INBOX "17-Jul-1996 02:44:25 +0130" '))
    assert result.flags == ()
    assert result.date.utcoffset() == dt.timedelta(hours=1, minutes=30)


def test_append_empty_flag_list():
    assert args(_append("A1 APPEND INBOX () ")).flags == ()


def test_append_literal8():
    data = b"x\x00y"
    assert args(b"A1 APPEND INBOX ~{3}\r\n" + data) == Append("INBOX", message=data, binary=True)


def test_append_utf8_extension():
    """RFC 6855 §4: APPEND ... UTF8 (~{n}...)."""
    data = "Subject: caf\u00e9\r\n\r\n".encode()
    line = b"A1 APPEND INBOX UTF8 (~{%d+}\r\n%s)" % (len(data), data)
    assert args(line) == Append("INBOX", message=data, binary=True, utf8=True)


@pytest.mark.parametrize(
    "line",
    [
        b"A1 APPEND INBOX",
        b"A1 APPEND INBOX hello",
        b'A1 APPEND INBOX "hello"',
        b"A1 APPEND INBOX (\\Seen)",
        b'A1 APPEND INBOX "32-Jan-2024 00:00:00 +0000" {1}\r\nx',
        b'A1 APPEND INBOX "1-Foo-2024 00:00:00 +0000" {1}\r\nx',
        b'A1 APPEND INBOX "1-Jan-2024 24:00:00 +0000" {1}\r\nx',
        b'A1 APPEND INBOX "1-Jan-2024 10:00:00 +0060" {1}\r\nx',
        b'A1 APPEND INBOX "1-Jan-2024 10:00:00" {1}\r\nx',
        b"A1 APPEND INBOX {5}\r\nabc",
        b"A1 APPEND INBOX {1}\r\nx {1}\r\ny",
        b"A1 APPEND INBOX UTF8 ({1}\r\nx)",
    ],
)
def test_append_bad(line):
    assert bad(line).name == "APPEND"


def test_append_message_not_in_repr():
    assert "Hello" not in repr(args(_append("A1 APPEND INBOX ")))
