"""``mailserver audit tail|search``: read the audit log (logins, changes, admin actions).

The log is ``[security] audit_log``, by default ``<data_dir>/audit/audit.jsonl`` and its
rotated files. Nothing here opens the storage, so it runs beside a live server.

Each record prints as one readable line: time (UTC), event, who, where, outcome, details
as ``key=value``; ``-`` stands for an empty field. Characters that are not printable are
escaped, so an attacker-chosen user name cannot send escape sequences to the terminal.
``--json`` prints the stored JSON lines instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from mailserver.auth.audit import (
    OUTCOMES,
    AuditRecord,
    Query,
    end_offset,
    follow,
    log_files,
    search,
    tail,
)
from mailserver.cli.common import add_config_option, load_config
from mailserver.cli.storage import CommandError, say_note

#: Seconds per ``--since`` duration unit.
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_TIME_HELP = "a duration (30m, 2h, 7d) or a time (2024-05-01, 2024-05-01T12:00Z; UTC if no zone)"


def register(subparsers: Any) -> None:
    """Add the ``audit`` noun and its verbs."""
    parser = subparsers.add_parser("audit", help="show or search the audit log")
    verbs = parser.add_subparsers(title="verbs", metavar="VERB", required=True)

    last = verbs.add_parser("tail", help="print the latest audit records")
    last.add_argument(
        "-n", "--lines", type=int, default=20, metavar="N", help="how many (default 20)"
    )
    last.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new records until Ctrl-C"
    )
    last.add_argument("--json", action="store_true", help="print the stored JSON lines")
    add_config_option(last)
    last.set_defaults(handler=tail_audit)

    find = verbs.add_parser("search", help="print the audit records matching all filters")
    find.add_argument("--who", metavar="X", help="account or admin; shell patterns work")
    find.add_argument(
        "--event",
        metavar="E",
        action="append",
        default=[],
        help="event name, e.g. login_failed or 'login_*' (repeat for any of several)",
    )
    find.add_argument("--since", metavar="WHEN", help=f"not before {_TIME_HELP}")
    find.add_argument("--until", metavar="WHEN", help=f"before {_TIME_HELP}")
    find.add_argument("--where", metavar="IP", help="client IP or network (10.0.0.0/8), or cli")
    find.add_argument("--outcome", metavar="O", help=f"one of {', '.join(OUTCOMES)}")
    find.add_argument("--json", action="store_true", help="print the stored JSON lines")
    add_config_option(find)
    find.set_defaults(handler=search_audit)


def tail_audit(args: argparse.Namespace) -> int:
    """Print the last ``-n`` records; with ``--follow`` keep printing new ones."""
    if args.lines < 0:
        raise CommandError(f"-n {args.lines} is negative; give a count such as -n 50")
    path = audit_path(args)
    if not args.follow:
        _require_log(path)
    show = _printer(args.json)
    bad = _BadLines()
    start = end_offset(path) if args.follow else None  # before the tail: nothing falls between
    try:
        for record in _reading(path, lambda: tail(path, args.lines, on_bad=bad)):
            show(record)
        if args.follow:
            sys.stdout.flush()
            for record in follow(path, on_bad=bad, start=start):
                show(record)
                sys.stdout.flush()
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        return _reader_gone()
    bad.report()
    return 0


def search_audit(args: argparse.Namespace) -> int:
    """Print every record matching all the given filters, oldest first."""
    now = time.time()
    try:
        query = Query(
            who=args.who,
            events=tuple(args.event),
            where=args.where,
            outcome=args.outcome,
            since=parse_when(args.since, now, "--since") if args.since else None,
            until=parse_when(args.until, now, "--until") if args.until else None,
        )
    except ValueError as error:
        raise CommandError(f"--where {error}; give an address or a network") from None
    if query.outcome is not None and query.outcome.lower() not in OUTCOMES:
        choices = ", ".join(OUTCOMES)
        raise CommandError(f"--outcome {args.outcome!r} is unknown; use one of {choices}")
    path = audit_path(args)
    _require_log(path)
    show = _printer(args.json)
    bad = _BadLines()
    try:
        for record in _reading(path, lambda: search(path, query, on_bad=bad)):
            show(record)
    except BrokenPipeError:
        return _reader_gone()
    bad.report()
    return 0


def audit_path(args: argparse.Namespace) -> str:
    """The audit log file named by the config."""
    config = load_config(args)
    return config.security.audit_path(config.server.data_path)


def parse_when(text: str, now: float, option: str) -> float:
    """``text`` (a duration back from ``now`` or an ISO-8601 time) as epoch seconds."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match:
        return now - float(match.group(1)) * UNITS[match.group(2)]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CommandError(f"{option} {text!r} is not {_TIME_HELP}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def format_record(record: AuditRecord) -> str:
    """One readable line: time, event, who, where, outcome, details."""
    when = datetime.fromtimestamp(record.epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    details = " ".join(f"{_safe(str(k))}={_value(v)}" for k, v in record.details.items())
    fields = [
        when,
        f"{_safe(record.event):<20}",
        _safe(record.who or "-"),
        _safe(record.where or "-"),
        _safe(record.outcome),
    ]
    return "  ".join(fields + ([details] if details else []))


def _value(value: Any) -> str:
    """A details value: bare when it is a simple word, else JSON."""
    if isinstance(value, str) and value and re.fullmatch(r"[\w@.:/+-]+", value):
        return _safe(value)
    return _safe(json.dumps(value, ensure_ascii=False, default=str))


def _safe(text: str) -> str:
    """``text`` with every non-printable character escaped (no terminal control)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _printer(raw: bool) -> Callable[[AuditRecord], None]:
    if raw:
        return lambda record: print(record.to_json())
    return lambda record: print(format_record(record))


def _reader_gone() -> int:
    """stdout's reader left (``| head``): stop quietly, with nothing left to flush."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 0


def _require_log(path: str) -> None:
    if not log_files(path):
        raise CommandError(
            f"no audit log at {path}; the server writes it at the first login or admin "
            "action (set [security] audit_log if it is elsewhere)"
        )


def _reading(path: str, records: Callable[[], Iterable[AuditRecord]]) -> Iterable[AuditRecord]:
    """``records()`` with OSError turned into one line naming the file and what to do."""
    try:
        yield from records()
    except OSError as error:
        name = error.filename or path
        raise CommandError(
            f"cannot read {name}: {error.strerror or error}; run as the server's user or "
            "check [security] audit_log"
        ) from None


class _BadLines:
    """Counts malformed lines; one note at the end rather than one per line."""

    def __init__(self) -> None:
        self.count = 0
        self.first = ""

    def __call__(self, name: str, number: int, problem: str) -> None:
        self.count += 1
        if not self.first:
            self.first = f"{name}:{number}" if number else name

    def report(self) -> None:
        if self.count:
            say_note(
                f"skipped {self.count} malformed line(s), first at {self.first}; "
                "the log may have been edited or cut by a crash"
            )
