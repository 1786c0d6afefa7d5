"""Arguments of the mailbox commands: SELECT/EXAMINE, CREATE, DELETE, RENAME, (UN)SUBSCRIBE,
LIST (with LIST-EXTENDED), LSUB, STATUS, APPEND and the QUOTA look-ups.

Sources: RFC 9051 §6.3 and §9, RFC 7162 §3.1.8 / §3.2.5 (CONDSTORE, QRESYNC select
parameters), RFC 5258 (LIST-EXTENDED), RFC 5819 (LIST-STATUS), RFC 6154 (SPECIAL-USE, CREATE
USE), RFC 3516 (literal8 in APPEND), RFC 6855 §4 (APPEND UTF8), RFC 9208 (QUOTA).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from mailserver.imap.scanner import MAX_MODSEQ, ParseError, Scanner, SpooledLiteral
from mailserver.imap.sequence import SequenceSet

__all__ = [
    "SPECIAL_USE",
    "STATUS_ITEMS",
    "Append",
    "Create",
    "GetQuota",
    "List",
    "Lsub",
    "MailboxArg",
    "QResync",
    "Rename",
    "Select",
    "SetQuota",
    "Status",
    "parse_append",
    "parse_create",
    "parse_getquota",
    "parse_list",
    "parse_lsub",
    "parse_mailbox_arg",
    "parse_rename",
    "parse_select",
    "parse_setquota",
    "parse_status",
]

#: RFC 9051 §6.3.11 + RFC 7162 (HIGHESTMODSEQ) + RFC 7889 (APPENDLIMIT) + RFC 8474 (MAILBOXID)
#: + RFC 9208 §4.1.4 (DELETED-STORAGE).
STATUS_ITEMS = frozenset(
    {"MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT",
     "HIGHESTMODSEQ", "APPENDLIMIT", "MAILBOXID", "DELETED-STORAGE"}
)  # fmt: skip
#: RFC 6154 §2 / RFC 9051 §7.3.1: the special-use attributes, by upper-cased spelling.
SPECIAL_USE = {
    name.upper(): name
    for name in ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
}
#: RFC 5258 §3.1 selection options (+ RFC 6154 §3 SPECIAL-USE) and §3.2 return options.
LIST_SELECT = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
LIST_RETURN = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})


@dataclass(frozen=True, slots=True)
class MailboxArg:
    """A command whose only argument is a mailbox (DELETE, SUBSCRIBE, UNSUBSCRIBE,
    GETQUOTAROOT)."""

    mailbox: str


@dataclass(frozen=True, slots=True)
class QResync:
    """The ``QRESYNC (uidvalidity modseq [known-uids [seq-match]])`` parameter (RFC 7162
    §3.2.5); ``seq_match`` is (known sequence numbers, their UIDs)."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True, slots=True)
class Select:
    """SELECT, or EXAMINE when ``readonly`` (RFC 9051 §6.3.2-3), with CONDSTORE / QRESYNC."""

    mailbox: str
    readonly: bool = False
    condstore: bool = False
    qresync: QResync | None = None


@dataclass(frozen=True, slots=True)
class Create:
    """``CREATE mailbox [(USE (attrs))]``; ``special_use`` holds the RFC 6154 §3 attributes."""

    mailbox: str
    special_use: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rename:
    """``RENAME existing new`` (RFC 9051 §6.3.6)."""

    old: str
    new: str


@dataclass(frozen=True, slots=True)
class List:
    """``LIST [(select-opts)] reference pattern(s) [RETURN (opts)]`` (RFC 9051 §6.3.9, RFC
    5258).

    Option names are upper-cased; ``status_items`` holds the ``RETURN (STATUS (...))`` items
    (RFC 5819), or None when STATUS was not asked for. ``extended`` tells whether any
    LIST-EXTENDED syntax was used (the response then carries extended data, RFC 5258 §3).
    """

    reference: str
    patterns: tuple[str, ...]
    selection: tuple[str, ...] = ()
    returns: tuple[str, ...] = ()
    status_items: tuple[str, ...] | None = None
    extended: bool = False


@dataclass(frozen=True, slots=True)
class Lsub:
    """``LSUB reference pattern`` (RFC 3501 §6.3.9; IMAP4rev1 only)."""

    reference: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Status:
    """``STATUS mailbox (items)`` (RFC 9051 §6.3.11); items upper-cased, duplicates dropped."""

    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Append:
    """``APPEND mailbox [flags] [date-time] message`` (RFC 9051 §6.3.12).

    ``binary`` is True when the message came as literal8 (RFC 3516 §4.1: the server must not
    refuse NUL octets in it) and ``utf8`` when it came as ``UTF8 (literal8)`` (RFC 6855 §4).
    ``message`` is the bytes, or for a large literal the :class:`SpooledLiteral` on disk.
    """

    mailbox: str
    flags: tuple[str, ...] = ()
    date: dt.datetime | None = None
    message: bytes | SpooledLiteral = field(default=b"", repr=False)
    binary: bool = False
    utf8: bool = False


@dataclass(frozen=True, slots=True)
class GetQuota:
    """``GETQUOTA quota-root`` (RFC 9208 §4.2)."""

    root: str


@dataclass(frozen=True, slots=True)
class SetQuota:
    """``SETQUOTA quota-root (resource limit ...)`` (RFC 9208 §4.1.3); resource names
    upper-cased, limits as given (STORAGE in units of 1024 octets)."""

    root: str
    limits: tuple[tuple[str, int], ...]


def parse_mailbox_arg(s: Scanner) -> MailboxArg:
    s.space()
    return MailboxArg(s.mailbox())


def parse_getquota(s: Scanner) -> GetQuota:
    s.space()
    return GetQuota(s.astring_text("quota root"))


def parse_setquota(s: Scanner) -> SetQuota:
    s.space()
    root = s.astring_text("quota root")
    s.space()

    def limit() -> tuple[str, int]:
        name = s.keyword("resource name")
        s.space()
        return name, s.number(limit=MAX_MODSEQ, what="resource limit")

    limits = s.parenthesized(limit, empty=True)
    if len({name for name, _ in limits}) != len(limits):
        raise ParseError("A resource is given twice")
    return SetQuota(root, tuple(limits))


def parse_rename(s: Scanner) -> Rename:
    s.space()
    old = s.mailbox()
    s.space()
    return Rename(old, s.mailbox())


def _qresync(s: Scanner) -> QResync:
    s.space()
    s.expect(b"(", "(")
    uidvalidity = s.number(nonzero=True, what="UIDVALIDITY")
    s.space()
    modseq = s.modseq(zero=True)
    known: SequenceSet | None = None
    match: tuple[SequenceSet, SequenceSet] | None = None
    if s.maybe(b" "):
        if s.peek() != b"(":
            known = s.sequence_set(saved=False)
            if known.uses_star:
                raise ParseError("* is not allowed in known UIDs")
            if s.maybe(b" "):
                match = _seq_match(s)
        else:
            match = _seq_match(s)
    s.expect(b")", ")")
    return QResync(uidvalidity, modseq, known, match)


def _seq_match(s: Scanner) -> tuple[SequenceSet, SequenceSet]:
    s.expect(b"(", "(")
    numbers = s.sequence_set(saved=False)
    s.space()
    uids = s.sequence_set(saved=False)
    s.expect(b")", ")")
    if numbers.uses_star or uids.uses_star:
        raise ParseError("* is not allowed in QRESYNC sequence match data")
    return numbers, uids


def parse_select(s: Scanner, *, readonly: bool) -> Select:
    s.space()
    mailbox = s.mailbox()
    condstore = False
    qresync: QResync | None = None
    if not s.at_end():
        s.space()
        s.expect(b"(", "(")
        seen: set[str] = set()
        while True:
            name = s.keyword("select parameter")
            if name in seen:
                raise ParseError(f"Duplicate select parameter {name}")
            seen.add(name)
            if name == "CONDSTORE":
                condstore = True
            elif name == "QRESYNC":
                qresync = _qresync(s)
            else:
                raise ParseError(f"Unknown select parameter {name}")
            if s.maybe(b")"):
                break
            s.space()
    return Select(mailbox, readonly, condstore, qresync)


def _use_attr(s: Scanner) -> str:
    s.expect(b"\\", "special-use attribute")
    name = "\\" + s.atom("special-use attribute")
    return SPECIAL_USE.get(name.upper(), name)


def parse_create(s: Scanner) -> Create:
    s.space()
    mailbox = s.mailbox()
    uses: tuple[str, ...] = ()
    if not s.at_end():
        s.space()
        s.expect(b"(", "(")
        seen: set[str] = set()
        while True:
            name = s.keyword("create parameter")
            if name != "USE" or name in seen:
                raise ParseError(f"Unknown or repeated create parameter {name}")
            seen.add(name)
            s.space()
            uses = tuple(dict.fromkeys(s.parenthesized(lambda: _use_attr(s), empty=True)))
            if s.maybe(b")"):
                break
            s.space()
    return Create(mailbox, uses)


def _options(s: Scanner, allowed: frozenset[str], what: str) -> list[str]:
    names = s.parenthesized(lambda: s.keyword(what), empty=True)
    for name in names:
        if name not in allowed:
            raise ParseError(f"Unknown {what} {name}")
    return list(dict.fromkeys(names))


def status_items(s: Scanner) -> tuple[str, ...]:
    """``"(" status-att *(SP status-att) ")"``, upper-cased, duplicates dropped."""
    items = s.parenthesized(lambda: s.keyword("status item"))
    for item in items:
        if item not in STATUS_ITEMS:
            raise ParseError(f"Unknown status item {item}")
    return tuple(dict.fromkeys(items))


def parse_list(s: Scanner) -> List:
    s.space()
    extended = False
    selection: list[str] = []
    if s.peek() == b"(":
        extended = True
        selection = _options(s, LIST_SELECT, "selection option")
        if "RECURSIVEMATCH" in selection and not set(selection) - {"RECURSIVEMATCH", "REMOTE"}:
            # RFC 5258 §3.1: RECURSIVEMATCH alone (or only with REMOTE) is a syntax error.
            raise ParseError("RECURSIVEMATCH needs another selection option")
        s.space()
    reference = s.mailbox()
    s.space()
    patterns: list[str]
    if s.peek() == b"(":
        extended = True
        patterns = s.parenthesized(s.list_mailbox)
    else:
        patterns = [s.list_mailbox()]
    returns: list[str] = []
    status: tuple[str, ...] | None = None
    if not s.at_end():
        s.space()
        s.expect(b"RETURN", "RETURN")
        s.space()
        extended = True
        s.expect(b"(", "(")
        if not s.maybe(b")"):
            while True:
                name = s.keyword("return option")
                if name not in LIST_RETURN:
                    raise ParseError(f"Unknown return option {name}")
                if name == "STATUS":
                    if status is not None:
                        raise ParseError("STATUS given twice")
                    s.space()
                    status = status_items(s)
                returns.append(name)
                if s.maybe(b")"):
                    break
                s.space()
    return List(
        reference,
        tuple(dict.fromkeys(patterns)),
        tuple(selection),
        tuple(dict.fromkeys(returns)),
        status,
        extended,
    )


def parse_lsub(s: Scanner) -> Lsub:
    s.space()
    reference = s.mailbox()
    s.space()
    return Lsub(reference, s.list_mailbox())


def parse_status(s: Scanner) -> Status:
    s.space()
    mailbox = s.mailbox()
    s.space()
    return Status(mailbox, status_items(s))


def parse_append(s: Scanner) -> Append:
    s.space()
    mailbox = s.mailbox()
    s.space()
    flags: tuple[str, ...] = ()
    date: dt.datetime | None = None
    if s.peek() == b"(":
        flags = s.flag_list()
        s.space()
    if s.peek() == b'"':
        date = s.date_time()
        s.space()
    if s.maybe_word(b"UTF8"):
        # RFC 6855 §4: append-data =/ "UTF8" SP "(" literal8 ")"
        s.space()
        s.expect(b"(", "(")
        if s.peek(2) != b"~{":
            raise ParseError("Expected literal8")
        message, _ = s.message_literal(binary=True)
        s.expect(b")", ")")
        return Append(mailbox, flags, date, message, binary=True, utf8=True)
    if not s.is_literal():
        raise ParseError("Expected message literal")
    message, binary = s.message_literal(binary=True)
    return Append(mailbox, flags, date, message, binary)
