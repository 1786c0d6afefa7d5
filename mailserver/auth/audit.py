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
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import ipaddress
import json
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

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

# --- vocabulary --------------------------------------------------------------------------

#: A login (any protocol, any mechanism) succeeded; ``details``: service, mechanism.
LOGIN_OK = "login_ok"
#: A login failed (wrong password or unknown account: the same event).
LOGIN_FAILED = "login_failed"
#: A password was set or changed (by the user or an admin).
PASSWORD_CHANGED = "password_changed"
#: An app password was added; ``details``: its label, never the password.
APP_PASSWORD_ADDED = "app_password_added"
#: An app password was revoked.
APP_PASSWORD_REVOKED = "app_password_revoked"
#: TOTP was enabled for an account.
TOTP_ENABLED = "totp_enabled"
#: TOTP was disabled for an account.
TOTP_DISABLED = "totp_disabled"
#: An administrative change (domain, user, alias, role...); ``details``: action, target.
ADMIN_ACTION = "admin_action"
#: A queue operation (flush, delete, bounce...); ``details``: action, message id.
QUEUE_ACTION = "queue_action"
#: A login attempt refused without checking it, because a throttle delay was running.
THROTTLED = "throttled"
#: An IP or an account was banned (``details``: reason "ip"/"account", until).
BANNED = "banned"

#: Every event name defined here (others may be recorded; names are ``[a-z0-9_.]+``).
EVENTS = (
    LOGIN_OK,
    LOGIN_FAILED,
    PASSWORD_CHANGED,
    APP_PASSWORD_ADDED,
    APP_PASSWORD_REVOKED,
    TOTP_ENABLED,
    TOTP_DISABLED,
    ADMIN_ACTION,
    QUEUE_ACTION,
    THROTTLED,
    BANNED,
)

#: Outcomes: it happened; it was attempted and failed; it was refused without trying.
OK = "ok"
FAILED = "failed"
REFUSED = "refused"
OUTCOMES = (OK, FAILED, REFUSED)

#: ``where`` for actions taken on the command line.
WHERE_CLI = "cli"

#: Strings in who, where and details are cut to this many characters (keeps lines short).
MAX_FIELD = 500

_NAME = re.compile(r"[a-z0-9_.]+")
_log = Logger()


# --- records -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditRecord:
    """One audit event, as stored on one line."""

    ts: str
    epoch: float
    event: str
    who: str | None
    where: str | None
    outcome: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The record as one line of JSON (no newline), ASCII only."""
        body = {
            "ts": self.ts,
            "epoch": self.epoch,
            "event": self.event,
            "who": self.who,
            "where": self.where,
            "outcome": self.outcome,
            "details": dict(self.details),
        }
        return json.dumps(body, ensure_ascii=True, separators=(",", ":"), default=str)

    @classmethod
    def from_json(cls, line: str | bytes) -> AuditRecord:
        """Parse one line; ValueError when it is not an audit record."""
        body = json.loads(line)
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        try:
            record = cls(
                ts=body["ts"],
                epoch=float(body["epoch"]),
                event=body["event"],
                who=body.get("who"),
                where=body.get("where"),
                outcome=body["outcome"],
                details=body.get("details") or {},
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"missing or bad field: {error}") from None
        texts = (record.ts, record.event, record.outcome)
        optional = (record.who, record.where)
        if not all(isinstance(t, str) for t in texts) or not all(
            o is None or isinstance(o, str) for o in optional
        ):
            raise ValueError("a field has the wrong type")
        if not isinstance(record.details, dict):
            raise ValueError("details is not an object")
        return record


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


# --- reading -----------------------------------------------------------------------------

#: Called with (file, line number, problem) for each line that is not a record.
OnBad = Callable[[str, int, str], None]


def _rotated_numbers(path: str) -> list[int]:
    """The N of each existing ``<path>.N``."""
    directory, base = os.path.split(path)
    try:
        names = os.listdir(directory or ".")
    except FileNotFoundError:
        return []
    prefix = base + "."
    return [
        int(name[len(prefix) :])
        for name in names
        if name.startswith(prefix) and name[len(prefix) :].isdigit()
    ]


def log_files(path: str) -> list[str]:
    """The existing files of the log at ``path``, oldest first: ``.N`` ... ``.1``, ``path``."""
    files = [f"{path}.{n}" for n in sorted(_rotated_numbers(path), reverse=True)]
    if os.path.exists(path):
        files.append(path)
    return files


def _parse_one(line: bytes, name: str, number: int, on_bad: OnBad | None) -> AuditRecord | None:
    """Line ``number`` of file ``name`` as a record; None (reported) when it is not one."""
    if not line.strip():
        return None
    try:
        return AuditRecord.from_json(line)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        if on_bad is not None:
            on_bad(name, number, str(error))
        return None


def _parse(lines: Iterable[bytes], name: str, on_bad: OnBad | None) -> Iterator[AuditRecord]:
    for number, line in enumerate(lines, 1):
        record = _parse_one(line, name, number, on_bad)
        if record is not None:
            yield record


def read(path: str, *, on_bad: OnBad | None = None) -> Iterator[AuditRecord]:
    """Every record of the log at ``path`` and its rotated files, oldest first.

    A file rotated away while being read is read under its new name; OSError (other than
    a file vanishing between listing and opening) propagates.
    """
    for name in log_files(path):
        try:
            source = open(name, "rb")
        except FileNotFoundError:
            continue
        with source:
            yield from _parse(source, name, on_bad)


def tail(path: str, count: int, *, on_bad: OnBad | None = None) -> list[AuditRecord]:
    """The last ``count`` records of the log, oldest first (reads newest files first)."""
    if count <= 0:
        return []
    found: deque[AuditRecord] = deque()
    for name in reversed(log_files(path)):
        try:
            with open(name, "rb") as source:
                records = list(_parse(source, name, on_bad))
        except FileNotFoundError:
            continue
        found.extendleft(reversed(records[-(count - len(found)) :]))
        if len(found) >= count:
            break
    return list(found)


@dataclass(frozen=True)
class Query:
    """Which records :func:`search` yields; every given criterion must hold.

    ``who`` and ``events`` are case-insensitive and may be shell patterns
    (``*@example.org``, ``login_*``); ``where`` is an address or a network (``10.0.0.0/8``);
    ``since``/``until`` are epoch seconds (inclusive/exclusive).
    """

    who: str | None = None
    events: tuple[str, ...] = ()
    where: str | None = None
    outcome: str | None = None
    since: float | None = None
    until: float | None = None

    def __post_init__(self) -> None:
        if self.where is not None:
            _network(self.where)  # ValueError now rather than per record

    def matches(self, record: AuditRecord) -> bool:
        """Whether ``record`` meets every criterion."""
        if self.since is not None and record.epoch < self.since:
            return False
        if self.until is not None and record.epoch >= self.until:
            return False
        if self.outcome is not None and record.outcome != self.outcome.lower():
            return False
        if self.events and not any(_like(record.event, e) for e in self.events):
            return False
        if self.who is not None and not _like(record.who or "", self.who):
            return False
        return self.where is None or _within(record.where, self.where)


def _like(value: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def _network(where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """``where`` as a network when it is an address or a CIDR network (host bits are
    ignored), None for a word (``cli``). ValueError for a malformed network."""
    try:
        return ipaddress.ip_network(where.strip().strip("[]"), strict=False)
    except ValueError:
        if "/" in where:
            raise ValueError(f"{where!r} is not a network such as 10.0.0.0/8") from None
        return None


def _within(value: str | None, where: str) -> bool:
    if value is None:
        return False
    network = _network(where)
    if network is None:
        return value.lower() == where.lower()
    try:
        address = ipaddress.ip_address(value.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.version == network.version and address in network


def search(path: str, query: Query, *, on_bad: OnBad | None = None) -> Iterator[AuditRecord]:
    """The records of the log at ``path`` that match ``query``, oldest first."""
    return (record for record in read(path, on_bad=on_bad) if query.matches(record))


def follow(
    path: str,
    *,
    sleep: Callable[[float], object] = time.sleep,
    interval: float = 0.5,
    on_bad: OnBad | None = None,
    start: int | None = None,
) -> Iterator[AuditRecord]:
    """Records appended to the log from now on, forever (``tail -f``), across rotations.

    "Now" is the end of the file when the generator first runs, or byte offset ``start`` when
    given: a caller that prints the last records first takes the offset before it reads them,
    so a record written in between is not lost (generators run late: the file is opened at the
    first ``next``). Polls every ``interval`` seconds with ``sleep``. When the path names a new
    file (it was rotated), the rest of the old file is read first and the new one from its start.
    """
    current = _open_at_end(path, start)
    pending = b""
    while True:
        chunk = current.read() if current is not None else b""
        if chunk:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                record = _parse_one(line, path, 0, on_bad)
                if record is not None:
                    yield record
            continue
        if current is not None and not _replaced(path, current):
            sleep(interval)
            continue
        if current is not None:  # rotated: a late writer may still have appended a line
            rest = pending + current.read()
            skipped = _rotated_since(path, current)
            current.close()
            for line in rest.split(b"\n"):
                record = _parse_one(line, path, 0, on_bad)
                if record is not None:
                    yield record
            for name in skipped:  # files filled and rotated between two polls
                with contextlib.suppress(FileNotFoundError), open(name, "rb") as source:
                    yield from _parse(source, name, on_bad)
        current, pending = _open_or_none(path), b""
        if current is None:
            sleep(interval)


def _open_at_end(path: str, start: int | None = None) -> Any:
    source = _open_or_none(path)
    if source is not None:
        if start is None or start > os.fstat(source.fileno()).st_size:
            source.seek(0, os.SEEK_END)
        else:
            source.seek(start)
    return source


def end_offset(path: str) -> int | None:
    """The log's current size, for :func:`follow`'s ``start`` (None when there is no log)."""
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return None


def _open_or_none(path: str) -> Any:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        return None


def _rotated_since(path: str, source: Any) -> list[str]:
    """The rotated files newer than the open (rotated-away) ``source``, oldest first."""
    mine = os.fstat(source.fileno())
    newer = []
    for number in sorted(_rotated_numbers(path)):
        name = f"{path}.{number}"
        try:
            status = os.stat(name)
        except FileNotFoundError:
            continue
        if (status.st_dev, status.st_ino) == (mine.st_dev, mine.st_ino):
            return list(reversed(newer))
        newer.append(name)
    return []  # ours was deleted (keep exceeded): cannot tell which files are new


def _replaced(path: str, source: Any) -> bool:
    """Whether ``path`` now names another file than the open ``source`` (or none)."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(source.fileno())
    return (status.st_dev, status.st_ino) != (mine.st_dev, mine.st_ino)
