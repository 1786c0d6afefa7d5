"""``GET /admin/audit``: the newest audit records first, read backwards from the audit log's
files in the reactor's thread pool (this package may not import :mod:`mailserver.auth.audit`,
so the files are read here, the same way).
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterator
from typing import Any

from mailserver.web.api.admin_rules import READ_AUDIT, _one, in_thread, run
from mailserver.web.api.routing import Call, Problem

#: Audit records per answer of ``GET /admin/audit`` (default and most).
AUDIT_LIMIT, AUDIT_LIMIT_MAX = 50, 1000


def _log_files_newest_first(path: str) -> list[str]:
    """``path`` then ``path.1``, ``path.2``... (the rotation of ``auth.audit.AuditLog``)."""
    directory, base = os.path.split(path)
    try:
        names = os.listdir(directory or ".")
    except FileNotFoundError:
        return []
    numbers = sorted(int(n[len(base) + 1:]) for n in names
                     if n.startswith(base + ".") and n[len(base) + 1:].isdigit())
    found = [path] if base in names else []
    return found + [f"{path}.{n}" for n in numbers]


def _lines_backwards(path: str, block: int = 64 * 1024) -> Iterator[bytes]:
    """The lines of a file, last first, reading ``block`` bytes at a time."""
    try:
        source = open(path, "rb")
    except FileNotFoundError:
        return
    with source:
        position = source.seek(0, os.SEEK_END)
        rest = b""
        while position > 0:
            step = min(block, position)
            position -= step
            source.seek(position)
            lines = (source.read(step) + rest).split(b"\n")
            rest = lines.pop(0)
            yield from reversed(lines)
        yield rest


def read_audit(path: str, limit: int, user: str | None, event: str | None,
               before: float | None) -> list[dict[str, Any]]:
    """Blocking: up to ``limit`` records newest first, matching ``user`` (who; shell
    patterns, case-insensitive) and ``event`` (name or pattern), older than ``before``.
    Malformed lines are skipped, as ``auth.audit.read`` does."""
    found: list[dict[str, Any]] = []
    for name in _log_files_newest_first(path):
        for line in _lines_backwards(name):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or "event" not in record:
                continue
            if before is not None and float(record.get("epoch") or 0) >= before:
                continue
            if event is not None and not fnmatch.fnmatchcase(str(record["event"]), event):
                continue
            if user is not None and not fnmatch.fnmatch(str(record.get("who") or "").lower(),
                                                        user.lower()):
                continue
            found.append(record)
            if len(found) >= limit:
                return found
    return found


@run
async def list_audit(call: Call) -> Any:
    """The newest audit records first (``?limit=&user=&event=&before=``); ``next_before``
    pages on to older ones."""
    call.require(READ_AUDIT)
    log = getattr(call.context, "audit", None)
    if log is None:
        raise Problem(404, "No audit log", "this server keeps no audit log")
    limit = call.int_arg("limit", AUDIT_LIMIT, 1, AUDIT_LIMIT_MAX)
    before_text = _one(call, "before")
    try:
        before = None if before_text is None else float(before_text)
    except ValueError:
        raise Problem(400, "Invalid parameter", "before is epoch seconds") from None
    records = await in_thread(call, read_audit, log.path, limit, _one(call, "user"),
                               _one(call, "event"), before)
    more = len(records) == limit
    return {"records": records, "next_before": records[-1].get("epoch") if more else None}
