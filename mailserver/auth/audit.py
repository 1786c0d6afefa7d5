"""The audit log: who did what, from where and when, as append-only JSON lines.

Each security-relevant event (logins and their failures, password, app-password and TOTP
changes, admin and queue actions, throttling) becomes ONE line of JSON::

    {"ts": "2024-05-01T12:00:00.123Z", "epoch": 1714564800.123, "event": "login_failed",
     "who": "alice@example.org", "where": "203.0.113.9", "outcome": "failed",
     "details": {"service": "submission", "mechanism": "PLAIN"}}

``ts`` is ISO-8601 UTC and ``epoch`` the same instant in seconds, both from the injected
clock; ``who`` is the account (canonical address) or admin, ``where`` the client IP or
:data:`WHERE_CLI`; ``details`` holds the rest. Never put a secret in it (a password, app
password, TOTP code or token): the log is for reading by operators. Lines are written with
``ensure_ascii`` (control and non-ASCII characters escaped), so printing the raw file to a
terminal cannot inject escape sequences.

Writing (:class:`AuditLog`):

- The file is opened with ``O_APPEND`` (mode 0600) and each record is one ``write(2)`` of one
  short line (details strings are cut to :data:`MAX_FIELD` characters). On a local file
  system such appends are atomic per line, so the server and CLI processes can append to
  the same file without interleaving (not on NFS).
- Nothing is buffered in the process: a line is in the kernel when :meth:`AuditLog.record`
  returns and survives a crash of the process. With ``fsync=True`` it is also fsynced and
  survives a power loss, at the cost of a disk flush per event; off by default, like the
  system logs, because every failed login would cost one.
- Rotation is by size, never in place: when the next line would take the file past
  ``max_bytes``, ``audit.jsonl.(N-1)`` is renamed to ``.N`` ... ``audit.jsonl`` to ``.1`` and
  a new file is started; ``keep`` rotated files are kept. Rotation holds an ``flock`` on
  ``<path>.lock`` so two processes do not rotate twice, and each writer notices (by inode)
  that the file was rotated under it and reopens.
- :meth:`AuditLog.record` is thread-safe (a lock) and blocking; use it from the CLI and from
  worker threads. On the reactor thread use :meth:`AuditLog.submit`: without fsync it writes
  the line at once (one small write, cheap enough for the reactor); with fsync it does the
  write and the flush in the reactor's thread pool. It never fails: an error is logged.

Reading: :func:`read` iterates the records of all files, oldest file first, which is time
order (two processes writing in the same millisecond may appear swapped). :func:`tail`,
:func:`search` with a :class:`Query`, and :func:`follow` build on it. A malformed line (a
torn write after a power loss, an edit) is skipped and reported to ``on_bad``.

This module writes; reading is in :mod:`mailserver.auth.audit_read`, the vocabulary and
:class:`AuditRecord` in :mod:`mailserver.auth.audit_records`. Every name is importable here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

# Reading and the records live in these modules; their public names stay importable from here.
from mailserver.auth.audit_read import (  # noqa: F401
    OnBad,
    Query,
    _rotated_numbers,
    end_offset,
    follow,
    log_files,
    read,
    search,
    tail,
)
from mailserver.auth.audit_records import (
    ADMIN_ACTION,
    APP_PASSWORD_ADDED,
    APP_PASSWORD_REVOKED,
    BANNED,
    EVENTS,
    FAILED,
    LOGIN_FAILED,
    LOGIN_OK,
    MAX_FIELD,
    OK,
    OUTCOMES,
    PASSWORD_CHANGED,
    QUEUE_ACTION,
    REFUSED,
    THROTTLED,
    TOTP_DISABLED,
    TOTP_ENABLED,
    WHERE_CLI,
    AuditRecord,
)
from mailserver.durable import fsync_directory

__all__ = [
    "ADMIN_ACTION",
    "APP_PASSWORD_ADDED",
    "APP_PASSWORD_REVOKED",
    "BANNED",
    "EVENTS",
    "FAILED",
    "LOGIN_FAILED",
    "LOGIN_OK",
    "MAX_FIELD",
    "OK",
    "OUTCOMES",
    "PASSWORD_CHANGED",
    "QUEUE_ACTION",
    "REFUSED",
    "THROTTLED",
    "TOTP_DISABLED",
    "TOTP_ENABLED",
    "WHERE_CLI",
    "AuditLog",
    "AuditRecord",
    "Query",
    "follow",
    "log_files",
    "read",
    "search",
    "tail",
]

_NAME = re.compile(r"[a-z0-9_.]+")
_log = Logger()


def _iso(epoch: float) -> str:
    """``epoch`` as ISO-8601 UTC with milliseconds and a ``Z``."""
    stamp = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _cut(value: Any) -> Any:
    """Strings longer than :data:`MAX_FIELD` cut (recursively in lists and dicts)."""
    if isinstance(value, str):
        return value if len(value) <= MAX_FIELD else value[: MAX_FIELD - 3] + "..."
    if isinstance(value, Mapping):
        return {str(k)[:MAX_FIELD]: _cut(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_cut(v) for v in value]
    return value


class _WallClock:
    """``seconds()`` from the system clock, for a log used outside a reactor (the CLI)."""

    def seconds(self) -> float:
        return time.time()


# --- writing -----------------------------------------------------------------------------


class AuditLog:
    """Appends audit records to ``path`` (see the module docstring for the guarantees).

    ``clock`` stamps the records (the reactor in the server; default: the system clock).
    ``max_bytes`` and ``keep`` set the rotation, ``fsync`` whether each line is flushed
    to disk. The file and its directory (0700) are created on the first record.
    """

    def __init__(
        self,
        path: str,
        clock: IReactorTime | None = None,
        max_bytes: int = 10 * 1024 * 1024,
        keep: int = 10,
        fsync: bool = False,
    ) -> None:
        if max_bytes <= 0 or keep < 1:
            raise ValueError("max_bytes must be > 0 and keep >= 1")
        self.path = os.path.abspath(path)
        self.clock: Any = clock if clock is not None else _WallClock()
        self.max_bytes = max_bytes
        self.keep = keep
        self.fsync = fsync
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None

    def record(
        self,
        event: str,
        *,
        who: str | None,
        where: str | None,
        outcome: str,
        **details: Any,
    ) -> AuditRecord:
        """Append one record and return it. Blocking and thread-safe; raises OSError when
        the log cannot be written and ValueError for a malformed event or outcome name."""
        record = self._make(event, who, where, outcome, details)
        self._append((record.to_json() + "\n").encode("ascii"))
        return record

    def submit(
        self,
        event: str,
        *,
        who: str | None,
        where: str | None,
        outcome: str,
        **details: Any,
    ) -> Deferred[AuditRecord | None]:
        """:meth:`record` for the reactor thread: never blocks on a disk flush, never fails.

        Without fsync the line is written at once; with fsync, when the clock is a reactor
        with threads, the write runs in its thread pool. The Deferred fires with the record,
        or with None after logging the error (a broken audit log must not break logins).
        """
        if self.fsync and IReactorThreads.providedBy(self.clock):
            pool = self.clock.getThreadPool()
            working = deferToThreadPool(
                self.clock, pool, self._record_kw, event, who, where, outcome, details
            )
        else:
            try:
                working = succeed(self._record_kw(event, who, where, outcome, details))
            except Exception as error:
                working = Deferred()
                working.errback(error)

        def report(failure: Any) -> None:
            _log.failure("cannot write the audit log {path}", failure, path=self.path)
            return None

        return working.addErrback(report)

    def close(self) -> None:
        """Close the file (a later record opens it again)."""
        with self._lock:
            self._close()

    # --- internals -------------------------------------------------------------------------

    def _record_kw(
        self, event: str, who: str | None, where: str | None, outcome: str, details: dict
    ) -> AuditRecord:
        return self.record(event, who=who, where=where, outcome=outcome, **details)

    def _make(
        self,
        event: str,
        who: str | None,
        where: str | None,
        outcome: str,
        details: Mapping[str, Any],
    ) -> AuditRecord:
        for what, name in (("event", event), ("outcome", outcome)):
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise ValueError(f"audit {what} must match [a-z0-9_.]+, got {name!r}")
        epoch = float(self.clock.seconds())
        return AuditRecord(
            ts=_iso(epoch),
            epoch=round(epoch, 6),
            event=event,
            who=_cut(who),
            where=_cut(where),
            outcome=outcome,
            details=_cut(dict(details)),
        )

    def _append(self, data: bytes) -> None:
        with self._lock:
            self._open_current()
            assert self._fd is not None
            size = os.fstat(self._fd).st_size
            if size and size + len(data) > self.max_bytes:
                self._rotate(len(data))
                assert self._fd is not None
            view = memoryview(data)
            while view:  # one write in practice; a short write continues the same line
                written = os.write(self._fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(self._fd)

    def _open_current(self) -> None:
        """Make ``_fd`` the file now at ``path``: open it, or reopen after a rotation by
        another process (or a deletion) changed what the path names."""
        try:
            status = os.stat(self.path)
            identity: tuple[int, int] | None = (status.st_dev, status.st_ino)
        except FileNotFoundError:
            identity = None
        if self._fd is not None and identity == self._identity:
            return
        self._close()
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        status = os.fstat(fd)
        self._fd, self._identity = fd, (status.st_dev, status.st_ino)
        if identity is None and self.fsync:
            fsync_directory(directory)

    def _rotate(self, incoming: int) -> None:
        """Rename the chain one step older and start a new file, under the rotation lock."""
        with _flocked(self.path + ".lock"):
            self._open_current()  # another process may have rotated already
            assert self._fd is not None
            size = os.fstat(self._fd).st_size
            if not size or size + incoming <= self.max_bytes:
                return
            for number in sorted(_rotated_numbers(self.path), reverse=True):
                if number >= self.keep:
                    os.unlink(f"{self.path}.{number}")
                else:
                    os.replace(f"{self.path}.{number}", f"{self.path}.{number + 1}")
            os.replace(self.path, f"{self.path}.1")
            self._open_current()
            if self.fsync:
                fsync_directory(os.path.dirname(self.path))

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._identity = None, None


@contextlib.contextmanager
def _flocked(path: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created 0600) for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
