"""Arguments of the message commands: FETCH, STORE, COPY/MOVE and UID EXPUNGE.

Sources: RFC 9051 §6.4.5 (FETCH, macros, ``BODY[section]<partial>``), §6.4.6 (STORE), §6.4.7
(COPY), §6.4.8 (UID), RFC 6851 (MOVE), RFC 3516 (BINARY, BINARY.SIZE), RFC 7162 §3.1.3-4
(CHANGEDSINCE, UNCHANGEDSINCE, MODSEQ) and §3.2.6 (VANISHED), RFC 4315 §2.1 (UID EXPUNGE),
RFC 8474 (EMAILID, THREADID), RFC 8514 (SAVEDATE).
"""

from __future__ import annotations

from dataclasses import dataclass

from mailserver.imap.scanner import MAX_MODSEQ, ParseError, Scanner, dedupe_flags
from mailserver.imap.sequence import SequenceSet

__all__ = [
    "MACROS",
    "SIMPLE_ATTRIBUTES",
    "BinarySize",
    "BodySection",
    "Copy",
    "Fetch",
    "FetchAtt",
    "FetchItem",
    "Section",
    "Store",
    "UidExpunge",
    "parse_copy",
    "parse_fetch",
    "parse_store",
    "parse_uid_expunge",
]

#: Attributes without a section (RFC 9051 §6.4.5 + MODSEQ, EMAILID, THREADID, SAVEDATE).
SIMPLE_ATTRIBUTES = frozenset(
    {"ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE",
     "RFC822.TEXT", "BODY", "BODYSTRUCTURE", "UID", "MODSEQ", "EMAILID", "THREADID",
     "SAVEDATE"}
)  # fmt: skip
#: RFC 9051 §6.4.5: the macros, which may only stand alone.
MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_MSGTEXT = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"})
# RFC 5322 §3.6.8 ftext: printable US-ASCII except ":".
_FIELD_CHARS = frozenset(range(33, 127)) - {ord(":")}


@dataclass(frozen=True, slots=True)
class FetchAtt:
    """A fetch attribute without a section, e.g. ``FLAGS`` or ``RFC822.SIZE`` (upper-cased)."""

    name: str

    def label(self) -> str:
        """The attribute's name in the FETCH response."""
        return self.name


@dataclass(frozen=True, slots=True)
class Section:
    """``section-spec`` (RFC 9051 §6.4.5): a part number and an optional text specifier.

    ``part`` is ``()`` for the whole message, ``(1, 2)`` for part 1.2. ``text`` is None (the
    part's body, or the whole message), ``HEADER``, ``HEADER.FIELDS``, ``HEADER.FIELDS.NOT``,
    ``TEXT`` or ``MIME`` (only after a part number). ``fields`` lists the HEADER.FIELDS names,
    upper-cased.
    """

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        spec = ".".join(str(n) for n in self.part)
        if self.text:
            spec = f"{spec}.{self.text}" if spec else self.text
        if self.fields:
            spec += " (" + " ".join(self.fields) + ")"
        return spec


@dataclass(frozen=True, slots=True)
class BodySection:
    """``BODY[section]<partial>``, ``BODY.PEEK[...]`` or, when ``binary``, ``BINARY[part]`` /
    ``BINARY.PEEK[part]`` (RFC 3516 §4.2). ``partial`` is (origin, length) or None; ``peek``
    means the fetch must not set ``\\Seen``."""

    section: Section
    peek: bool = False
    partial: tuple[int, int] | None = None
    binary: bool = False

    def label(self) -> str:
        """The name in the FETCH response: no ``.PEEK``, and ``<origin>`` only (RFC 9051 §7.5.2)."""
        name = "BINARY" if self.binary else "BODY"
        origin = f"<{self.partial[0]}>" if self.partial else ""
        return f"{name}[{self.section}]{origin}"


@dataclass(frozen=True, slots=True)
class BinarySize:
    """``BINARY.SIZE[part]`` (RFC 3516 §4.2)."""

    part: tuple[int, ...]

    def label(self) -> str:
        return f"BINARY.SIZE[{'.'.join(str(n) for n in self.part)}]"


FetchItem = FetchAtt | BodySection | BinarySize


@dataclass(frozen=True, slots=True)
class Fetch:
    """FETCH / UID FETCH: the set, the items (macros expanded, duplicates dropped) and the
    RFC 7162 modifiers ``CHANGEDSINCE`` (None when absent) and ``VANISHED``."""

    sequence: SequenceSet
    uid: bool
    items: tuple[FetchItem, ...]
    changedsince: int | None = None
    vanished: bool = False


@dataclass(frozen=True, slots=True)
class Store:
    """STORE / UID STORE: ``mode`` is ``"replace"`` (FLAGS), ``"add"`` (+FLAGS) or
    ``"remove"`` (-FLAGS); ``silent`` for ``.SILENT``; ``unchangedsince`` from RFC 7162 §3.1.3."""

    sequence: SequenceSet
    uid: bool
    mode: str
    silent: bool
    flags: tuple[str, ...]
    unchangedsince: int | None = None


@dataclass(frozen=True, slots=True)
class Copy:
    """COPY or MOVE (``move``), by sequence number or by UID (``uid``)."""

    sequence: SequenceSet
    uid: bool
    mailbox: str
    move: bool = False


@dataclass(frozen=True, slots=True)
class UidExpunge:
    """``UID EXPUNGE uid-set`` (RFC 4315 §2.1)."""

    sequence: SequenceSet


def _part(s: Scanner) -> tuple[int, ...]:
    part = [s.number(nonzero=True, what="part number")]
    while s.peek(2)[:1] == b"." and s.peek(2)[1:2].isdigit():
        s.pos += 1
        part.append(s.number(nonzero=True, what="part number"))
    return tuple(part)


def _field_name(s: Scanner) -> str:
    raw = s.astring("header field name")
    if not raw or any(byte not in _FIELD_CHARS for byte in raw):
        raise ParseError("Invalid header field name")
    return raw.decode("ascii").upper()


def _section(s: Scanner, *, binary: bool) -> Section:
    s.expect(b"[", "[")
    if s.maybe(b"]"):
        return Section()
    part: tuple[int, ...] = ()
    if s.peek().isdigit():
        part = _part(s)
        if binary or s.peek() == b"]":
            s.expect(b"]", "]")
            return Section(part)
        s.expect(b".", ". or ]")
    elif binary:
        raise ParseError("BINARY takes a part number only")
    text = s.keyword("section text")
    if text not in _MSGTEXT and not (text == "MIME" and part):
        raise ParseError(f"Invalid section {text}")
    fields: tuple[str, ...] = ()
    if text.startswith("HEADER.FIELDS"):
        s.space()
        fields = tuple(dict.fromkeys(s.parenthesized(lambda: _field_name(s))))
    s.expect(b"]", "]")
    return Section(part, text, fields)


def _partial(s: Scanner) -> tuple[int, int] | None:
    if not s.maybe(b"<"):
        return None
    origin = s.number(limit=MAX_MODSEQ, what="partial origin")
    s.expect(b".", ".")
    length = s.number(nonzero=True, limit=MAX_MODSEQ, what="partial length")
    s.expect(b">", ">")
    return origin, length


def fetch_att(s: Scanner) -> FetchItem:
    """One ``fetch-att``."""
    start = s.pos
    name = s.keyword("fetch attribute")
    # "[" is an ATOM-CHAR (only "]" is a resp-special), so "BODY[1.2" reads as one atom:
    # the attribute name ends at the "[".
    if "[" in name:
        s.pos = start + name.index("[")
        name = name[: name.index("[")]
    if s.peek() != b"[":
        if name in ("BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"):
            raise ParseError(f"{name} needs a section")
        if name not in SIMPLE_ATTRIBUTES:
            raise ParseError(f"Unknown fetch attribute {name}")
        return FetchAtt(name)
    if name == "BINARY.SIZE":
        return BinarySize(_section(s, binary=True).part)
    if name not in ("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK"):
        raise ParseError(f"Unknown fetch attribute {name}")
    binary = name.startswith("BINARY")
    section = _section(s, binary=binary)
    return BodySection(section, name.endswith(".PEEK"), _partial(s), binary)


def parse_fetch(s: Scanner, *, uid: bool) -> Fetch:
    s.space()
    sequence = s.sequence_set()
    s.space()
    items: list[FetchItem]
    if s.peek() == b"(":
        items = s.parenthesized(lambda: fetch_att(s))
    else:
        word = s.peek_word()
        if word in MACROS and s.maybe_word(word.encode()):
            items = [FetchAtt(name) for name in MACROS[word]]
        else:
            items = [fetch_att(s)]
    changedsince: int | None = None
    vanished = False
    if not s.at_end():
        s.space()
        s.expect(b"(", "(")
        while True:
            modifier = s.keyword("fetch modifier")
            if modifier == "CHANGEDSINCE" and changedsince is None:
                s.space()
                changedsince = s.modseq(zero=True)
            elif modifier == "VANISHED" and not vanished:
                vanished = True
            else:
                raise ParseError(f"Unknown or repeated fetch modifier {modifier}")
            if s.maybe(b")"):
                break
            s.space()
    if vanished and (not uid or changedsince is None):
        # RFC 7162 §3.2.6: VANISHED only in UID FETCH, and only with CHANGEDSINCE.
        raise ParseError("VANISHED needs UID FETCH and CHANGEDSINCE")
    return Fetch(sequence, uid, tuple(dict.fromkeys(items)), changedsince, vanished)


def parse_store(s: Scanner, *, uid: bool) -> Store:
    s.space()
    sequence = s.sequence_set()
    s.space()
    unchangedsince: int | None = None
    if s.peek() == b"(":
        s.expect(b"(")
        while True:
            modifier = s.keyword("store modifier")
            if modifier != "UNCHANGEDSINCE" or unchangedsince is not None:
                raise ParseError(f"Unknown or repeated store modifier {modifier}")
            s.space()
            unchangedsince = s.modseq(zero=True)
            if s.maybe(b")"):
                break
            s.space()
        s.space()
    mode = "add" if s.maybe(b"+") else "remove" if s.maybe(b"-") else "replace"
    item = s.keyword("FLAGS")
    if item not in ("FLAGS", "FLAGS.SILENT"):
        raise ParseError("Expected FLAGS, +FLAGS or -FLAGS")
    s.space()
    if s.peek() == b"(":
        flags = s.flag_list()
    else:
        found = [s.flag()]
        while not s.at_end():
            s.space()
            found.append(s.flag())
        flags = dedupe_flags(found)
    return Store(sequence, uid, mode, item.endswith(".SILENT"), flags, unchangedsince)


def parse_copy(s: Scanner, *, uid: bool, move: bool) -> Copy:
    s.space()
    sequence = s.sequence_set()
    s.space()
    return Copy(sequence, uid, s.mailbox(), move)


def parse_uid_expunge(s: Scanner) -> UidExpunge:
    s.space()
    return UidExpunge(s.sequence_set())
