"""Durable file writes: the one place that owns temp file, fsync, rename, fsync directory.

Maildir delivery and (later) the spool both use it (DESIGN decision 5). Every function here
blocks: call it from a worker thread, never from the reactor thread. A write that fails for
lack of space (ENOSPC, EDQUOT) leaves nothing behind and raises
:class:`mailserver.diskspace.InsufficientStorage` (452 4.3.1: the peer tries again later).
"""

from __future__ import annotations

import os
import shutil
from typing import BinaryIO

from mailserver.diskspace import InsufficientStorage, out_of_space

#: Copy in chunks of this size, so a large message never sits whole in memory.
CHUNK = 1 << 16


def fsync_directory(path: str) -> None:
    """Make the directory entries of ``path`` (creations, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new(
    path: str,
    source: BinaryIO | bytes,
    *,
    prefix: bytes = b"",
    fsync: bool = True,
    mode: int = 0o600,
) -> int:
    """Create ``path`` (which must not exist) with ``prefix`` followed by ``source``'s bytes,
    fsync it, and return the number of bytes written. On any failure the partial file is
    removed and the error re-raised (ENOSPC/EDQUOT as InsufficientStorage). The directory
    entry is NOT yet durable: rename it into place and call :func:`fsync_directory` (or use
    :func:`publish`)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    if isinstance(source, bytes):  # straight to the descriptor: no buffered file object
        try:
            try:
                size = _write_all(fd, prefix) + _write_all(fd, source)
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException as error:
            _remove_partial(path, error)
            raise
        return size
    try:
        with os.fdopen(fd, "wb", closefd=True) as out:
            out.write(prefix)
            if isinstance(source, bytes):
                out.write(source)
            else:
                shutil.copyfileobj(source, out, CHUNK)
            out.flush()
            size = out.tell()
            if fsync:
                os.fsync(out.fileno())
    except BaseException as error:
        _remove_partial(path, error)
        raise
    return size


def _write_all(fd: int, data: bytes) -> int:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less); its length."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return len(data)


def _remove_partial(path: str, error: BaseException) -> None:
    """Remove the partial file ``path`` after ``error``; raise InsufficientStorage for lack
    of space (the caller re-raises any other error)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    if out_of_space(error):
        raise InsufficientStorage(detail=f"writing {path}: {error}") from error


def publish(temporary: str, final: str, *, fsync: bool = True) -> None:
    """Atomically rename ``temporary`` to ``final`` and make the rename durable (RFC-less but
    classic maildir rule: a reader sees either nothing or the whole file)."""
    os.rename(temporary, final)
    if fsync:
        fsync_directory(os.path.dirname(final) or ".")


def link_into(existing: str, final: str, *, fsync: bool = True) -> None:
    """Give ``existing`` a second name ``final`` (a hard link: no second copy of the bytes)
    and make the new entry durable. Falls back to a durable copy across file systems."""
    try:
        os.link(existing, final)
    except OSError as e:
        if e.errno not in (18, 1, 95):  # EXDEV, EPERM, EOPNOTSUPP
            raise
        temporary = final + ".copy"
        with open(existing, "rb") as source:
            write_new(temporary, source, fsync=fsync)
        os.rename(temporary, final)
    if fsync:
        fsync_directory(os.path.dirname(final) or ".")


def write_atomically(path: str, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new content."""
    temporary = f"{path}.tmp.{os.getpid()}"
    try:
        os.unlink(temporary)
    except FileNotFoundError:
        pass
    write_new(temporary, data, mode=mode)
    publish(temporary, path)
