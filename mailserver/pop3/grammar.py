"""The POP3 wire level: command lines in, status lines and byte-stuffed data out.

Sources: RFC 1939 §3 (commands, responses, byte-stuffing), RFC 2449 §4 and §8 (line lengths,
response codes), RFC 5034 §4 (AUTH lines), RFC 6856 §2 (UTF8).

Design rules:

1. A leaf: the standard library only, no I/O, no Twisted.
2. :class:`LineReader` is fed bytes in arbitrary pieces and returns events that never depend on
   where the pieces were split. Strict CRLF (DESIGN decision 2): a line ending in a bare LF, or
   holding a NUL or a bare CR, is a :class:`BadLine`, and the session resynchronises at its LF.
   A line longer than ``max_line`` is read to its end and reported once as :class:`BadLine`.
3. :class:`Stuffer` byte-stuffs a message fed in arbitrary chunks: the output never depends on
   the chunk boundaries (a ``.`` at the start of a line gets a second ``.``, RFC 1939 §3; bare
   LF becomes CRLF). :class:`TopLimiter` cuts a message after its header and ``n`` body lines
   (RFC 1939 §7 TOP) and is fed the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "DEFAULT_MAX_LINE",
    "BadLine",
    "Command",
    "Line",
    "LineReader",
    "Stuffer",
    "TopLimiter",
    "err",
    "multiline",
    "ok",
    "parse_command",
    "parse_number",
]

#: RFC 2449 §4 limits a command line to 255 octets with CRLF; servers may accept more, and an
#: AUTH initial response (RFC 5034 §4, e.g. an OAUTHBEARER token) needs more.
DEFAULT_MAX_LINE = 16_384
#: RFC 2449 §4: keywords are 3 or 4 characters (extensions may be longer; ours are).
_KEYWORD = re.compile(rb"[A-Za-z0-9-]{1,16}")
#: Message numbers and line counts: decimal digits (RFC 1939 §3); more than 10 is nonsense.
_NUMBER = re.compile(r"[0-9]{1,10}")


@dataclass(frozen=True)
class Line:
    """One CRLF-terminated line, without its CRLF."""

    data: bytes


@dataclass(frozen=True)
class BadLine:
    """A line that cannot be a command: why, as the ``-ERR`` text."""

    reason: str


Event = Line | BadLine


class LineReader:
    """Splits input into lines (design rule 2)."""

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self._skipping = False  # inside an over-long line: drop up to its LF

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Event]:
        self._buffer += data
        events: list[Event] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self.max_line:
                    if not self._skipping:
                        events.append(BadLine("Line too long"))
                    self._skipping = True
                    del self._buffer[:]
                return events
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._skipping:
                self._skipping = False
                continue
            events.append(_line(raw, self.max_line))

    def discard(self) -> None:
        """Forget buffered input (STLS: nothing sent before the handshake counts)."""
        del self._buffer[:]
        self._skipping = False


def _line(raw: bytes, max_line: int) -> Event:
    if len(raw) + 1 > max_line:
        return BadLine("Line too long")
    if not raw.endswith(b"\r"):
        return BadLine("Lines must end with CRLF")
    raw = raw[:-1]
    if b"\r" in raw or b"\0" in raw:
        return BadLine("Bare CR or NUL in the command")
    return Line(raw)


@dataclass(frozen=True)
class Command:
    """A command keyword (upper case) and its arguments (RFC 1939 §3: separated by one
    space; tolerated: several)."""

    name: str
    args: tuple[str, ...]
    raw_args: bytes


def parse_command(line: bytes) -> Command | BadLine:
    """The keyword and the space-separated arguments of ``line``. Arguments are UTF-8
    (ASCII before RFC 6856 UTF8; user names and passwords may be UTF-8 with ``UTF8 USER``)."""
    keyword, _, rest = line.partition(b" ")
    if not _KEYWORD.fullmatch(keyword):
        return BadLine("Unknown command")
    try:
        text = rest.decode("utf-8")
    except UnicodeDecodeError:
        return BadLine("Arguments must be UTF-8")
    return Command(keyword.decode("ascii").upper(), tuple(text.split()), rest)


def parse_number(text: str) -> int | None:
    """A decimal message number or line count, or None when ``text`` is not one."""
    if not _NUMBER.fullmatch(text):
        return None
    return int(text)


# -- responses ----------------------------------------------------------------------------


def ok(text: str = "", code: str | None = None) -> bytes:
    """``+OK [CODE] text`` CRLF (RFC 1939 §3, RFC 2449 §8)."""
    return _status(b"+OK", text, code)


def err(text: str, code: str | None = None) -> bytes:
    """``-ERR [CODE] text`` CRLF; ``code`` is an RFC 2449 §8 response code (RESP-CODES)."""
    return _status(b"-ERR", text, code)


def _status(indicator: bytes, text: str, code: str | None) -> bytes:
    parts = [indicator]
    if code:
        parts.append(f"[{code}]".encode("ascii"))
    if text:
        # Response text is one line (RFC 1939 §3): never let a CR or LF through.
        parts.append(text.replace("\r", " ").replace("\n", " ").encode("utf-8"))
    return b" ".join(parts) + b"\r\n"


def multiline(first: bytes, lines: list[bytes]) -> bytes:
    """A multi-line response: the status line, each line byte-stuffed, then ``.`` (RFC 1939
    §3). ``lines`` have no CRLF."""
    body = [b"." + line if line.startswith(b".") else line for line in lines]
    return first + b"".join(line + b"\r\n" for line in body) + b".\r\n"


# -- message data -------------------------------------------------------------------------


class Stuffer:
    """Byte-stuffs a message fed in chunks (design rule 3).

    ``feed`` returns the stuffed bytes that are ready; ``end`` returns the rest plus the
    terminating ``.`` CRLF (with a CRLF first when the message does not end with one).
    """

    def __init__(self) -> None:
        self._line_start = True
        self._held_cr = False  # a chunk ended with CR: its LF may come next

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        if self._held_cr:
            chunk = b"\r" + chunk
            self._held_cr = False
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]
            self._held_cr = True
            if not chunk:
                return b""
        # Bare LF -> CRLF; a bare CR stays as it is (it does not end a line).
        if b"\n" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            chunk = chunk.replace(b"\n.", b"\n..")
        if self._line_start and chunk.startswith(b"."):
            chunk = b"." + chunk
        self._line_start = chunk.endswith(b"\n")
        return chunk

    def end(self) -> bytes:
        tail = b""
        if self._held_cr:
            self._held_cr = False
            tail = b"\r"  # a lone CR at the very end: keep it, then end the line
            self._line_start = False
        if not self._line_start:
            tail += b"\r\n"
        return tail + b".\r\n"


class TopLimiter:
    """Passes a message's header, the blank line after it, then ``lines`` body lines (RFC
    1939 §7), fed in chunks; :attr:`done` says when nothing more is wanted."""

    def __init__(self, lines: int) -> None:
        self.remaining = lines
        self.in_body = False
        self.done = False
        #: The current line's bytes so far while they could still make an empty line
        #: (at most CR), else None.
        self._partial: bytes | None = b""

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        position = 0
        while not self.done and position < len(chunk):
            newline = chunk.find(b"\n", position)
            if newline < 0:
                piece = chunk[position:]
                out += piece
                if self._partial is not None:
                    joined = self._partial + piece
                    self._partial = joined if joined == b"\r" else None
                break
            piece = chunk[position : newline + 1]
            out += piece
            position = newline + 1
            line = None if self._partial is None else self._partial + piece
            self._partial = b""
            if self.in_body:
                self.remaining -= 1
            elif line in (b"\n", b"\r\n"):
                self.in_body = True  # the header ends at its first empty line
            self.done = self.in_body and self.remaining <= 0
        return bytes(out)
