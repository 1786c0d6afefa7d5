"""SEARCH / UID SEARCH: search keys as a small tree of frozen values.

Sources: RFC 9051 §6.4.4 (every key, ``RETURN (...)`` for ESEARCH, ``CHARSET``; "RETURN ()"
is "RETURN (ALL)"), RFC 3501 §6.4.4 (NEW, OLD, RECENT for IMAP4rev1 clients), RFC 4731
(ESEARCH), RFC 5182 (SAVE and ``$``), RFC 7162 §3.1.5 (MODSEQ), RFC 5032 (OLDER/YOUNGER),
RFC 8514 (SAVEDBEFORE/ON/SINCE, SAVEDATESUPPORTED), RFC 8474 (EMAILID, THREADID).

Several keys are an implicit AND; a parenthesised group is an :class:`And` too. Strings are
decoded with the CHARSET (default UTF-8, which covers US-ASCII); a charset Python does not
know gives a :class:`~mailserver.imap.scanner.ParseError` with code ``BADCHARSET``, which RFC
9051 §6.4.4 answers with NO rather than BAD.
"""

from __future__ import annotations

import codecs
import datetime as dt
from dataclasses import dataclass

from mailserver.imap.scanner import MAX_MODSEQ, ParseError, Scanner
from mailserver.imap.sequence import SequenceSet

__all__ = [
    "RETURN_OPTIONS",
    "All",
    "And",
    "Contains",
    "DateKey",
    "HasFlag",
    "Header",
    "InSet",
    "ModSeqKey",
    "Not",
    "ObjectId",
    "Or",
    "SaveDateSupported",
    "Search",
    "SearchKey",
    "SizeKey",
    "Within",
    "parse_search",
]

#: RFC 9051 §6.4.4 / RFC 4731 §3.1 / RFC 5182 §2: the ESEARCH result options.
RETURN_OPTIONS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})
#: Nesting deeper than this (NOT NOT ..., parentheses) is refused rather than recursed into.
MAX_DEPTH = 64

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "RECENT": ("\\Recent", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
    "OLD": ("\\Recent", False),
}
_TEXT_KEYS = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"})
_DATE_KEYS = {
    f"{prefix}{relation}": (field, relation.lower())
    for prefix, field in (("", "internal"), ("SENT", "sent"), ("SAVED", "saved"))
    for relation in ("BEFORE", "ON", "SINCE")
}
_ENTRY_TYPES = frozenset({"PRIV", "SHARED", "ALL"})
_KEYS_WITH_ARGUMENTS = (
    _TEXT_KEYS
    | set(_DATE_KEYS)
    | {"KEYWORD", "UNKEYWORD", "LARGER", "SMALLER", "OLDER", "YOUNGER", "HEADER", "UID", "NOT",
       "OR", "MODSEQ", "EMAILID", "THREADID"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class All:
    """``ALL``: every message."""


@dataclass(frozen=True, slots=True)
class And:
    """All of ``keys`` (several keys in a row, or a parenthesised group)."""

    keys: tuple[SearchKey, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """``OR key1 key2``."""

    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class Not:
    """``NOT key``."""

    key: SearchKey


@dataclass(frozen=True, slots=True)
class HasFlag:
    """A flag set (``present``) or not: ANSWERED ... UNSEEN, KEYWORD / UNKEYWORD, RECENT / OLD
    (``NEW`` is RECENT and UNSEEN)."""

    flag: str
    present: bool = True


@dataclass(frozen=True, slots=True)
class DateKey:
    """A date comparison: ``field`` is ``internal`` (BEFORE/ON/SINCE), ``sent`` (the Date
    header, SENT*) or ``saved`` (RFC 8514 SAVED*); ``relation`` is before, on or since.
    Dates compare without time and zone (RFC 9051 §6.4.4)."""

    field: str
    relation: str
    date: dt.date


@dataclass(frozen=True, slots=True)
class Within:
    """``OLDER n`` (``older``) or ``YOUNGER n``: internal date relative to now (RFC 5032)."""

    older: bool
    seconds: int


@dataclass(frozen=True, slots=True)
class SizeKey:
    """``LARGER n`` (``larger``) or ``SMALLER n`` (RFC822.SIZE)."""

    larger: bool
    size: int


@dataclass(frozen=True, slots=True)
class Contains:
    """A substring search: ``field`` is BCC, BODY, CC, FROM, SUBJECT, TEXT or TO."""

    field: str
    value: str


@dataclass(frozen=True, slots=True)
class Header:
    """``HEADER name value``; an empty value matches every message with the field."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class InSet:
    """A sequence set of message numbers, or of UIDs (``UID set``)."""

    sequence: SequenceSet
    uid: bool = False


@dataclass(frozen=True, slots=True)
class ModSeqKey:
    """``MODSEQ [entry type] n`` (RFC 7162 §3.1.5): messages with mod-sequence >= ``modseq``.
    ``entry`` is the ``/flags/...`` name and ``entry_type`` priv, shared or all."""

    modseq: int
    entry: str | None = None
    entry_type: str | None = None


@dataclass(frozen=True, slots=True)
class ObjectId:
    """``EMAILID id`` or ``THREADID id`` (RFC 8474 §5)."""

    kind: str
    value: str


@dataclass(frozen=True, slots=True)
class SaveDateSupported:
    """``SAVEDATESUPPORTED`` (RFC 8514 §4.2): every message when the mailbox keeps save
    dates, none otherwise."""


SearchKey = (
    All | And | Or | Not | HasFlag | DateKey | Within | SizeKey | Contains | Header | InSet
    | ModSeqKey | ObjectId | SaveDateSupported
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Search:
    """SEARCH / UID SEARCH.

    ``returns`` is None for a plain SEARCH (an untagged SEARCH response), else the ESEARCH
    result options, upper-cased (``RETURN ()`` gives ``("ALL",)``). ``charset`` is the
    CHARSET given, upper-cased, or None.
    """

    key: SearchKey
    uid: bool = False
    charset: str | None = None
    returns: tuple[str, ...] | None = None


class _Parser:
    def __init__(self, s: Scanner, charset: str) -> None:
        self.s = s
        self.charset = charset

    def string(self) -> str:
        raw = self.s.astring("search string")
        try:
            return raw.decode(self.charset)
        except (UnicodeError, ValueError):
            raise ParseError(f"Search string is not valid {self.charset}") from None

    def keys(self, depth: int) -> SearchKey:
        """``search-key *(SP search-key)`` up to the end or a closing parenthesis."""
        s = self.s
        found = [self.key(depth)]
        while not s.at_end() and s.peek() != b")":
            s.space()
            found.append(self.key(depth))
        return found[0] if len(found) == 1 else And(tuple(found))

    def key(self, depth: int) -> SearchKey:
        s = self.s
        if depth > MAX_DEPTH:
            raise ParseError("Search program nested too deeply")
        if s.maybe(b"("):
            group = self.keys(depth + 1)
            s.expect(b")", ")")
            return group
        first = s.peek()
        if first.isdigit() or first in (b"*", b"$"):
            return InSet(s.sequence_set())
        name = s.keyword("search key")
        if name in _FLAG_KEYS:
            flag, present = _FLAG_KEYS[name]
            return HasFlag(flag, present)
        if name == "ALL":
            return All()
        if name == "NEW":
            return And((HasFlag("\\Recent"), HasFlag("\\Seen", False)))
        if name == "SAVEDATESUPPORTED":
            return SaveDateSupported()
        if name not in _KEYS_WITH_ARGUMENTS:
            raise ParseError(f"Unknown search key {name}")
        s.space()
        if name in _TEXT_KEYS:
            return Contains(name, self.string())
        if name in _DATE_KEYS:
            field, relation = _DATE_KEYS[name]
            return DateKey(field, relation, s.date())
        if name in ("KEYWORD", "UNKEYWORD"):
            flag = s.flag()
            if flag.startswith("\\"):
                raise ParseError(f"{name} takes a keyword, not a system flag")
            return HasFlag(flag, name == "KEYWORD")
        if name in ("LARGER", "SMALLER"):
            return SizeKey(name == "LARGER", s.number(limit=MAX_MODSEQ, what="size"))
        if name in ("OLDER", "YOUNGER"):
            return Within(name == "OLDER", s.number(nonzero=True, what="interval"))
        if name == "HEADER":
            field_name = s.astring_text("header field name")
            s.space()
            return Header(field_name, self.string())
        if name == "UID":
            return InSet(s.sequence_set(), uid=True)
        if name == "NOT":
            return Not(self.key(depth + 1))
        if name == "OR":
            left = self.key(depth + 1)
            s.space()
            return Or(left, self.key(depth + 1))
        if name == "MODSEQ":
            return self.modseq()
        return ObjectId(name, s.atom("object id"))  # EMAILID or THREADID

    def modseq(self) -> ModSeqKey:
        s = self.s
        entry: str | None = None
        entry_type: str | None = None
        if s.peek() == b'"':
            entry = s.text(s.quoted(), "entry name")
            if not entry.lower().startswith("/flags/"):
                raise ParseError("MODSEQ entry must be /flags/<flag>")
            s.space()
            entry_type = s.keyword("entry type")
            if entry_type not in _ENTRY_TYPES:
                raise ParseError("MODSEQ entry type must be priv, shared or all")
            entry_type = entry_type.lower()
            s.space()
        return ModSeqKey(s.modseq(zero=True), entry, entry_type)


def _returns(s: Scanner) -> tuple[str, ...]:
    s.expect(b"(", "(")
    options: list[str] = []
    if not s.maybe(b")"):
        while True:
            option = s.keyword("return option")
            if option not in RETURN_OPTIONS:
                raise ParseError(f"Unknown search return option {option}")
            options.append(option)
            if s.maybe(b")"):
                break
            s.space()
    return tuple(dict.fromkeys(options)) or ("ALL",)


def parse_search(s: Scanner, *, uid: bool) -> Search:
    s.space()
    returns: tuple[str, ...] | None = None
    if s.maybe_word(b"RETURN"):
        s.space()
        returns = _returns(s)
        s.space()
    charset: str | None = None
    codec = "utf-8"
    if s.maybe_word(b"CHARSET"):
        s.space()
        raw = s.quoted() if s.peek() == b'"' else s.atom("charset").encode()
        charset = raw.decode("ascii", "replace").upper()
        try:
            info = codecs.lookup(charset)
        except LookupError:
            info = None
        if info is None or not getattr(info, "_is_text_encoding", True):
            raise ParseError(f"Unsupported charset {charset}", code="BADCHARSET")
        codec = info.name
        s.space()
    key = _Parser(s, codec).keys(0)
    if not s.at_end():
        raise ParseError("Unbalanced parenthesis in search program")
    return Search(key, uid, charset, returns)
