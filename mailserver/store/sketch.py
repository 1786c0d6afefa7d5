"""The index's parse results of a large message file, in bounded memory.

:func:`mailserver.message.mime.parse` needs the message as one ``bytes``; for a message of
tens of MiB that would put the whole message in memory once per delivery (issue 12: memory
bounds per connection). :func:`file_meta` instead builds a *sketch* of the file and parses
that: a copy in which every line that cannot matter to the structure is shortened to one
content byte (``x``) plus its own line ending, and every offset the parser reports is mapped
back to the file.

What the sketch keeps verbatim, and why the result equals the full parse for real mail:

- the first :data:`HEAD` octets (the header section, and a top-level ``message/rfc822``'s
  own header section, from which ENVELOPE comes);
- every line starting with ``--`` (a possible MIME delimiter, RFC 2046 §5.1.1; its first
  :data:`DELIMITER_KEEP` octets), and the :data:`WINDOW` octets after it (the part's header
  section, and an attached message's header section right after it);
- the last line ending of every line (CRLF or LF), and whether the line had content.

So delimiter lines, header sections and blank lines are where they were, and each body line
still counts as one line with the same ending (``lines`` of text parts, RFC 3501 §7.4.2, and
the CR/LF a delimiter takes from the part before it come out the same); offsets in
structures (``header_offset``, ``body_offset``, ``body_length``, ``size``) and attachment
sizes are mapped back to the file's. A header section longer than the window that holds it
is cut short (a pathological message; it is described, never refused).

Memory: the sketch holds the windows plus three octets per other line (a typical base64 or
text body of 76-character lines shrinks about 25-fold); a body made only of 1- or
2-character lines is not made smaller. Reading is by lines of at most :data:`PIECE` octets,
so one long line never sits whole in memory. Blocking: call from a worker thread.
"""

from __future__ import annotations

import bisect
import os
from typing import BinaryIO

from mailserver.store import index

__all__ = [
    "DELIMITER_KEEP",
    "HEAD",
    "PIECE",
    "SMALL",
    "WINDOW",
    "data_meta",
    "file_meta",
    "sketch",
]

#: Files up to this size are parsed whole (exact, and cheaper than a sketch).
SMALL = 1 << 20
#: Octets kept verbatim at the start of the message.
HEAD = 256 * 1024
#: Octets kept verbatim after each line that starts with ``--``.
WINDOW = 64 * 1024
#: Octets of a ``--`` line kept (a boundary is at most 70 characters, RFC 2046 §5.1.1).
DELIMITER_KEEP = 1024
#: A line is read in pieces of at most this many octets.
PIECE = 1 << 16


class _Map:
    """Sketch offsets -> file offsets: segments that are copied (linear) or shortened."""

    def __init__(self) -> None:
        self.sketch_starts: list[int] = []
        self.file_starts: list[int] = []
        self.linear: list[bool] = []
        self.sketch_end = 0
        self.file_end = 0

    def add(self, sketch_start: int, file_start: int, linear: bool) -> None:
        if self.linear and self.linear[-1] == linear and not linear:
            return  # consecutive shortened lines form one segment
        if self.linear and linear and self.linear[-1]:
            # Contiguous copies join when the offsets stay in step.
            last = len(self.linear) - 1
            if sketch_start - self.sketch_starts[last] == file_start - self.file_starts[last]:
                return
        self.sketch_starts.append(sketch_start)
        self.file_starts.append(file_start)
        self.linear.append(linear)

    def __call__(self, offset: int) -> int:
        """The file offset of sketch ``offset``. Inside a shortened run, an offset at its
        end maps to the run's end, one at its start to the run's start, and any other to the
        same distance from its end (the line endings at the end of a run are the real
        ones)."""
        i = bisect.bisect_right(self.sketch_starts, offset) - 1
        if i < 0:
            return offset
        start = self.sketch_starts[i]
        if self.linear[i]:
            return self.file_starts[i] + (offset - start)
        last = i + 1 == len(self.linear)
        sketch_end = self.sketch_end if last else self.sketch_starts[i + 1]
        file_end = self.file_end if last else self.file_starts[i + 1]
        if offset == start and offset != sketch_end:
            return self.file_starts[i]
        return max(self.file_starts[i], file_end - (sketch_end - offset))


def sketch(source: BinaryIO) -> tuple[bytes, _Map]:
    """Read ``source`` from its current position to the end; return the sketch and the map
    from its offsets to the source's (relative to that position)."""
    return _Sketcher(source).run()


class _Sketcher:
    """One pass over a file, line by line in pieces (see the module docstring)."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.out = bytearray()
        self.map = _Map()
        self.keep_until = HEAD
        self.offset = 0  # file offset of the next octet read
        self._dropped_at: int | None = None  # where the current line's dropped octets start

    def run(self) -> tuple[bytes, _Map]:
        carry = b""  # a CR that ended a piece but not its line: content or half a CRLF
        line_start = 0
        at_line_start = True
        delimiter = False
        verbatim_until = 0
        content = 0  # content octets of the current line so far
        copied = 0  # ... of which copied into the sketch
        while True:
            read = self.source.readline(PIECE)
            if not read and not carry:
                break
            piece, carry = carry + read, b""
            if at_line_start:
                line_start = self.offset
                content = copied = 0
                delimiter = piece.startswith(b"--")
                verbatim_until = max(self.keep_until, line_start)
                if delimiter:
                    verbatim_until = max(verbatim_until, line_start + DELIMITER_KEEP)
            ends_line = piece.endswith(b"\n")
            ending = (b"\r\n" if piece.endswith(b"\r\n") else b"\n") if ends_line else b""
            body = piece[: len(piece) - len(ending)]
            if read and not ends_line and body.endswith(b"\r"):
                carry, body = b"\r", body[:-1]  # half a CRLF, or content: the next read says
            self._content(body, line_start + content, verbatim_until)
            copied += max(0, min(len(body), verbatim_until - (line_start + content)))
            content += len(body)
            at_line_start = ends_line
            if ends_line:
                self._end(ending, content, copied)
                if delimiter:
                    self.keep_until = max(self.keep_until, self.offset + WINDOW)
            if not read:
                break
        if not at_line_start:
            self._end(b"", content, copied)
        self.map.sketch_end = len(self.out)
        self.map.file_end = self.offset
        return bytes(self.out), self.map

    def _content(self, body: bytes, at: int, verbatim_until: int) -> None:
        """Copy the part of ``body`` (file offset ``at``) inside the verbatim window."""
        keep = max(0, min(len(body), verbatim_until - at))
        if keep:
            self.map.add(len(self.out), at, True)
            self.out += body[:keep]
        if keep < len(body) and self._dropped_at is None:
            self._dropped_at = at + keep
        self.offset = at + len(body)

    def _end(self, ending: bytes, content: int, copied: int) -> None:
        """The line ends: a shortened line gets one content octet, then its ending."""
        dropped_at, self._dropped_at = self._dropped_at, None
        if dropped_at is not None:
            self.map.add(len(self.out), dropped_at, False)
            if not copied and content:
                self.out += b"x"
        elif ending:
            self.map.add(len(self.out), self.offset, True)
        self.out += ending
        self.offset += len(ending)


def _remap(node: dict[str, object], mapping: _Map) -> None:
    body = node["body_offset"]
    assert isinstance(body, int)
    length = node["body_length"]
    assert isinstance(length, int)
    header = node["header_offset"]
    assert isinstance(header, int)
    new_body = mapping(body)
    new_end = mapping(body + length)
    node["header_offset"] = mapping(header)
    node["body_offset"] = new_body
    node["body_length"] = node["size"] = new_end - new_body
    for child in node.get("parts", ()) or ():  # type: ignore[attr-defined]
        _remap(child, mapping)
    inner = node.get("bodystructure")
    if isinstance(inner, dict):
        _remap(inner, mapping)


def _numbered(node: dict[str, object], number: str, root: bool, out: dict[str, dict]) -> None:
    """The attachment part numbers of mime.parse (only the message's own parts)."""
    parts = node.get("parts")
    if isinstance(parts, list):
        for i, child in enumerate(parts, 1):
            _numbered(child, f"{number}.{i}" if number else str(i), False, out)
        return
    out[(f"{number}.1" if number else "1") if root else number] = node


def data_meta(data: bytes) -> index.Record:
    """The cached parse results of a message already in memory (at most :data:`SMALL`
    octets): what :func:`file_meta` gives for a file holding ``data``, without reading the
    file back."""
    from mailserver.store.mailbox import message_meta  # mailbox imports this module

    return message_meta(data)


def file_meta(path: str) -> index.Record:
    """The cached parse results (:func:`mailserver.store.mailbox.message_meta`) of the
    message file ``path``: a whole parse up to :data:`SMALL` octets, a sketch above."""
    from mailserver.store.mailbox import message_meta  # mailbox imports this module

    with open(path, "rb") as source:
        if os.fstat(source.fileno()).st_size <= SMALL:
            return message_meta(source.read())
        data, mapping = sketch(source)
    meta = message_meta(data)
    structure = meta["bodystructure"]
    assert isinstance(structure, dict)
    _remap(structure, mapping)
    nodes: dict[str, dict] = {}
    _numbered(structure, "", True, nodes)
    for attachment in meta["attachments"] or ():
        node = nodes.get(attachment["part"])
        if node is not None:
            attachment["size"] = node["size"]
    return meta
