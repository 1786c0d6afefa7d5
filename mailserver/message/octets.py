"""How the lines of a byte range are laid out, for choosing the faster C-speed scan.

``bytes.replace`` of one octet finds each occurrence with ``memchr``: over long lines it is
several times faster than ``bytes.count``, which tests every position, and over dense line
ends (many empty or very short lines) about ten times slower. :func:`long_lines` tells the
two cases apart cheaply, so the DATA reader (``smtp/data.py``) and the MIME parser's line
counts (``message/mime.py``) pick the right one.
"""

from __future__ import annotations

__all__ = ["long_lines"]

#: Octets of each probe whose LFs are counted.
PROBE = 1024
#: The fewest octets per line, on average in every probe, for the lines to count as long.
LONG_LINE = 24


def long_lines(data: bytes, start: int = 0, end: int | None = None) -> bool:
    """Whether ``data[start:end]`` is at least four probes long and looks like lines of
    :data:`LONG_LINE` octets or more on average (probes at its start, middle and end)."""
    if end is None:
        end = len(data)
    most = PROBE // LONG_LINE
    return end - start >= 4 * PROBE and all(
        data.count(b"\n", at, at + PROBE) <= most
        for at in (start, (start + end - PROBE) // 2, end - PROBE)
    )
