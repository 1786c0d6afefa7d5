"""mbox files (mboxrd, as mutt, Dovecot and Python's ``mailbox.mbox`` read them).

Writing: each message is a ``From <sender> <asctime, UTC>`` line (the internal date), the
message with LF line ends and every ``>*From `` line given one more ``>`` (mboxrd), and a
blank line. Flags travel in the header fields mutt and Dovecot use, added at the end of the
header block: ``Status:`` (``R`` = \\Seen, ``O`` = not new), ``X-Status:`` (``A`` answered,
``F`` flagged, ``T`` draft, ``D`` deleted) and ``X-Keywords:`` (space-separated keywords).

Reading undoes all of it: the ``From`` line gives the internal date (else the ``Date:``
field), the three fields give the flags and are removed, one ``>`` is removed from each
``>+From `` line, and a message with LF line ends gets CRLF (RFC 5322 §2.1), so exporting
and importing again gives back the same bytes. A ``From `` line starts a message at the top
of the file, or when it carries a date as mbox writers put there (mutt's rule).
"""

from __future__ import annotations

import calendar
import email.utils
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from mailserver.types import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN

#: X-Status letters <-> system flags (mutt, Dovecot).
X_STATUS = {"A": ANSWERED, "F": FLAGGED, "T": DRAFT, "D": DELETED}
_X_STATUS_LETTERS = {flag: letter for letter, flag in X_STATUS.items()}
FLAG_FIELDS = (b"status", b"x-status", b"x-keywords")

_ESCAPED_FROM = re.compile(rb"^(>*)From ", re.MULTILINE)
_UNESCAPE_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)
_FROM_DATE = re.compile(
    rb"^From \S* +(?:\w{3} +)?(\w{3}) +(\d{1,2}) +(\d{1,2}):(\d{2})(?::(\d{2}))?"
    rb"(?: +[A-Z]{3,4}| +[-+]\d{4})* +(\d{4})"
)
_FIELD_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")
_RETURN_PATH = re.compile(rb"^Return-Path:[ \t]*<?([^>\r\n]*)>?", re.IGNORECASE | re.MULTILINE)
_MONTHS = {name: n for n, name in enumerate(calendar.month_abbr) if name}


@dataclass(frozen=True)
class Message:
    """One message read from (or to write to) a mailbox file or directory."""

    data: bytes
    flags: frozenset[str]
    internaldate: float | None


# -- writing ---------------------------------------------------------------------------


def from_line(data: bytes, internaldate: float) -> bytes:
    """The ``From `` separator line: the Return-Path sender (else MAILER-DAEMON) and the
    internal date in asctime form, UTC."""
    found = _RETURN_PATH.search(split_header(data)[0])
    sender = found.group(1).strip() if found else b""
    if not sender or b" " in sender:
        sender = b"MAILER-DAEMON"
    stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(internaldate)).encode()
    return b"From " + sender + b" " + stamp + b"\n"


def flag_fields(flags: frozenset[str]) -> bytes:
    """``Status:``/``X-Status:``/``X-Keywords:`` lines (LF) carrying ``flags``."""
    lines = [b"Status: " + (b"RO" if SEEN in flags else b"O") + b"\n"]
    letters = "".join(sorted(_X_STATUS_LETTERS[f] for f in flags if f in _X_STATUS_LETTERS))
    if letters:
        lines.append(b"X-Status: " + letters.encode() + b"\n")
    keywords = sorted(f for f in flags if not f.startswith("\\"))
    if keywords:
        lines.append(b"X-Keywords: " + " ".join(keywords).encode() + b"\n")
    return b"".join(lines)


def split_header(data: bytes) -> tuple[bytes, bytes]:
    """(header block with its line ends, the rest from the blank line on)."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        at = data.find(separator)
        if at >= 0:
            end = at + len(separator) // 2
            return data[:end], data[end:]
    return data, b""


def entry(data: bytes, flags: frozenset[str], internaldate: float) -> bytes:
    """One message as an mbox entry: From line, message (LF, flags fields, mboxrd-escaped),
    blank line."""
    text = data.replace(b"\r\n", b"\n")
    header, rest = split_header(text)
    if not header.endswith(b"\n"):
        header += b"\n"
    body = _ESCAPED_FROM.sub(rb">\1From ", header + flag_fields(flags) + rest)
    if not body.endswith(b"\n"):
        body += b"\n"
    return from_line(data, internaldate) + body + b"\n"


def write(out: BinaryIO, messages: Iterable[Message]) -> int:
    """Write ``messages`` to ``out``; how many."""
    count = 0
    for message in messages:
        out.write(entry(message.data, message.flags, message.internaldate or time.time()))
        count += 1
    return count


# -- reading ---------------------------------------------------------------------------


def is_mbox(path: str) -> bool:
    """True when the file at ``path`` starts like an mbox (a ``From `` line)."""
    try:
        with open(path, "rb") as f:
            return f.read(5) == b"From "
    except OSError:
        return False


def entries(source: BinaryIO) -> Iterator[tuple[bytes, bytes]]:
    """(From line, raw entry) of each message in an mbox file, read line by line. A message
    starts at the first line, and at each ``From `` line carrying a date, as mutt's
    ``is_from`` decides (so an unquoted ``From me`` line in a body does not split it)."""
    separator: bytes | None = None
    lines: list[bytes] = []
    for line in source:
        if line.startswith(b"From ") and (separator is None or _FROM_DATE.match(line)):
            if separator is not None:
                yield separator, b"".join(lines)
            separator, lines = line, []
        elif separator is not None:
            lines.append(line)
    if separator is not None:
        yield separator, b"".join(lines)


def count(path: str) -> int:
    """How many messages the mbox file at ``path`` holds."""
    with open(path, "rb") as f:
        return sum(1 for _ in entries(f))


def read(path: str) -> Iterator[Message]:
    """Every message of the mbox file at ``path``, decoded (see the module docstring)."""
    with open(path, "rb") as f:
        for separator, raw in entries(f):
            yield decode(separator, raw)


def decode(separator: bytes, raw: bytes) -> Message:
    """One entry: unescaped, flag fields taken out, CRLF line ends, its internal date."""
    if raw.endswith(b"\r\n\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n\n"):
        raw = raw[:-1]  # the blank line before the next From line belongs to the mbox
    raw = _UNESCAPE_FROM.sub(rb"\1", raw)
    header, rest = split_header(raw)
    kept, flags = _take_flag_fields(header)
    data = kept + rest
    if b"\r\n" not in data:
        data = data.replace(b"\n", b"\r\n")
    date = _from_date(separator)
    return Message(data, flags, date if date is not None else _header_date(kept))


def _take_flag_fields(header: bytes) -> tuple[bytes, frozenset[str]]:
    """The header without Status/X-Status/X-Keywords fields, and the flags they carried."""
    fields: list[tuple[bytes, list[bytes]]] = []  # (lower-case name, lines)
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1][1].append(line)  # a folded field's continuation line
            continue
        match = _FIELD_NAME.match(line)
        fields.append((match.group(1).lower() if match else b"", [line]))
    kept: list[bytes] = []
    flags: set[str] = set()
    for name, lines in fields:
        if name not in FLAG_FIELDS:
            kept.extend(lines)
            continue
        text = b" ".join(line.strip() for line in lines).decode("ascii", "replace")
        value = text.partition(":")[2].strip()
        if name == b"status":
            if "R" in value:
                flags.add(SEEN)
        elif name == b"x-status":
            flags.update(X_STATUS[c] for c in value if c in X_STATUS)
        else:
            flags.update(k for k in re.split(r"[\s,]+", value) if k and "\\" not in k)
    return b"".join(kept), frozenset(flags)


def _from_date(separator: bytes) -> float | None:
    found = _FROM_DATE.match(separator)
    if found is None:
        return None
    month, day, hour, minute, second, year = found.groups()
    try:
        return float(
            calendar.timegm(
                (int(year), _MONTHS[month.decode().title()], int(day),
                 int(hour), int(minute), int(second or 0), 0, 0, 0)
            )
        )
    except (KeyError, ValueError, OverflowError):
        return None


def _header_date(header: bytes) -> float | None:
    for line in header.splitlines():
        if line[:5].lower() == b"date:":
            try:
                return email.utils.parsedate_to_datetime(line[5:].decode().strip()).timestamp()
            except (TypeError, ValueError, UnicodeDecodeError):
                return None
    return None
