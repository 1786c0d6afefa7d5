"""Reading the audit log: its files (:func:`log_files`), :func:`read` and :func:`tail`,
:func:`search` with a :class:`Query`, and :func:`follow` for new records as they are written.

:func:`read` iterates the records of all files, oldest file first, which is time order. A
malformed line (a torn write after a power loss, an edit) is skipped and reported to
``on_bad``. See :mod:`mailserver.auth.audit` for the format; every public name here is
re-exported there.
"""

from __future__ import annotations

import contextlib
import fnmatch
import ipaddress
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from mailserver.auth.audit_records import AuditRecord

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
