"""The ``spam_classifications`` log: every classifier verdict and every user report.

Design rules:

1. Append-only, keyed by time (milliseconds, big-endian) plus 8 random bytes, so entries of
   the same millisecond never collide and a cursor walk is in time order; the newest are
   read by walking backwards, never by loading the table.
2. One entry is a JSON object: ``source`` (``filter`` for a verdict at delivery, ``user``
   for a judgement through IMAP or the API), ``message_id``, ``recipients``, ``score``,
   ``is_spam``, ``classifier``, ``reasons`` and, for the filter, ``action`` and ``rules``.
3. Writes go through the index's group commit (``db.write``), off the reactor; they are a
   record, not part of the delivery, so a failed write is logged and the mail goes on.
4. Bounded: ``max_entries`` (oldest dropped first, a few at a time on write).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from mailserver.db import Database, Txn
from mailserver.db.schema import dump, load

__all__ = ["ClassificationLog"]

TABLE = b"spam_classifications"
#: Entries dropped per write once the log is full (keeps each write's work bounded).
PRUNE_STEP = 16


class ClassificationLog:
    """Records and reads classifications; ``clock`` gives seconds (an IReactorTime)."""

    def __init__(
        self,
        db: Database,
        clock: Any,
        *,
        max_entries: int = 100_000,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.db = db
        self.clock = clock
        self.max_entries = max_entries
        self.random = random

    def record(self, entry: dict[str, Any]) -> Deferred[None]:
        """Append ``entry`` (rule 2), stamped with ``time``."""
        now = self.clock.seconds()
        entry = {"time": round(now, 3), **entry}
        key = struct.pack(">Q", int(now * 1000)) + self.random(8)
        value = dump(entry)
        limit = self.max_entries

        def op(txn: Txn) -> None:
            txn.put(TABLE, key, value)
            if txn.count(TABLE) > limit:
                for old in _oldest(txn, PRUNE_STEP):
                    txn.delete(TABLE, old)

        return self.db.write(op)

    def recent(
        self, limit: int = 50, *, message_id: str | None = None, address: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest entries first, at most ``limit``, optionally only those of one
        Message-ID or one recipient (a backward walk that stops at ``limit`` matches)."""
        found: list[dict[str, Any]] = []
        with self.db.read() as txn:
            cursor = txn.raw.cursor(db=txn.dbs[TABLE])
            if not cursor.last():
                return found
            for _key, raw in cursor.iterprev():
                entry = load(bytes(raw))
                if message_id is not None and entry.get("message_id") != message_id:
                    continue
                if address is not None and address not in entry.get("recipients", ()):
                    continue
                found.append(entry)
                if len(found) >= limit:
                    break
        return found


def _oldest(txn: Txn, n: int) -> list[bytes]:
    """The keys of the ``n`` oldest entries."""
    keys: list[bytes] = []
    for key, _value in txn.prefix(TABLE, b""):
        keys.append(key)
        if len(keys) >= n:
            break
    return keys
