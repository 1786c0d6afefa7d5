"""Unguessable bytes for identifiers, read from the operating system in blocks.

Each message needs a few random bytes: the queue id in the 250 reply and the Received header,
the maildir file name, the index's object id. ``secrets.token_hex`` makes one ``getrandom``
system call per id, and on a busy server every system call is a moment where another thread
takes the GIL, so the caller waits to get it back (issue 3 measured it on the reactor thread).
:class:`RandomBlocks` reads ``os.urandom`` 4 KiB at a time and hands out slices of it: the
same kernel generator, one system call per few hundred ids.

Guarantees:

- Every byte handed out comes from ``os.urandom`` and is handed out once.
- Thread-safe: the pool threads and the reactor thread draw from one block.
- A forked child never reuses its parent's block (it is dropped in the child at fork).

For identifiers only. Secrets that guard access (passwords, tokens, keys) keep using
:mod:`secrets` directly, so that no unread key material sits in this process's memory.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

__all__ = ["RandomBlocks", "token_hex"]

#: Bytes read from the kernel at a time.
BLOCK = 4096


class RandomBlocks:
    """Random bytes from ``source`` (``os.urandom``), read ``block`` bytes at a time."""

    def __init__(self, block: int = BLOCK, source: Callable[[int], bytes] = os.urandom) -> None:
        self._block = block
        self._source = source
        self._lock = threading.Lock()
        self._buffer = b""
        self._at = 0

    def take(self, count: int) -> bytes:
        """``count`` bytes never handed out before."""
        with self._lock:
            start = self._at
            end = start + count
            if end > len(self._buffer):
                self._buffer = self._source(max(self._block, count))
                start, end = 0, count
            self._at = end
            return self._buffer[start:end]

    def forget(self) -> None:
        """Drop the unread rest of the block: called in a forked child, which has one
        thread, so the lock is replaced rather than taken (another thread of the parent may
        have held it at the fork)."""
        self._lock = threading.Lock()
        self._buffer = b""
        self._at = 0


_blocks = RandomBlocks()
os.register_at_fork(after_in_child=_blocks.forget)


def token_hex(count: int) -> str:
    """``count`` random bytes as ``2 * count`` lower-case hex digits (as
    :func:`secrets.token_hex`, for identifiers)."""
    return _blocks.take(count).hex()
