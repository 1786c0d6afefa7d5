"""IMAP response serialisation: strings, lists, response codes and status lines, as bytes.

Every function returns wire bytes; a complete response line ends in CRLF. Strings are sent
as an atom when the grammar allows one, else quoted, else as a literal (RFC 9051 §4.3: a quoted
string cannot hold CR, LF or NUL; 8-bit text is quoted only under UTF8=ACCEPT / IMAP4rev2,
RFC 6855 §3, otherwise it goes as a literal). ENVELOPE and BODYSTRUCTURE are re-exported from
the leaf :mod:`mailserver.message.imap_render`, which the store also uses to keep them rendered
at delivery: one serialisation for both.
Sources: RFC 9051 §7 and §9.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import time
from collections.abc import Iterable, Mapping

from mailserver.imap.scanner import is_astring
from mailserver.imap.sequence import SequenceSet, compact_ranges
from mailserver.message import utf7
from mailserver.message.imap_render import body_structure, encoded_words, envelope

__all__ = [
    "CRLF",
    "astring",
    "body_structure",
    "bye",
    "code",
    "continuation",
    "date_time",
    "encoded_words",
    "envelope",
    "esearch",
    "fetch",
    "flag_list",
    "literal",
    "mailbox",
    "nstring",
    "plist",
    "quotable",
    "quoted",
    "string",
    "tagged",
    "uid_set",
    "untagged",
    "untagged_status",
]

CRLF = b"\r\n"
_STATUSES = frozenset({"OK", "NO", "BAD", "PREAUTH", "BYE"})
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS_B = tuple(month.encode("ascii") for month in _MONTHS)

Text = str | bytes


def _bytes(value: Text) -> bytes:
    if type(value) is bytes:  # the common case first: serialised parts
        return value
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def quotable(value: Text, *, utf8: bool = False) -> bool:
    """True when ``value`` may be sent as a quoted string: no CR, LF or NUL (RFC 9051 §4.3),
    and 8-bit octets only when ``utf8`` and they are valid UTF-8."""
    data = _bytes(value)
    if b"\r" in data or b"\n" in data or b"\x00" in data:
        return False
    if data.isascii():
        return True
    if not utf8:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def quoted(value: Text, *, utf8: bool = False) -> bytes:
    """``value`` as a quoted string, ``"`` and ``\\`` escaped; ValueError when not
    :func:`quotable`."""
    data = _bytes(value)
    if not quotable(data, utf8=utf8):
        raise ValueError("value cannot be sent as a quoted string")
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(value: Text, *, binary: bool = False) -> bytes:
    """``{n}`` CRLF + the octets; ``~{n}`` (literal8, RFC 3516 §4.3) when ``binary``."""
    data = _bytes(value)
    return b"%s{%d}\r\n%s" % (b"~" if binary else b"", len(data), data)


def string(value: Text, *, utf8: bool = False) -> bytes:
    """``string``: quoted when possible, else a literal (literal8 when it holds NUL)."""
    if type(value) is str and value.isascii():
        return _short_ascii(value) if len(value) <= 64 else _ascii_string(value)
    data = _bytes(value)
    if quotable(data, utf8=utf8):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return literal(data, binary=b"\x00" in data)


def _ascii_string(value: str) -> bytes:
    """:func:`string` of ASCII text."""
    if "\r" in value or "\n" in value or "\x00" in value:
        return literal(value.encode("ascii"), binary="\x00" in value)
    return ('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"').encode("ascii")


#: :func:`_ascii_string` of short values, memoised: BODYSTRUCTURE and ENVELOPE repeat the
#: same few (types, parameter names, charsets, encodings, addresses) across messages.
_short_ascii = functools.lru_cache(maxsize=4096)(_ascii_string)


def astring(value: Text, *, utf8: bool = False) -> bytes:
    """``astring``: the bare atom when it is one (and not ``NIL``), else :func:`string`."""
    data = _bytes(value)
    return data if is_astring(data) else string(data, utf8=utf8)


def nstring(value: Text | None, *, utf8: bool = False) -> bytes:
    """``nstring``: ``NIL`` for None, else :func:`string`."""
    return b"NIL" if value is None else string(value, utf8=utf8)


def plist(items: Iterable[Text]) -> bytes:
    """A parenthesised list of already serialised items, separated by SP."""
    if type(items) is list:
        try:
            return b"(" + b" ".join(items) + b")"  # all bytes: the common case
        except TypeError:
            pass
    return b"(" + b" ".join(_bytes(item) for item in items) + b")"


def flag_list(flags: Iterable[str]) -> bytes:
    """``flag-list``: ``(\\Seen $Forwarded)``; flags are atoms (or ``\\`` + atom)."""
    return plist(flags)


def mailbox(name: str, *, utf8: bool = False) -> bytes:
    """A mailbox name: UTF-8 under UTF8=ACCEPT / IMAP4rev2, else modified UTF-7 (RFC 3501
    §5.1.3), as an astring."""
    encoded = name if utf8 else utf7.encode(name)
    return astring(encoded, utf8=utf8)


def date_time(value: dt.datetime | float) -> bytes:
    """``date-time``: ``"17-Jul-1996 02:44:25 -0700"`` (RFC 9051 §9; the day padded with a
    space). A float is a POSIX timestamp, shown in UTC; a naive datetime is taken as UTC."""
    if not isinstance(value, dt.datetime):
        t = time.gmtime(value)  # FETCH INTERNALDATE: the hot path
        return b'"%2d-%s-%04d %02d:%02d:%02d +0000"' % (
            t.tm_mday,
            _MONTHS_B[t.tm_mon - 1],
            t.tm_year,
            t.tm_hour,
            t.tm_min,
            t.tm_sec,
        )
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    offset = value.utcoffset() or dt.timedelta()
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    text = (
        f'"{value.day:2d}-{_MONTHS[value.month - 1]}-{value.year:04d} '
        f'{value.hour:02d}:{value.minute:02d}:{value.second:02d} {sign}{hours:02d}{minutes:02d}"'
    )
    return text.encode("ascii")


def uid_set(numbers: Iterable[int] | SequenceSet, *, sort: bool = True) -> bytes:
    """A compact ``uid-set`` such as ``304,319:320`` (RFC 4315 §3) for COPYUID, APPENDUID,
    VANISHED and ESEARCH.

    With ``sort`` False the order is kept (COPYUID's source and destination sets correspond
    element by element) and only ascending runs become ranges. ValueError for an empty set.
    """
    if isinstance(numbers, SequenceSet):
        if not numbers:
            raise ValueError("a uid-set cannot be empty")
        return str(numbers.normalized()).encode("ascii")
    ranges = compact_ranges(numbers, sort=sort)
    if not ranges:
        raise ValueError("a uid-set cannot be empty")
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in ranges).encode("ascii")


def _code_arg(arg: object) -> bytes:
    if isinstance(arg, bool):
        raise TypeError("booleans have no IMAP form")
    if isinstance(arg, int):
        return b"%d" % arg
    if isinstance(arg, SequenceSet):
        return str(arg).encode("ascii")
    if isinstance(arg, bytes | str):
        return _bytes(arg)
    if isinstance(arg, list | tuple):
        return plist(_code_arg(item) for item in arg)
    raise TypeError(f"cannot serialise {type(arg).__name__} in a response code")


def code(name: str, *args: object) -> bytes:
    """A response code's content, without brackets (RFC 9051 §7.1): ``code("UIDVALIDITY", 3)``
    is ``UIDVALIDITY 3``; ``code("COPYUID", 38505, b"304,319:320", b"3956:3958")``; a list or
    tuple argument is parenthesised (``code("BADCHARSET", ["UTF-8"])``). Ints are numbers,
    str and bytes are sent as given (already serialised)."""
    return b" ".join([name.encode("ascii"), *(_code_arg(arg) for arg in args)])


def _text(text: Text) -> bytes:
    """Human-readable response text: one line (CR, LF and NUL become spaces)."""
    data = _bytes(text)
    return data.replace(b"\r", b" ").replace(b"\n", b" ").replace(b"\x00", b" ")


def _resp_text(text: Text, response_code: bytes | None) -> bytes:
    body = _text(text) or b"."  # RFC 9051 §9: text is 1*TEXT-CHAR
    if response_code is None:
        return body
    return b"[" + response_code + b"] " + body


def tagged(tag: str, status: str, text: Text, *, response_code: bytes | None = None) -> bytes:
    """A tagged status line: ``A1 OK [READ-WRITE] SELECT completed`` CRLF."""
    if status not in ("OK", "NO", "BAD"):
        raise ValueError(f"not a tagged status: {status!r}")
    return (
        tag.encode("ascii") + b" " + status.encode() + b" " + _resp_text(text, response_code) + CRLF
    )


def untagged_status(status: str, text: Text, *, response_code: bytes | None = None) -> bytes:
    """An untagged status line: ``* OK [UIDVALIDITY 3857529045] UIDs valid`` CRLF."""
    if status not in _STATUSES:
        raise ValueError(f"not a status: {status!r}")
    return b"* " + status.encode() + b" " + _resp_text(text, response_code) + CRLF


def bye(text: Text, *, response_code: bytes | None = None) -> bytes:
    """``* BYE text`` CRLF (RFC 9051 §7.1.5)."""
    return untagged_status("BYE", text, response_code=response_code)


def untagged(*parts: Text) -> bytes:
    """An untagged data line from serialised parts: ``untagged(b"5", b"EXISTS")``."""
    return b"* " + b" ".join(_bytes(part) for part in parts) + CRLF


def continuation(text: Text = "Ready", *, challenge: bytes | None = None) -> bytes:
    """A continuation request: ``+ Ready`` CRLF, or ``+ <base64>`` CRLF for a SASL
    ``challenge`` (RFC 9051 §7.6; an empty challenge is ``+ `` CRLF)."""
    if challenge is not None:
        return b"+ " + base64.b64encode(challenge) + CRLF
    return b"+ " + _text(text) + CRLF


def fetch(number: int, items: Iterable[tuple[Text, bytes]]) -> bytes:
    """``* n FETCH (name value ...)`` CRLF from (item label, serialised value) pairs."""
    body = b" ".join(
        (name if type(name) is bytes else _bytes(name)) + b" " + value for name, value in items
    )
    return b"* %d FETCH (%s)\r\n" % (number, body)


def esearch(
    tag: str | None, uid: bool, results: Mapping[str, int | SequenceSet | Iterable[int]]
) -> bytes:
    """``* ESEARCH (TAG "A1") UID MIN 2 COUNT 3 ALL 2:4`` CRLF (RFC 4731 §3.1, RFC 9051
    §7.3.4); an ALL with no messages is left out, as the RFC requires."""
    parts: list[bytes] = [b"ESEARCH"]
    if tag is not None:
        parts.append(b"(TAG " + quoted(tag) + b")")
    if uid:
        parts.append(b"UID")
    for name, value in results.items():
        if isinstance(value, int):
            parts.append(name.encode("ascii") + b" %d" % value)
            continue
        try:
            parts.append(name.encode("ascii") + b" " + uid_set(value))
        except ValueError:
            continue  # an empty ALL is omitted
    return untagged(*parts)


# -- ENVELOPE and BODYSTRUCTURE ---------------------------------------------------------------

