"""The header block of a raw message: splitting, unfolding and RFC 2047 decoding.

These functions work on the bytes as stored, tolerate LF-only line ends and never raise on
malformed input: a line that is not a header field is skipped, an encoded-word that cannot be
decoded is kept as written.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email.utils
import re
import time
from collections.abc import Iterable

__all__ = [
    "decode_charset",
    "decode_encoded_words",
    "decode_header_value",
    "decode_text",
    "first_fields",
    "get_header",
    "get_headers",
    "header_length",
    "parse_headers",
    "split_message",
    "strip_mbox_from",
    "unfold",
]

# RFC 5322 §2.2 field-name = 1*ftext (printable US-ASCII except ":").
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")
# RFC 5322 §2.2.3: unfolding removes each CRLF that is immediately followed by WSP.
_FOLD = re.compile(rb"\r?\n(?=[ \t])")
# RFC 2047 §2 encoded-word, with the RFC 2231 §5 language suffix on the charset.
_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([QqBb])\?([^?\s]*)\?=")
_WHITESPACE = re.compile(r"[ \t\r\n]*")
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")


def strip_mbox_from(data: bytes) -> bytes:
    """Remove a leading mbox envelope line (``From sender date``), which is not a header
    (RFC 4155), and return the message bytes that follow it; other data is returned as is."""
    if not data.startswith(b"From "):
        return data
    end = data.find(b"\n")
    return b"" if end < 0 else data[end + 1 :]


def header_length(data: bytes, start: int = 0, end: int | None = None) -> int:
    """Return the length of the header block of ``data[start:end]``, blank line included.

    The block ends after the first empty line (CRLF or LF, RFC 5322 §2.1); when there is no
    empty line the whole range is header.
    """
    if end is None:
        end = len(data)
    if start >= end:
        return 0
    if data.startswith(b"\n", start, end):
        return 1
    if data.startswith(b"\r\n", start, end):
        return 2
    # The CRLF form first (all mail that came over SMTP); a LF-only blank line can only win
    # before it, so that search stops there instead of scanning the whole body.
    lf_crlf = data.find(b"\n\r\n", start, end)
    lf_lf = data.find(b"\n\n", start, end if lf_crlf < 0 else lf_crlf + 2)
    if lf_lf >= 0:
        return lf_lf + 2 - start
    return (end if lf_crlf < 0 else lf_crlf + 3) - start


def split_message(data: bytes) -> tuple[bytes, bytes]:
    """Split raw message bytes into (header block including the blank line, body).

    CRLF and LF-only line ends are accepted; a message without a blank line is all header
    and has an empty body. A leading mbox ``From`` line is not handled here; see
    :func:`strip_mbox_from`.
    """
    length = header_length(data)
    return data[:length], data[length:]


def parse_headers(block: bytes) -> list[tuple[str, bytes]]:
    """Parse a header block into (name, value) pairs in order.

    The value is unfolded (RFC 5322 §2.2.3) and stripped of surrounding whitespace but
    otherwise raw. Parsing stops at the first empty line. Lines that are not header fields
    (no colon, or an invalid name) are skipped together with their continuation lines;
    whitespace before the colon is tolerated (RFC 5322 §4.5 obsolete syntax).
    """
    fields: list[tuple[str, bytes]] = []
    name: str | None = None
    value: list[bytes] = []
    for line in block.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line[:1] in (b" ", b"\t"):
            if name is not None:
                value.append(line)
            continue
        if name is not None:
            fields.append((name, b"".join(value).strip(b" \t\r\n")))
            name = None
        if not line:
            break
        colon = line.find(b":")
        if colon < 0:
            continue
        raw_name = line[:colon].rstrip(b" \t")
        if not _FIELD_NAME.fullmatch(raw_name):
            continue
        name = raw_name.decode("ascii")
        value = [line[colon + 1 :]]
    if name is not None:
        fields.append((name, b"".join(value).strip(b" \t\r\n")))
    return fields


def get_header(headers: Iterable[tuple[str, bytes]], name: str) -> bytes | None:
    """Return the value of the first field called ``name`` (case-insensitive), or None."""
    wanted = name.lower()
    for field_name, value in headers:
        if field_name.lower() == wanted:
            return value
    return None


def first_fields(headers: Iterable[tuple[str, bytes]]) -> dict[str, bytes]:
    """The value of the first field of each name, by lower-case name: ``first[name.lower()]``
    is :func:`get_header` of ``name``, for one pass over the fields instead of one a name."""
    first: dict[str, bytes] = {}
    for field_name, value in headers:
        first.setdefault(field_name.lower(), value)
    return first


def get_headers(headers: Iterable[tuple[str, bytes]], name: str) -> list[bytes]:
    """Return the values of every field called ``name`` (case-insensitive), in order."""
    wanted = name.lower()
    return [value for field_name, value in headers if field_name.lower() == wanted]


def decode_text(raw: bytes) -> str:
    """Decode 8-bit header or parameter bytes: UTF-8 (RFC 6532) when valid, else
    windows-1252, else latin-1. Never raises."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _decode_q(text: str) -> bytes:
    """RFC 2047 §4.2 "Q" encoding: "_" is a space, "=XX" a hex octet."""
    raw = text.encode("latin-1", "replace").replace(b"_", b" ")
    return _Q_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw)


def _decode_b(text: str) -> bytes | None:
    """RFC 2047 §4.1 "B" encoding, tolerating missing padding; None when invalid."""
    text = text.rstrip("=")
    if len(text) % 4 == 1:
        return None
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def decode_charset(raw: bytes, charset: str) -> str:
    """Decode ``raw`` in the MIME ``charset``, replacing undecodable bytes; an unknown or
    unusable charset falls back to :func:`decode_text`. Never raises."""
    try:
        codecs.lookup(charset)
    except (LookupError, ValueError):
        return decode_text(raw)
    try:
        return raw.decode(charset, "replace")
    except Exception:  # a codec may misbehave on its own errors handling
        return decode_text(raw)


def decode_encoded_words(text: str) -> str:
    """Decode the RFC 2047 encoded-words in ``text``; never raises.

    Whitespace between adjacent encoded-words is dropped (RFC 2047 §6.2), and adjacent words
    in the same charset are decoded together, so a multi-byte character split across two
    words survives. A malformed encoded-word is kept as written.
    """
    if "=?" not in text:
        return text
    out: list[str] = []
    pending: list[bytes] = []
    pending_charset = ""
    position = 0

    def flush() -> None:
        if pending:
            out.append(decode_charset(b"".join(pending), pending_charset))
            pending.clear()

    for match in _ENCODED_WORD.finditer(text):
        charset, kind, payload = match.groups()
        raw = _decode_q(payload) if kind in "Qq" else _decode_b(payload)
        between = text[position : match.start()]
        if raw is None:
            continue  # keep the malformed word: it stays in the next "between" slice
        if not (pending and _WHITESPACE.fullmatch(between)):
            flush()
            out.append(between)
        elif charset.lower() != pending_charset.lower():
            flush()
        pending_charset = charset
        pending.append(raw)
        position = match.end()
    flush()
    out.append(text[position:])
    return "".join(out)


def unfold(raw: bytes) -> bytes:
    """``raw`` with every line break that is followed by a blank removed (RFC 5322 §2.2.3)."""
    return _FOLD.sub(b"", raw)


def decode_header_value(raw: bytes) -> str:
    """Decode a raw header value to text; never raises.

    Folding is removed (RFC 5322 §2.2.3), 8-bit bytes are decoded by :func:`decode_text`, and
    RFC 2047 encoded-words are decoded by :func:`decode_encoded_words`.
    """
    return decode_encoded_words(decode_text(unfold(raw)))


def rfc5322_date(timestamp: float | None = None) -> str:
    """An RFC 5322 §3.3 date-time in UTC, written ``+0000`` (``-0000`` would mean "time zone
    unknown", and we know the clock is UTC). The text of the last whole second asked for is
    kept: every Received header of a busy second has the same one."""
    global _last_date
    if timestamp is None:
        timestamp = time.time()
    second = int(timestamp)
    # Far from the next second: rounding the time to microseconds (as datetime does) cannot
    # carry into it, so the second alone decides the text.
    if timestamp >= 0 and timestamp - second < 0.999999:
        kept = _last_date  # one (second, text) pair, replaced whole: safe across threads
        if kept[0] == second:
            return kept[1]
        text = _formatted_date(timestamp)
        _last_date = (second, text)
        return text
    return _formatted_date(timestamp)


#: The whole second :func:`rfc5322_date` last formatted, and its text.
_last_date: tuple[int, str] = (-1, "")


def _formatted_date(timestamp: float) -> str:
    formatted = email.utils.formatdate(timestamp, localtime=False)
    return formatted[:-5] + "+0000" if formatted.endswith("-0000") else formatted
