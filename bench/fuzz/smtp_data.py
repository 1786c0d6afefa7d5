"""The DATA and BDAT content readers (``mailserver.smtp.data``).

The first input octet chooses the mode (reject or normalise bare newlines, limits on or off)
and the next four octets where the content is cut. Documented outcome: an ``Outcome``, which
must not depend on the cuts; nor must the bytes after the end of data and the size (unless
the content had a bare newline, after which the session closes) or the stored message (when
the outcome is OK).
"""

from __future__ import annotations

import io

from bench.fuzz.harness import Target, check, pieces
from mailserver.smtp.data import BdatState, ChunkReader, DataReader, Outcome

SEEDS = (
    b"\x00\x05\x10\x20\x30Subject: x\r\n\r\nbody\r\n..dot\r\n.\r\nQUIT\r\n",
    b"\x01\x01\x02\x03\x04a\n.\nMAIL FROM:<x@y>\r\n.\r\n",
    b"\x02\x00\x00\x00\x00line\r.\r\nmore\r\n.\r\n",
    b"\x03\x07\x07\x07\x07" + b"x" * 1100 + b"\r\n.\r\n",
)


def _data(content: list[bytes], mode: int) -> tuple[object, ...]:
    sink = io.BytesIO()
    reader = DataReader(
        sink,
        max_size=200 if mode & 2 else 0,
        max_line=1000 if mode & 2 else 0,
        bare_newline="normalize" if mode & 1 else "reject",
    )
    rest: bytes | None = None
    for index, piece in enumerate(content):
        rest = reader.feed(piece)
        if rest is not None:  # what follows the end: the rest of this piece and the others
            rest += b"".join(content[index + 1 :])
            break
    return _compared(reader.outcome, rest, sink.getvalue(), reader.size)


def _compared(outcome: Outcome, rest: bytes | None, stored: bytes, size: int) -> tuple[object, ...]:
    """What the module promises not to depend on the split: the outcome; the leftover and
    the size unless the content had a bare newline (the session then closes: nothing after it
    is read); the stored bytes when the outcome is OK (otherwise nothing is delivered)."""
    bare = outcome is Outcome.BARE_NEWLINE
    return (
        outcome,
        None if bare else rest,
        None if bare else size,
        # Until the end of the content the outcome is not final (a size limit may still be
        # passed), so what was stored so far is compared only for complete content.
        stored if outcome is Outcome.OK and rest is not None else None,
    )


def _bdat(content: list[bytes], mode: int, size: int) -> tuple[object, ...]:
    sink = io.BytesIO()
    reader = ChunkReader(
        sink,
        size,
        binary=bool(mode & 4),
        bare_newline="normalize" if mode & 1 else "reject",
        state=BdatState(),
        last=True,
    )
    rest: bytes | None = None
    for index, piece in enumerate(content):
        rest = reader.feed(piece)
        if rest is not None:  # what follows the end: the rest of this piece and the others
            rest += b"".join(content[index + 1 :])
            break
    return _compared(reader.outcome, rest, sink.getvalue(), reader.size)


def one_input(data: bytes) -> None:
    if len(data) < 5:
        return
    mode, cuts, content = data[0], data[1:5], data[5:]
    whole = _data([content], mode)
    check(_data(pieces(content, cuts), mode) == whole, "DATA result depends on the split")
    check(_data([content[i : i + 1] for i in range(len(content))] or [b""], mode) == whole,
          "DATA result differs fed byte by byte")  # fmt: skip
    size = cuts[0] % (len(content) + 1)
    chunk = _bdat([content], mode, size)
    check(_bdat(pieces(content, cuts[1:]), mode, size) == chunk, "BDAT depends on the split")


TARGET = Target("smtp_data", one_input, SEEDS)
