"""Incremental readers for SMTP message content: DATA (RFC 5321) and BDAT chunks (RFC 3030).

Both readers are fed raw socket bytes in arbitrary pieces and write the decoded message into a
binary sink; ``feed`` returns ``None`` while more input is needed and, once the content is
complete, the bytes that follow it (pipelined commands, RFC 2920). The result never depends on
where the pieces were split. Standard library only.

Design rules:

1. The end of DATA is ONLY ``<CRLF>.<CRLF>`` with real CRLFs (RFC 5321 §4.1.1.4, §4.5.2), so no
   SMTP smuggling variant (SEC Consult 2023, CVE-2023-51764/51765/51766) ends a message.
2. ``bare_newline="reject"`` (default, as Postfix ``smtpd_forbid_bare_newline = yes``): a LF
   not preceded by CR or a CR not followed by LF anywhere in the content (RFC 5321 §2.3.8) gives
   :attr:`Outcome.BARE_NEWLINE` at once; the caller replies 521 5.5.2 and closes.
3. ``bare_newline="normalize"`` (as Postfix ``smtpd_forbid_bare_newline = normalize``):

   - a bare LF ends a line and is stored as CRLF; a bare CR is content, stored as is (so
     ``<CR>.<CR>`` is just three bytes of a line);
   - a line starts at the start of the data and after any line end (CRLF or bare LF), and one
     leading dot is removed from every line that starts with "." (RFC 5321 §4.5.2), e.g.
     ``<LF>..x<LF>`` is stored as ``<CRLF>.x<CRLF>`` and ``<CRLF>.<CR>X`` as ``<CRLF><CR>X``;
   - EXCEPT a line that is a lone "." without being the end of data (``<LF>.<LF>``,
     ``<LF>.<CRLF>``, ``<CRLF>.<LF>``): it is stored as a "." line, so a near-miss end marker
     stays visible in the message and never turns into an empty line (a header/body break).
4. Line length (RFC 5321 §4.5.3.1.6) counts the line as stored, including its CRLF and not
   counting the dot added for transparency; the size (RFC 1870) counts stored octets. Past
   either limit, input is still parsed to the end (to stay in sync) but no longer stored.
   Precedence, whatever the chunking: BARE_NEWLINE, then LINE_TOO_LONG, then TOO_BIG.
5. Common path: whole runs of clean CRLF lines are found with ``bytes.find``/``replace`` and
   written as one slice; only lines starting with ".", bare CR/LF and split lines go line by line.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import BinaryIO

from mailserver.message.octets import long_lines

__all__ = ["BdatState", "ChunkReader", "DataReader", "Outcome", "dot_stuff"]

CRLF = b"\r\n"
_DOT = 0x2E
#: A CR not followed by LF, or a LF not preceded by CR (slow; used only on dirty input).
_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_ANY_NEWLINE = re.compile(rb"\r\n?|\n")
_MODES = ("reject", "normalize")


class Outcome(enum.Enum):
    """How a message's content ended."""

    OK = "ok"  # complete and acceptable
    TOO_BIG = "too-big"  # RFC 1870 §6: 552 5.3.4 after the end of data
    BARE_NEWLINE = "bare-newline"  # reject mode: 521 5.5.2 and close at once
    LINE_TOO_LONG = "line-too-long"  # RFC 5321 §4.5.3.1.6: 500 5.5.6 after the end of data


#: Octets of the header section kept to find the Message-ID for the log.
HEAD_MAX = 16384
_MESSAGE_ID = re.compile(rb"(?im)^message-id[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)")


@dataclass
class Head:
    """The start of a message's header section, kept for the log's Message-ID (one per
    message: BDAT chunks share it through :class:`BdatState`)."""

    data: bytearray = field(default_factory=bytearray)
    complete: bool = False


def _clean(buf: bytes, start: int, end: int) -> bool:
    """True when ``buf[start:end]`` holds no bare CR and no bare LF.

    Exactly then does deleting every CR and writing every LF as CRLF give the range back:
    every CR of the result is followed by a LF and every LF preceded by a CR. Both steps
    replace one octet, which ``bytes.replace`` finds with ``memchr``: for long lines about
    four times faster than counting CRs, LFs and CRLFs (``bytes.count`` of two octets tests
    every position), which short lines still use (:func:`~mailserver.message.octets.long_lines`).
    """
    region = buf[start:end] if start or end != len(buf) else buf
    if long_lines(region):
        return region.replace(b"\r", b"").replace(b"\n", CRLF) == region
    lf = region.count(b"\n")
    return lf == region.count(b"\r") == region.count(CRLF)


def _lines_fit(region: bytes, max_line: int) -> bool:
    """True when every line of ``region`` (whole lines, each ending with a LF) is at most
    ``max_line`` octets, its line ending included.

    Walks from line start to line start: the last LF within ``max_line`` octets of a line
    start (``rfind``, i.e. ``memrchr``) ends every line that starts in between, so each step
    passes at least one line and usually about ``max_line`` octets; a line start with no LF
    in reach starts a line that is too long.
    """
    start, size = 0, len(region)
    while size - start > max_line:
        end = region.rfind(b"\n", start, start + max_line)
        if end < 0:
            return False
        start = end + 1
    return True


class _Sink:
    """Size cap, 8-bit detection and batched writes shared by both readers."""

    def __init__(
        self, sink: BinaryIO, max_size: int, size: int = 0, head: Head | None = None
    ) -> None:
        self._sink = sink
        self._max_size = max_size
        self._pieces: list[bytes] = []
        self.size = size
        self.has_8bit = False
        self.over = bool(max_size and size > max_size)  # RFC 1870 §6: past the size limit
        self.storing = not self.over
        self._head = head if head is not None else Head(complete=size > 0)

    def emit(self, piece: bytes) -> None:
        head = self._head
        if not head.complete:
            head.data += piece[: HEAD_MAX - len(head.data)]
            head.complete = len(head.data) >= HEAD_MAX or b"\r\n\r\n" in head.data
        self.size += len(piece)
        if not self.has_8bit and not piece.isascii():
            self.has_8bit = True
        if self._max_size and self.size > self._max_size:
            self.over = True
            self.storing = False  # RFC 1870 §6: keep reading, store nothing more
        if self.storing:
            self._pieces.append(piece)

    @property
    def message_id(self) -> str | None:
        """The content's Message-ID field body (RFC 5322 §3.6.4), unfolded, when it is in the
        first :data:`HEAD_MAX` octets of the header section; for logs and tracing only."""
        data = self._head.data
        end = data.find(b"\r\n\r\n")
        found = _MESSAGE_ID.search(data, 0, len(data) if end < 0 else end)
        if found is None:
            return None
        value = re.sub(rb"\r\n[ \t]+", b" ", found.group(1)).strip()
        return value.decode("utf-8", "replace")[:998] or None

    def flush(self) -> None:
        if self._pieces:
            self._sink.write(self._pieces[0] if len(self._pieces) == 1 else b"".join(self._pieces))
            self._pieces.clear()


class _Reader:
    """What both readers report: stored size and 8-bit content (RFC 1870, RFC 6152)."""

    _out: _Sink

    @property
    def message_id(self) -> str | None:
        """The message's Message-ID, for the log (see :attr:`_Sink.message_id`)."""
        return self._out.message_id

    @property
    def size(self) -> int:
        """Message octets so far, after unstuffing/normalisation (stored or not)."""
        return self._out.size

    @property
    def has_8bit(self) -> bool:
        """True once any octet >= 0x80 was seen in the content (RFC 6152)."""
        return self._out.has_8bit


class DataReader(_Reader):
    """DATA content: dot-unstuffing, end of data ONLY at <CRLF>.<CRLF> (RFC 5321 §4.1.1.4, §4.5.2).

    The input starts right after the 354 reply, at the start of a line whose preceding CRLF
    ended the DATA command, so a first line "." means an empty message. The CRLF before the
    final "." belongs to the message; the "." line does not. See the module docstring for
    ``bare_newline``.
    """

    def __init__(
        self,
        sink: BinaryIO,
        *,
        max_size: int = 0,
        max_line: int = 0,
        bare_newline: str = "reject",
    ) -> None:
        if bare_newline not in _MODES:
            raise ValueError(f"bare_newline must be one of {_MODES}, not {bare_newline!r}")
        self._out = _Sink(sink, max_size)
        self._max_line = max_line
        self._normalize = bare_newline == "normalize"
        self._carry = b""  # undecided bytes: a trailing CR, or a "." / ".\r" at a line start
        self._at_start = True  # the next byte starts a line
        self._after_crlf = True  # ... and the line end before it was a real CRLF
        self._line_len = 0  # stored octets of the current line so far
        self._done = False
        self.outcome = Outcome.OK

    def feed(self, data: bytes) -> bytes | None:
        """Consume ``data``; ``None`` while more is needed, else the bytes after the end."""
        if self._done:
            raise ValueError("DataReader already reached the end of data")
        buf = self._carry + data if self._carry else data
        self._carry = b""
        n = len(buf)
        pos = 0
        # Searches cached for this buffer (-2: not searched yet, -1: none up to the end), so
        # that the fast path stays linear however many lines fall back to the slow path.
        dot_at = bare_at = -2
        hops = _DOTS_ONE_BY_ONE  # dots to look at one by one in this feed (see _dot_line)
        dirty: bool | None = None  # whether some bare CR/LF lies ahead (counted once)
        while pos < n:
            if self._at_start and self._after_crlf and buf[pos] != _DOT:
                # Fast path: a run of complete CRLF lines with no dot line and no bare CR/LF.
                if dot_at != -1 and dot_at < pos:
                    dot_at, hops = _dot_line(buf, pos, hops)
                if bare_at != -1 and bare_at < pos:
                    if dirty is None:
                        dirty = not _clean(buf, pos, n - buf.endswith(b"\r"))
                    bare_at = _search(buf, pos) if dirty else -1
                end = dot_at + 2 if dot_at != -1 else n  # a dot line starts at dot_at + 2
                if bare_at != -1 and bare_at < end:
                    end = bare_at
                if dot_at == -1 or end != dot_at + 2:  # back off to the last whole line
                    last = buf.rfind(CRLF, pos, end)
                    end = last + 2 if last != -1 else pos
                if end > pos:
                    self._run(buf[pos:end])
                    pos = end
                    continue
            pos = self._step(buf, pos)
            if pos < 0:
                break
        self._out.flush()
        if pos >= 0:
            return None
        self._done = True
        if self.outcome is Outcome.OK and self._out.over:
            self.outcome = Outcome.TOO_BIG
        if self.outcome is Outcome.BARE_NEWLINE:
            return b""  # the caller closes at once: nothing after this matters
        return buf[-pos - 1 :]

    def _run(self, region: bytes) -> None:
        """Store a run of whole CRLF lines, none starting with "." and none with bare CR/LF."""
        if self._max_line and self.outcome is Outcome.OK and len(region) > self._max_line:
            if not _lines_fit(region, self._max_line):
                self._too_long()
        self._out.emit(region)

    def _too_long(self) -> None:
        if self.outcome is Outcome.OK:
            self.outcome = Outcome.LINE_TOO_LONG
        self._out.storing = False

    def _step(self, buf: bytes, pos: int) -> int:
        """Handle one line (or the rest of the buffer) and return the next position.

        A negative result stops reading: ``-k - 1`` when the end of data was reached and
        ``buf[k:]`` follows it; ``-1`` after a bare CR/LF in reject mode.
        """
        if self._at_start and buf[pos] == _DOT:
            head = buf[pos : pos + 3]
            if head in (b".", b".\r"):  # cannot tell yet: wait for the next bytes
                self._carry = buf[pos:]
                return len(buf)
            if head == b".\r\n" and self._after_crlf:
                return -(pos + 3) - 1  # <CRLF>.<CRLF>: the end of data
            lone = head[:2] == b".\n" or head == b".\r\n"
            if lone:  # a near-miss end marker: <LF>.<LF>, <LF>.<CRLF>, <CRLF>.<LF>
                if not self._normalize:
                    return self._bare_stop()
                self._end_line(b".", real=head == b".\r\n")
                return pos + (2 if head[:2] == b".\n" else 3)
            pos += 1  # RFC 5321 §4.5.2: remove one leading dot
        i = buf.find(b"\n", pos)
        if i == -1:  # a partial line: store it, keep a trailing CR undecided
            end = len(buf) - buf.endswith(b"\r")
            seg = buf[pos:end]
            if not self._normalize and b"\r" in seg:
                return self._bare_stop()
            self._carry = buf[end:]
            self._at_start = False
            self._add(seg)
            return len(buf)
        real = i > pos and buf[i - 1] == 0x0D
        seg = buf[pos : i - real]
        if not self._normalize and (not real or b"\r" in seg):
            return self._bare_stop()
        self._end_line(seg, real=real)
        return i + 1

    def _bare_stop(self) -> int:
        self.outcome = Outcome.BARE_NEWLINE
        return -1

    def _add(self, seg: bytes) -> None:
        self._line_len += len(seg)
        if self._max_line and self._line_len > self._max_line:
            self._too_long()
        if seg:
            self._out.emit(seg)

    def _end_line(self, seg: bytes, *, real: bool) -> None:
        self._add(seg + CRLF)
        self._line_len = 0
        self._at_start = True
        self._after_crlf = real


#: Dots :func:`_dot_line` may look at one by one in one feed before it only searches for
#: ``<CRLF>.`` itself.
_DOTS_ONE_BY_ONE = 16


def _dot_line(buf: bytes, pos: int, hops: int) -> tuple[int, int]:
    """Index of the first ``<CRLF>.`` at or after ``pos`` (or -1), and the hops left.

    Up to ``hops`` dots are found with ``memchr`` first, one by one (a header's few, in
    addresses and host names): a body without any (base64, most attachments) is passed over
    at memory speed. Once they are used up (text, full of dots), the three octets are
    searched for from the last dot seen, and from ``pos`` on later calls.
    """
    dot = pos + 1
    while hops:
        hops -= 1
        dot = buf.find(b".", dot + 1)
        if dot == -1:
            return -1, hops
        if buf[dot - 2 : dot] == CRLF:
            return dot - 2, hops
    return buf.find(b"\r\n.", dot - 1), 0


def _search(buf: bytes, pos: int) -> int:
    """Index of the first bare CR or LF at or after ``pos`` (a trailing CR counts), or -1."""
    match = _BARE.search(buf, pos)
    return match.start() if match else -1


@dataclass
class BdatState:
    """What one BDAT chunk must tell the next: whether its content ended with a CR.

    Keep one per message and pass it to every :class:`ChunkReader` of that message, so a CRLF
    split across two chunks is recognised (RFC 3030 allows chunks to end anywhere).
    """

    last_cr: bool = False
    head: Head = field(default_factory=Head)


class ChunkReader(_Reader):
    """One BDAT chunk (RFC 3030): exactly `size` octets, no dot-stuffing, no end marker.

    ``binary`` (BODY=BINARYMIME, RFC 3030 §3): stored verbatim, nothing checked. Otherwise:

    - "reject": a bare CR or LF makes the outcome BARE_NEWLINE, decided only once the whole
      chunk has been read (so the reply stays in sync with the chunk);
    - "normalize": a bare LF is stored as CRLF, a bare CR as is (as for DATA).

    A CR ending one chunk and a LF starting the next form a valid CRLF when the same ``state``
    is passed to both readers; a CR ending the ``last`` chunk is bare. Without ``state`` the
    reader cannot know its neighbours and accepts a leading LF and a trailing CR as they are.
    """

    def __init__(
        self,
        sink: BinaryIO,
        size: int,
        *,
        already: int = 0,
        max_size: int = 0,
        binary: bool = False,
        bare_newline: str = "reject",
        state: BdatState | None = None,
        last: bool = False,
    ) -> None:
        if bare_newline not in _MODES:
            raise ValueError(f"bare_newline must be one of {_MODES}, not {bare_newline!r}")
        self._out = _Sink(sink, max_size, already, state.head if state is not None else None)
        self._remaining = size
        self._check = not binary
        self._normalize = bare_newline == "normalize"
        self._state = state
        self._last = last
        # Whether the content so far ended with CR; None: unknown (no state, chunk start).
        self._prev_cr: bool | None = state.last_cr if state is not None else None
        self._bare = False
        self.outcome = Outcome.OK

    def feed(self, data: bytes) -> bytes | None:
        """Consume ``data``; ``None`` until `size` octets are read, then the leftover."""
        if self._remaining < 0:
            raise ValueError("ChunkReader already complete")
        piece, rest = data[: self._remaining], data[self._remaining :]
        self._remaining -= len(piece)
        if piece:
            self._out.emit(self._inspect(piece) if self._check else piece)
        self._out.flush()
        if self._remaining:
            return None
        self._remaining = -1
        self._finish()
        return rest

    def _inspect(self, piece: bytes) -> bytes:
        """Check (reject) or normalise (normalize) one piece; RFC 5321 §2.3.8."""
        start = 1 if piece[0] == 0x0A and self._prev_cr is not False else 0
        if self._prev_cr and not start:
            self._bare = True  # the previous piece's final CR was bare
        end = len(piece) - piece.endswith(b"\r")
        self._prev_cr = piece.endswith(b"\r")
        if _clean(piece, start, end):
            return piece
        if not self._normalize:
            self._bare = True
            return piece
        return piece[:start] + _BARE_LF.sub(CRLF, piece[start:])

    def _finish(self) -> None:
        if self._check:
            if self._prev_cr and self._last and not self._normalize:
                self._bare = True
            if self._state is not None:
                self._state.last_cr = bool(self._prev_cr) and not self._last
        if self._bare and not self._normalize:
            self.outcome = Outcome.BARE_NEWLINE
        elif self._out.over:
            self.outcome = Outcome.TOO_BIG


def dot_stuff(message: bytes) -> bytes:
    """The DATA payload for ``message``, final ".\\r\\n" included (RFC 5321 §4.5.2).

    Bare LF and bare CR become CRLF (RFC 5321 §2.3.8, so no smuggling sequence can reach the
    next hop), a missing final CRLF is added (§4.1.1.4), and each line starting with "." gets
    one more.
    """
    text = _ANY_NEWLINE.sub(CRLF, message)
    if text and not text.endswith(CRLF):
        text += CRLF
    if text.startswith(b"."):
        text = b"." + text
    return text.replace(b"\r\n.", b"\r\n..") + b".\r\n"
