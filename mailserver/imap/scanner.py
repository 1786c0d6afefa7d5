"""The lexical level of IMAP commands: a cursor over one complete command's bytes.

:class:`Scanner` reads the basic values of RFC 9051 §9 (formal syntax, compatible with RFC 3501
§9): atoms, numbers, quoted strings, literals and literal8, ``astring``, ``nstring``,
mailbox names, flags, dates, sequence sets and parenthesised lists. The command's bytes are
the reader's assembled command: its lines joined with CRLF and every literal's data in place
after its ``{n}`` CRLF, so a literal is read like any other token. Every error is a
:class:`ParseError` whose reason is safe to show the client. A leaf module.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, TypeVar

from mailserver.imap.sequence import SequenceSet
from mailserver.message import utf7

__all__ = [
    "MAX_MODSEQ",
    "MAX_TAG",
    "ParseError",
    "SYSTEM_FLAGS",
    "Scanner",
    "SpooledLiteral",
    "decode_mailbox",
    "dedupe_flags",
    "is_atom",
    "is_astring",
]

T = TypeVar("T")

#: RFC 7162 §7 / RFC 9051 §9: mod-sequence-value is at most 2^63 - 1 (number64).
MAX_MODSEQ = 2**63 - 1
MAX_NUMBER = 4_294_967_295
#: Longer tags are refused (a bound of ours; clients use a few characters).
MAX_TAG = 64

# RFC 9051 §9: atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials /
# resp-specials; CHAR is %x01-7F and CTL %x00-1F / %x7F.
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | frozenset(range(0x20)) | {0x7F}
_ATOM_CHARS = frozenset(range(0x01, 0x80)) - _ATOM_SPECIALS
_ASTRING_CHARS = _ATOM_CHARS | {ord("]")}
_TAG_CHARS = _ASTRING_CHARS - {ord("+")}
_LIST_CHARS = _ATOM_CHARS | frozenset(b"%*]")
_SEQUENCE_CHARS = frozenset(b"0123456789:,*$")
_DIGITS = frozenset(b"0123456789")
_MONTHS = {
    name: index
    for index, name in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1
    )
}
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(
    rb'" ?([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4}) '
    rb'([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)
_LITERAL = re.compile(rb"(~?)\{([0-9]{1,19})(\+?)\}\r\n")

#: RFC 9051 §2.3.2 system flags, by their upper-cased spelling (flags are case-insensitive).
SYSTEM_FLAGS = {
    flag.upper(): flag
    for flag in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}


class ParseError(ValueError):
    """A command that does not match the grammar.

    ``reason`` is short text for the BAD response; ``code`` is an optional response code the
    server should send with it (e.g. ``"BADCHARSET"``, which RFC 9051 §6.4.4 answers with NO,
    or ``"CLIENTBUG"``).
    """

    def __init__(self, reason: str, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def is_atom(data: bytes) -> bool:
    """True when ``data`` is a non-empty ``atom`` (1*ATOM-CHAR)."""
    return bool(data) and all(byte in _ATOM_CHARS for byte in data)


def is_astring(data: bytes) -> bool:
    """True when ``data`` can be sent as a bare ``astring`` (1*ASTRING-CHAR) and is not NIL."""
    return bool(data) and all(byte in _ASTRING_CHARS for byte in data) and data.upper() != b"NIL"


def decode_mailbox(raw: bytes, *, utf8: bool) -> str:
    """A mailbox name from the wire: UTF-8 under UTF8=ACCEPT / IMAP4rev2 (RFC 6855 §3, RFC
    9051 §5.1), else modified UTF-7 (RFC 3501 §5.1.3); ``INBOX`` in any case is ``INBOX``
    (RFC 9051 §5.1)."""
    try:
        name = raw.decode("utf-8") if utf8 else utf7.decode(raw.decode("ascii"))
    except UnicodeDecodeError:
        what = "UTF-8" if utf8 else "modified UTF-7"
        raise ParseError(f"Mailbox name is not {what}") from None
    except ValueError as error:
        raise ParseError(f"Mailbox name is not modified UTF-7: {error}") from None
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        raise ParseError("Control character in mailbox name")
    return "INBOX" if name.upper() == "INBOX" else name


@dataclass(frozen=True, eq=False)
class SpooledLiteral:
    """A literal the reader wrote to a temporary file instead of keeping it in memory
    (a large APPEND message, issue 12): ``source`` holds its ``size`` octets from offset
    0; ``has_nul`` says whether any of them is NUL (refused outside literal8). Whoever ends
    up with it closes ``source``."""

    source: BinaryIO = field(repr=False)
    size: int
    has_nul: bool = False

    def close(self) -> None:
        self.source.close()


class Scanner:
    """A cursor over one command; ``utf8`` allows UTF-8 in quoted strings and makes mailbox
    names UTF-8 (after ``ENABLE UTF8=ACCEPT`` or ``ENABLE IMAP4rev2``).

    ``spooled`` maps the offset where a literal's data would start in ``data`` to the
    :class:`SpooledLiteral` holding it; that literal's octets are not in ``data``."""

    def __init__(
        self,
        data: bytes,
        *,
        utf8: bool = False,
        spooled: Mapping[int, SpooledLiteral] | None = None,
    ) -> None:
        self.data = data
        self.pos = 0
        self.utf8 = utf8
        self.spooled = spooled or {}

    # -- position ---------------------------------------------------------------------------

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def peek(self, count: int = 1) -> bytes:
        return self.data[self.pos : self.pos + count]

    def peek_word(self) -> str:
        """The upper-cased run of letters, digits, ``.`` and ``-`` at the cursor (not consumed)."""
        end = self.pos
        while end < len(self.data) and (chr(self.data[end]).isalnum() or self.data[end] in b".-"):
            end += 1
        return self.data[self.pos : end].decode("ascii", "replace").upper()

    def error(self, reason: str, code: str | None = None) -> ParseError:
        return ParseError(reason, code)

    def expect(self, token: bytes, what: str | None = None) -> None:
        """Consume ``token`` (compared case-insensitively) or fail."""
        if self.data[self.pos : self.pos + len(token)].upper() != token.upper():
            raise self.error(f"Expected {what or token.decode()!s}")
        self.pos += len(token)

    def maybe(self, token: bytes) -> bool:
        """Consume ``token`` (case-insensitively) when it is next; report whether it was."""
        if self.data[self.pos : self.pos + len(token)].upper() == token.upper():
            self.pos += len(token)
            return True
        return False

    def maybe_word(self, word: bytes) -> bool:
        """Consume the keyword ``word`` when it is next and not a prefix of a longer atom."""
        end = self.pos + len(word)
        if self.data[self.pos : end].upper() != word.upper():
            return False
        if end < len(self.data) and self.data[end] in _ATOM_CHARS:
            return False
        self.pos = end
        return True

    def space(self) -> None:
        """Exactly one SP (RFC 9051 §9 separates every argument with one SP)."""
        if self.peek() != b" ":
            raise self.error("Expected a space" if not self.at_end() else "Missing argument")
        self.pos += 1

    def end(self) -> None:
        """The command must be complete here."""
        if not self.at_end():
            raise self.error("Unexpected extra arguments")

    # -- atoms and numbers ------------------------------------------------------------------

    def _run(self, chars: frozenset[int]) -> bytes:
        start = self.pos
        data = self.data
        while self.pos < len(data) and data[self.pos] in chars:
            self.pos += 1
        return data[start : self.pos]

    def tag(self) -> str:
        """``tag``: 1*<any ASTRING-CHAR except "+"> (at most :data:`MAX_TAG` octets)."""
        raw = self._run(_TAG_CHARS)
        if not raw or len(raw) > MAX_TAG or self.peek() not in (b"", b" "):
            raise self.error("Invalid tag")
        return raw.decode("ascii")

    def atom(self, what: str = "atom") -> str:
        """``atom`` as text (case kept)."""
        raw = self._run(_ATOM_CHARS)
        if not raw:
            raise self.error(f"Expected {what}")
        return raw.decode("ascii")

    def keyword(self, what: str = "keyword") -> str:
        """An atom upper-cased (command and item names are case-insensitive)."""
        return self.atom(what).upper()

    def number(
        self, *, nonzero: bool = False, limit: int = MAX_NUMBER, what: str = "number"
    ) -> int:
        """``number`` / ``nz-number`` (32-bit) or, with ``limit``, ``number64``."""
        raw = self._run(_DIGITS)
        if not raw or len(raw) > 20:
            raise self.error(f"Expected {what}")
        value = int(raw)
        if value > limit or (nonzero and value == 0):
            raise self.error(f"Invalid {what}")
        return value

    def modseq(self, *, zero: bool = False) -> int:
        """``mod-sequence-value`` (1 .. 2^63-1) or, with ``zero``, ``mod-sequence-valzer``."""
        return self.number(nonzero=not zero, limit=MAX_MODSEQ, what="mod-sequence value")

    def sequence_set(self, *, saved: bool = True) -> SequenceSet:
        """``sequence-set``, or ``$`` (RFC 5182) when ``saved`` allows it."""
        raw = self._run(_SEQUENCE_CHARS).decode("ascii")
        try:
            result = SequenceSet.parse(raw)
        except ValueError:
            raise self.error(
                f"Invalid sequence set {raw!r}" if raw else "Expected sequence set"
            ) from None
        if result.saved and not saved:
            raise self.error("$ is not allowed here")
        return result

    # -- strings ----------------------------------------------------------------------------

    def quoted(self) -> bytes:
        """``quoted``: the content with the ``\\"`` and ``\\\\`` escapes removed."""
        data = self.data
        if self.peek() != b'"':
            raise self.error("Expected quoted string")
        pos = self.pos + 1
        out = bytearray()
        while True:
            if pos >= len(data):
                raise self.error("Unterminated quoted string")
            byte = data[pos]
            if byte == 0x22:
                break
            if byte == 0x5C:
                pos += 1
                if pos >= len(data) or data[pos] not in (0x22, 0x5C):
                    raise self.error("Invalid escape in quoted string")
                byte = data[pos]
            elif byte in (0x00, 0x0A, 0x0D):
                raise self.error("Invalid character in quoted string")
            elif byte >= 0x80 and not self.utf8:
                raise self.error("8-bit character in quoted string")
            out.append(byte)
            pos += 1
        self.pos = pos + 1
        value = bytes(out)
        if self.utf8 and not value.isascii():
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                raise self.error("Invalid UTF-8 in quoted string") from None
        return value

    def is_literal(self) -> bool:
        return self.peek() == b"{" or self.peek(2) == b"~{"

    def literal(self, *, binary: bool = False) -> tuple[bytes, bool]:
        """``literal`` (or ``literal8`` when ``binary``): (data, was literal8).

        A literal's data is CHAR8 (no NUL, RFC 9051 §4.3); only literal8 (RFC 3516 §4.1) may
        hold NUL. A literal the reader spooled to disk is refused here: only a message
        (:meth:`message_literal`) may be that large.
        """
        value, is8 = self.message_literal(binary=binary)
        if isinstance(value, SpooledLiteral):
            raise self.error("Literal too long for this argument")
        return value, is8

    def message_literal(self, *, binary: bool = False) -> tuple[bytes | SpooledLiteral, bool]:
        """:meth:`literal`, where the value may be a :class:`SpooledLiteral` (APPEND)."""
        match = _LITERAL.match(self.data, self.pos)
        if match is None:
            raise self.error("Expected literal")
        is8 = bool(match.group(1))
        if is8 and not binary:
            raise self.error("literal8 is only allowed in APPEND")
        size = int(match.group(2))
        start = match.end()
        spooled = self.spooled.get(start)
        if spooled is not None:
            if not is8 and spooled.has_nul:
                raise self.error("NUL in literal (use literal8)")
            self.pos = start
            return spooled, is8
        if start + size > len(self.data):
            raise self.error("Literal is shorter than its announced size")
        value = self.data[start : start + size]
        if not is8 and b"\x00" in value:
            raise self.error("NUL in literal (use literal8)")
        self.pos = start + size
        return value, is8

    def string(self) -> bytes:
        """``string``: quoted or literal."""
        if self.peek() == b'"':
            return self.quoted()
        if self.peek() == b"{":
            return self.literal()[0]
        raise self.error("Expected string")

    def astring(self, what: str = "astring") -> bytes:
        """``astring``: 1*ASTRING-CHAR or a string."""
        if self.peek() in (b'"', b"{"):
            return self.string()
        raw = self._run(_ASTRING_CHARS)
        if not raw:
            raise self.error(f"Expected {what}")
        return raw

    def nstring(self) -> bytes | None:
        """``nstring``: NIL or a string."""
        if self.maybe_word(b"NIL"):
            return None
        return self.string()

    def text(self, raw: bytes, what: str = "string") -> str:
        """Decode a string value as UTF-8 (RFC 9051 §4.3) or fail."""
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(f"Invalid UTF-8 in {what}") from None

    def astring_text(self, what: str = "astring") -> str:
        return self.text(self.astring(what), what)

    def mailbox(self) -> str:
        """``mailbox``: an astring naming a mailbox, decoded (see :func:`decode_mailbox`)."""
        return decode_mailbox(self.astring("mailbox name"), utf8=self.utf8)

    def list_mailbox(self) -> str:
        """``list-mailbox``: 1*list-char (wildcards ``%`` and ``*`` allowed) or a string."""
        if self.peek() in (b'"', b"{"):
            raw = self.string()
        else:
            raw = self._run(_LIST_CHARS)
            if not raw:
                raise self.error("Expected mailbox pattern")
        if raw.upper() == b"INBOX":
            return "INBOX"
        return decode_mailbox(raw, utf8=self.utf8)

    # -- flags, lists, dates ----------------------------------------------------------------

    def flag(self) -> str:
        """``flag``: a system flag (case normalised), ``\\`` atom, or a keyword atom."""
        if self.maybe(b"\\"):
            name = "\\" + self.atom("flag name")
            return SYSTEM_FLAGS.get(name.upper(), name)
        return self.atom("flag")

    def flag_list(self) -> tuple[str, ...]:
        """``flag-list``: ``(`` [flag *(SP flag)] ``)``; duplicates dropped, order kept."""
        return dedupe_flags(self.parenthesized(self.flag, empty=True))

    def parenthesized(self, item: Callable[[], T], *, empty: bool = False) -> list[T]:
        """``"(" item *(SP item) ")"`` (``()`` only when ``empty``)."""
        self.expect(b"(", "(")
        items: list[T] = []
        if self.maybe(b")"):
            if not empty:
                raise self.error("Empty list")
            return items
        while True:
            items.append(item())
            if self.maybe(b")"):
                return items
            if self.at_end():
                raise self.error("Expected )")
            self.space()

    def date(self) -> dt.date:
        """``date``: ``d-Mon-yyyy``, optionally in double quotes."""
        quoted = self.maybe(b'"')
        match = _DATE.match(self.data, self.pos)
        if match is None:
            raise self.error("Expected date (d-Mon-yyyy)")
        day, month, year = match.groups()
        self.pos = match.end()
        if quoted:
            self.expect(b'"', "closing quote")
        try:
            return dt.date(int(year), _month(month), int(day))
        except ValueError:
            raise self.error("Invalid date") from None

    def date_time(self) -> dt.datetime:
        """``date-time``: ``"dd-Mon-yyyy hh:mm:ss +zzzz"`` as an aware datetime."""
        match = _DATE_TIME.match(self.data, self.pos)
        if match is None:
            raise self.error('Expected date-time ("dd-Mon-yyyy hh:mm:ss +zzzz")')
        day, month, year, hour, minute, second, sign, zh, zm = match.groups()
        self.pos = match.end()
        try:
            if int(zm) >= 60:
                raise ValueError("zone minutes")
            offset = dt.timedelta(hours=int(zh), minutes=int(zm))
            zone = dt.timezone(-offset if sign == b"-" else offset)
            date = dt.date(int(year), _month(month), int(day))
            time = dt.time(int(hour), int(minute), int(second), tzinfo=zone)
            return dt.datetime.combine(date, time)
        except ValueError:
            raise self.error("Invalid date-time") from None


def _month(raw: bytes) -> int:
    month = _MONTHS.get(raw.decode("ascii").upper())
    if month is None:
        raise ValueError("month")
    return month


def dedupe_flags(items: list[str]) -> tuple[str, ...]:
    """Flags without repeats (flag names are case-insensitive), first spelling kept."""
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        key = item.upper()
        if key not in seen:
            seen.add(key)
            out.append(item)
    return tuple(out)
