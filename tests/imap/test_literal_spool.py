"""Large APPEND literals go to a temporary file as they arrive, never into memory (issue
12: memory bounds per connection); grammar design rule 4."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import BinaryIO

import pytest

from mailserver.imap.grammar import (
    BadCommand,
    Command,
    CommandReader,
    ContinuationNeeded,
    close_spooled,
)
from mailserver.imap.parse_mailbox import Append
from mailserver.imap.scanner import SpooledLiteral

THRESHOLD = 1024


class Spool:
    """A spool factory that makes real temporary files in ``directory`` and remembers them."""

    def __init__(self, directory: Path, fail: bool = False) -> None:
        self.directory = directory
        self.files: list[BinaryIO] = []
        self.fail = fail

    def __call__(self) -> BinaryIO:
        if self.fail:
            raise OSError(28, "No space left on device")
        handle = tempfile.TemporaryFile(dir=self.directory)
        self.files.append(handle)
        return handle


def _reader(spool: Spool) -> CommandReader:
    return CommandReader(spool_threshold=THRESHOLD, spool=spool)


def _feed_in_pieces(reader: CommandReader, data: bytes, seed: int) -> list[object]:
    rnd = random.Random(seed)
    events: list[object] = []
    pos = 0
    while pos < len(data):
        step = rnd.randrange(1, 5000)
        events += reader.feed(data[pos : pos + step])
        pos += step
    return events


@pytest.mark.parametrize("marker", [b"{%d}", b"{%d+}", b"~{%d}"], ids=["sync", "plus", "lit8"])
def test_large_append_literal_arrives_as_a_file(tmp_path: Path, marker: bytes) -> None:
    """An APPEND literal over the threshold becomes a SpooledLiteral whose file holds exactly
    its octets, whatever the split of the input; the command continues after it, and the
    reader keeps none of the literal in memory."""
    message = random.Random(1).randbytes(50_000).replace(b"\x00", b"\x01")
    for seed in range(3):
        spool = Spool(tmp_path)
        reader = _reader(spool)
        head = b"A1 APPEND INBOX (\\Seen) " + marker % len(message) + b"\r\n"
        events = _feed_in_pieces(reader, head + message + b"\r\nA2 NOOP\r\n", seed)
        events = [e for e in events if not isinstance(e, ContinuationNeeded)]
        assert len(events) == 2 and events[1] == Command("A2", "NOOP")
        command = events[0]
        assert isinstance(command, Command) and isinstance(command.args, Append)
        literal = command.args.message
        assert isinstance(literal, SpooledLiteral)
        assert literal.size == len(message) and literal.source is spool.files[0]
        assert command.args.flags == ("\\Seen",) and command.args.binary == marker.startswith(b"~")
        literal.source.seek(0)
        assert literal.source.read() == message
        assert reader.buffered == 0
        literal.close()


def test_small_append_literal_stays_in_memory(tmp_path: Path) -> None:
    """A literal up to the threshold is ordinary bytes, and no file is made."""
    spool = Spool(tmp_path)
    message = b"x" * THRESHOLD
    events = _reader(spool).feed(b"A1 APPEND INBOX {%d+}\r\n" % THRESHOLD + message + b"\r\n")
    assert events == [Command("A1", "APPEND", Append("INBOX", message=message))]
    assert spool.files == []


def test_nul_in_spooled_plain_literal_is_bad_and_file_closed(tmp_path: Path) -> None:
    """NUL is refused in a spooled {n} literal as in memory (RFC 9051 §4.3: literal8 only),
    and the file is closed."""
    spool = Spool(tmp_path)
    message = b"a" * 2000 + b"\x00" + b"b" * 2000
    events = _reader(spool).feed(b"A1 APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n")
    assert len(events) == 1 and isinstance(events[0], BadCommand)
    assert events[0].tag == "A1" and "NUL" in events[0].reason
    assert spool.files[0].closed


def test_bad_append_after_spooled_literal_closes_the_file(tmp_path: Path) -> None:
    """A command that turns out bad after its literal was spooled closes the file."""
    spool = Spool(tmp_path)
    message = b"m" * 5000
    data = b"A1 APPEND INBOX {%d+}\r\n" % len(message) + message + b" junk\r\n"
    events = _reader(spool).feed(data)
    assert len(events) == 1 and isinstance(events[0], BadCommand)
    assert spool.files[0].closed


def test_close_mid_literal_closes_the_file(tmp_path: Path) -> None:
    """A connection lost in the middle of a spooled literal leaves no open file."""
    spool = Spool(tmp_path)
    reader = _reader(spool)
    reader.feed(b"A1 APPEND INBOX {100000+}\r\n" + b"z" * 30_000)
    assert not spool.files[0].closed
    reader.close()
    assert spool.files[0].closed


def test_spool_failure_fails_the_command_and_the_session_goes_on(tmp_path: Path) -> None:
    """When no spool file can be made (disk full), the APPEND is answered BAD [UNAVAILABLE]
    after its literal, and the next command is read normally."""
    spool = Spool(tmp_path, fail=True)
    message = b"q" * 5000
    data = b"A1 APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\nA2 NOOP\r\n"
    events = _reader(spool).feed(data)
    assert len(events) == 2
    assert isinstance(events[0], BadCommand) and events[0].code == "UNAVAILABLE"
    assert events[1] == Command("A2", "NOOP")


def test_large_literal_outside_append_is_not_spooled(tmp_path: Path) -> None:
    """Only APPEND messages are spooled; any other literal is bytes (bounded by
    max_literal)."""
    spool = Spool(tmp_path)
    name = b"n" * 3000
    events = _reader(spool).feed(b"A1 SELECT {3000+}\r\n" + name + b"\r\n")
    assert len(events) == 1 and isinstance(events[0], Command)
    assert spool.files == []


def test_close_spooled_closes_the_literals_of_unhandled_commands(tmp_path: Path) -> None:
    """Commands parsed ahead but never handled (the connection went away) give their spooled
    literals back: close_spooled closes each file and leaves other events alone."""
    spool = Spool(tmp_path)
    message = b"p" * 5000
    data = b"A1 NOOP\r\nA2 APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n"
    events = _reader(spool).feed(data)
    assert len(events) == 2 and not spool.files[0].closed
    close_spooled(events)
    assert spool.files[0].closed
