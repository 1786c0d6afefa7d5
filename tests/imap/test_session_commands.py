"""Command heads and the session commands: tags, names, LOGIN, AUTHENTICATE, ENABLE, ID."""

from __future__ import annotations

import pytest

from mailserver.imap.grammar import COMMANDS, UNKNOWN_COMMAND, BadCommand, Command
from mailserver.imap.parse_session import Authenticate, Enable, Id, Login
from tests.imap.helpers import args, bad, parse

NO_ARGS = ["CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "UNSELECT",
           "NAMESPACE", "IDLE", "EXPUNGE"]  # fmt: skip


@pytest.mark.parametrize("name", NO_ARGS)
def test_commands_without_arguments(name):
    """Commands without arguments parse to args None, whatever the case of the name."""
    assert parse(f"t1 {name.lower()}") == Command("t1", name)


@pytest.mark.parametrize("name", NO_ARGS)
def test_commands_without_arguments_refuse_arguments(name):
    """Anything after an argument-less command is BAD."""
    assert bad(f"t1 {name} x") == BadCommand("t1", "Unexpected extra arguments", name)


def test_unknown_command():
    """An unknown command is BAD with reason "unknown command", its tag and name kept."""
    assert parse("A1 XYZZY foo") == BadCommand("A1", UNKNOWN_COMMAND, "XYZZY")
    assert parse("A1 UID NOOP") == BadCommand("A1", UNKNOWN_COMMAND, "UID NOOP")


@pytest.mark.parametrize("line", ["", " NOOP", "+1 NOOP", "A(1 NOOP", "a{ NOOP", "*"])
def test_invalid_tag_is_star(line):
    """Without a valid tag the BAD response is untagged (tag "*")."""
    assert parse(line).tag == "*"


def test_tag_characters():
    """A tag is any ASTRING-CHAR except "+": "]" and "." are fine."""
    assert parse("a.b]c-1 NOOP") == Command("a.b]c-1", "NOOP")


def test_missing_command():
    assert bad("A1").reason == "Missing argument"
    assert bad("A1 ").reason == "Expected command"


def test_double_space_is_bad():
    """Arguments are separated by exactly one SP."""
    assert bad("A1  NOOP").tag == "A1"
    assert bad("A1 LOGIN  bob pw").name == "LOGIN"


def test_command_table_is_complete():
    """Every command family named in issue 6 is known to the parser."""
    assert {"LOGIN", "AUTHENTICATE", "ENABLE", "ID", "SELECT", "EXAMINE", "CREATE", "DELETE",
            "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "APPEND",
            "GETQUOTA", "GETQUOTAROOT", "SETQUOTA", "SEARCH", "FETCH", "STORE", "COPY", "MOVE",
            "UID FETCH", "UID STORE", "UID SEARCH", "UID COPY", "UID MOVE",
            "UID EXPUNGE"} | set(NO_ARGS) == COMMANDS  # fmt: skip


# -- LOGIN ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("A1 LOGIN bob secret", Login("bob", "secret")),
        ('A1 LOGIN "bob@example.org" "p a\\"ss\\\\"', Login("bob@example.org", 'p a"ss\\')),
        ("A1 LOGIN {3}\r\nbob {2}\r\npw", Login("bob", "pw")),
        ("A1 login b]ob pw]", Login("b]ob", "pw]")),
        ('A1 LOGIN "" ""', Login("", "")),
    ],
)
def test_login(line, expected):
    assert args(line) == expected


@pytest.mark.parametrize(
    "line",
    ["A1 LOGIN", "A1 LOGIN bob", "A1 LOGIN bob pw x", 'A1 LOGIN "bob pw', "A1 LOGIN (bob) pw",
     'A1 LOGIN "b\\x" pw', "A1 LOGIN bob {2}\r\np"],
)  # fmt: skip
def test_login_bad(line):
    assert bad(line).name == "LOGIN"


def test_login_password_not_in_repr():
    """A logged command never shows the password."""
    assert "secret" not in repr(parse("A1 LOGIN bob secret"))


def test_8bit_quoted_only_with_utf8():
    """UTF-8 in a quoted string needs UTF8=ACCEPT / IMAP4rev2; in a literal it is fine."""
    assert bad('A1 LOGIN "j\xf6rg" pw').reason == "8-bit character in quoted string"
    assert args('A1 LOGIN "j\xf6rg" pw', utf8=True) == Login("j\xf6rg", "pw")
    assert args("A1 LOGIN {5}\r\nj\xf6rg pw") == Login("j\xf6rg", "pw")
    assert bad(b'A1 LOGIN "j\xf6rg" pw', utf8=True).reason == "Invalid UTF-8 in quoted string"


# -- AUTHENTICATE -----------------------------------------------------------------------------


def test_authenticate():
    assert args("A1 AUTHENTICATE plain") == Authenticate("PLAIN", None)


def test_authenticate_initial_response():
    """SASL-IR (RFC 4959): the initial response is decoded; "=" is an empty response."""
    assert args("A1 AUTHENTICATE PLAIN AGJvYgBwdw==") == Authenticate("PLAIN", b"\0bob\0pw")
    assert args("A1 AUTHENTICATE EXTERNAL =") == Authenticate("EXTERNAL", b"")


@pytest.mark.parametrize(
    "line", ["A1 AUTHENTICATE", "A1 AUTHENTICATE PLAIN !!!", "A1 AUTHENTICATE PLAIN AGJ"]
)
def test_authenticate_bad(line):
    assert bad(line).name == "AUTHENTICATE"


# -- ENABLE and ID ----------------------------------------------------------------------------


def test_enable():
    """Capability names are upper-cased; repeats dropped."""
    assert args("A1 ENABLE UTF8=ACCEPT imap4rev2 CONDSTORE condstore") == Enable(
        ("UTF8=ACCEPT", "IMAP4REV2", "CONDSTORE")
    )


def test_enable_needs_a_capability():
    assert bad("A1 ENABLE").name == "ENABLE"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("A1 ID NIL", Id(None)),
        ("A1 ID ()", Id(())),
        ('A1 ID ("name" "mutt" "version" NIL)', Id((("name", "mutt"), ("version", None)))),
        ('A1 ID ({4}\r\nname "x")', Id((("name", "x"),))),
    ],
)
def test_id(line, expected):
    assert args(line) == expected


@pytest.mark.parametrize(
    "line",
    ['A1 ID ("name")', 'A1 ID ("name" "a" "NAME" "b")', "A1 ID (name x)",
     'A1 ID ("' + "n" * 31 + '" "x")', "A1 ID"],
)  # fmt: skip
def test_id_bad(line):
    """RFC 2971: pairs of strings, no repeated field, fields at most 30 octets."""
    assert bad(line).name == "ID"


def test_literal8_only_in_append():
    """RFC 3516 §4.1: literal8 is APPEND's; anywhere else it is BAD."""
    assert bad(b"A1 LOGIN ~{3}\r\nbob pw").name == "LOGIN"
    assert bad(b"A1 SEARCH TEXT ~{1}\r\nx").name == "SEARCH"


@pytest.mark.parametrize(
    "line",
    [
        "A1 LOGIN bob pw",
        "A1 UID FETCH 1:* (FLAGS BODY.PEEK[1.MIME]) (CHANGEDSINCE 3 VANISHED)",
        'A1 LIST (SUBSCRIBED) "" (% "x") RETURN (STATUS (MESSAGES))',
        'A1 APPEND INBOX (\\Seen) " 1-Jan-2024 00:00:00 +0000" {1+}\r\nx',
        "A1 SEARCH RETURN (ALL) OR SEEN NOT 1:3",
    ],
)
def test_commands_are_hashable_values(line):
    """Parsed commands are frozen values: equal when parsed twice, and hashable."""
    assert parse(line) == parse(line)
    assert hash(parse(line)) == hash(parse(line))
