"""POP3 command lines (``mailserver.pop3.grammar``): the line reader and the command parser.

Documented outcome: ``Line``/``BadLine`` events and ``Command``/``BadLine`` results, never an
exception, and the same events however the input is split.
"""

from __future__ import annotations

from bench.fuzz.harness import Target, check, pieces
from mailserver.pop3.grammar import BadLine, Command, Line, LineReader, parse_command

SEEDS = (
    b"\x05\x09\x20\x30USER alice\r\nPASS s e c\r\nTOP 1 5\r\n",
    b"\x01\x02\x03\x04AUTH PLAIN AGFAYgBj\r\nRETR\t1\r\nUIDL\n",
    b"\x00\x00\x00\x00" + b"x" * 100 + b"\r\nQUIT\r\n",
)


def _events(chunks: list[bytes]) -> list[object]:
    reader = LineReader(max_line=64)
    return [event for chunk in chunks for event in reader.feed(chunk)]


def one_input(data: bytes) -> None:
    if len(data) < 4:
        return
    cuts, content = data[:4], data[4:]
    whole = _events([content])
    check(_events(pieces(content, cuts)) == whole, "events depend on the split")
    for event in whole:
        check(isinstance(event, Line | BadLine), f"unexpected event {event!r}")
        if isinstance(event, Line):
            result = parse_command(event.data)
            check(isinstance(result, Command | BadLine), f"unexpected result {result!r}")


TARGET = Target("pop3_command", one_input, SEEDS)
