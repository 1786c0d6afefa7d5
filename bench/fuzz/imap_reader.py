"""The IMAP command reader (``mailserver.imap.grammar.CommandReader``) on raw socket bytes.

The first input octet sets the limits and LITERAL+, the next four where the input is cut.
Documented outcome: events (Command, BadCommand, ContinuationNeeded, LiteralTooBig), never an
exception, and the same events however the bytes are split (design rule of the module). A
pause after a barrier command (AUTHENTICATE, IDLE, STARTTLS, ENABLE) is ended as IDLE ends:
the server waits for one whole line (``read_line``, e.g. ``DONE``), then calls ``resume``.
"""

from __future__ import annotations

from bench.fuzz.harness import Target, check, pieces
from mailserver.imap.grammar import (
    BadCommand,
    Command,
    CommandReader,
    ContinuationNeeded,
    LineTooLong,
    LiteralTooBig,
)

SEEDS = (
    b"\x00\x03\x09\x20\x40A1 LOGIN {5}\r\nalice {6+}\r\nsecret\r\nA2 SELECT INBOX\r\n",
    b"\x01\x00\x01\x02\x03A3 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n",
    b"\x02\x05\x06\x07\x08A4 APPEND INBOX (\\Seen) ~{3}\r\na\x00b\r\nA5 IDLE\r\nDONE\r\n",
    b"\x03\x10\x11\x12\x13A6 SEARCH CHARSET UTF-8 OR SUBJECT \"x\" NOT SEEN\r\n",
    b"\x00\x01\x01\x01\x01A7 AUTHENTICATE PLAIN\r\nAGFAYgBj\r\nA8 NOOP\r\n",
    b"\x00\x02\x02\x02\x02A9 STORE 1,3:5 +FLAGS.SILENT (\\Deleted) (UNCHANGEDSINCE 9)\r\n",
    b"\x00\x02\x02\x02\x02B1 LIST \"\" \"%\" RETURN (SUBSCRIBED CHILDREN)\r\n",
)

_EVENTS = (Command, BadCommand, ContinuationNeeded, LiteralTooBig)


def _run(mode: int, chunks: list[bytes]) -> list[object]:
    reader = CommandReader(
        max_line=64 if mode & 1 else 65_536,
        max_literal=32 if mode & 2 else 1_000_000,
        literal_plus=not mode & 4,
    )
    out: list[object] = []
    for chunk in chunks:
        out += reader.feed(chunk)
        while reader.paused:
            try:
                line = reader.read_line()
            except LineTooLong:
                out.append("line too long")
                continue
            if line is None:
                break  # wait for the rest of the line, still paused
            out.append(("line", line))
            out += reader.resume()
    return out


def one_input(data: bytes) -> None:
    if len(data) < 5:
        return
    mode, cuts, content = data[0], data[1:5], data[5:]
    whole = _run(mode, [content])
    for event in whole:
        check(isinstance(event, (*_EVENTS, tuple, str)), f"unexpected event {event!r}")
    check(_run(mode, pieces(content, cuts)) == whole, "events depend on the split")


TARGET = Target("imap_reader", one_input, SEEDS)
