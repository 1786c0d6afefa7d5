"""The message trace log: bounded, indexed records of what happened to each message.

Design rules:

1. A record is a JSON object ``{kind, time, keys, ...}`` in the ``trace`` sub-db under
   ``time ms (u64) + sequence (u32) + 4 random bytes``: time order, then the order of
   :meth:`TraceLog.add` within a millisecond; records of a restarted process in the same
   millisecond do not collide.
   ``keys`` lists what the record names: ``m:<Message-ID>`` (without angle brackets),
   ``q:<queue id>`` (a spool entry, or the id an SMTP transaction gets at MAIL, which its
   250 reply and Received field show and ``Envelope.queue_id`` carries to the filter, the
   store and the spool, so their records join even when the message has no Message-ID)
   and ``s:<session id>`` (an SMTP connection).
2. Each key has one ``trace_keys`` entry per record: ``kind letter + 16 bytes of SHA-256 of
   the value + record key`` (fixed length whatever the value's length). A look-up is a
   prefix walk of that index, never a scan of the log; :meth:`TraceLog.find` follows the
   ``m`` and ``q`` keys of the records it finds (a few hops, up to a record limit),
   so a queue id finds the session that accepted the message and a Message-ID finds its
   delivery attempts and DSNs. Session keys are only a starting point (a session may carry
   many messages).
3. Writes are batched: :meth:`TraceLog.add` only appends to memory; one index write (one
   group commit, one fsync) takes every pending record, ``flush_interval`` seconds after
   the first or as soon as :attr:`TraceLog.batch` are waiting; one write at a time.
   Durability is therefore weaker than the mail's: a crash loses the records of the last
   ``flush_interval`` seconds (the mail itself is not affected). While writing lags, at
   most ``max_pending`` records wait; beyond that the oldest are dropped and counted
   (``stats()["dropped"]``), never blocking the reactor. Records not yet written are
   still found by :meth:`TraceLog.find`.
4. Bounded: a timer (``prune_interval``) deletes records older than ``max_age`` seconds and
   the oldest beyond ``max_records``, at most :data:`PRUNE_BATCH` per index write (another
   write follows at once while more are due), with their index entries: work per write is
   bounded, and nothing walks the log per message.
5. Time comes from the injected clock (``IReactorTime``): records and pruning are tested
   with ``task.Clock``.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailserver.db import Database, Txn
from mailserver.db.schema import dump, load
from mailserver.interfaces import ITraceLog

__all__ = ["PRUNE_BATCH", "TraceLog", "key_of", "normalise_message_id"]

log = Logger(namespace="mailserver.trace")

TABLE = b"trace"
INDEX = b"trace_keys"
#: Records deleted at most per pruning write.
PRUNE_BATCH = 2000
#: Kinds of key that :meth:`TraceLog.find` follows from one record to the next (rule 2).
LINKS = ("m", "q")
#: Hops from the queried key at most.
MAX_HOPS = 4
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_RECORD_KEY = 16


def normalise_message_id(message_id: str) -> str:
    """A Message-ID without surrounding whitespace and angle brackets."""
    text = message_id.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    return text


def key_of(kind: str, value: str) -> str:
    """The ``kind:value`` key of a record (queue and session ids in upper case)."""
    if kind == "m":
        value = normalise_message_id(value)
    elif kind in ("q", "s"):
        value = value.strip().upper()
    return f"{kind}:{value}"


def _index_prefix(key: str) -> bytes:
    kind, _, value = key.partition(":")
    return kind.encode("ascii")[:1] + hashlib.sha256(value.encode("utf-8")).digest()[:16]


@implementer(ITraceLog)
class TraceLog:
    """The trace log over ``db`` (rules above); ``clock`` is an IReactorTime."""

    def __init__(
        self,
        db: Database,
        clock: Any,
        *,
        max_age: float = 30 * 86400.0,
        max_records: int = 1_000_000,
        flush_interval: float = 1.0,
        prune_interval: float = 3600.0,
        batch: int = 500,
        max_pending: int = 20_000,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.db = db
        self.clock = clock
        self.max_age = max_age
        self.max_records = max_records
        self.flush_interval = flush_interval
        self.prune_interval = prune_interval
        self.batch = batch
        self.max_pending = max_pending
        self.random = random
        self.dropped = 0
        self._pending: list[tuple[bytes, dict[str, Any]]] = []
        self._writing: list[tuple[bytes, dict[str, Any]]] = []
        self._waiters: list[Deferred[None]] = []
        self._busy = False
        self._sequence = 0
        self._flush_timer: Any = None
        self._prune_timer: Any = None
        self._pruning: Deferred[int] | None = None
        self._running = False

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start pruning (now, then every ``prune_interval``)."""
        self._running = True
        self._schedule_prune(0)

    def stop(self) -> Deferred[None]:
        """Stop the timers and write what is pending; fires when it is written."""
        self._running = False
        for timer in (self._flush_timer, self._prune_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._flush_timer = self._prune_timer = None
        return self.flush()

    # -- writing -------------------------------------------------------------------------

    def add(self, kind: str, keys: Iterable[str], fields: dict[str, Any]) -> None:
        """Record one event (rule 1): ``kind``, its ``keys`` (``key_of`` strings; empty
        values are left out) and JSON-ready ``fields``. Never blocks; call it on the
        reactor thread."""
        now = self.clock.seconds()
        named = [k for k in dict.fromkeys(key_of(*k.split(":", 1)) for k in keys)
                 if k.partition(":")[2]]
        record = {"kind": kind, "time": round(now, 3), **fields, "keys": named}
        self._sequence = (self._sequence + 1) & 0xFFFFFFFF
        key = _U64.pack(int(now * 1000)) + _U32.pack(self._sequence) + self.random(4)
        self._pending.append((key, record))
        if len(self._pending) > self.max_pending:
            excess = len(self._pending) - self.max_pending
            del self._pending[:excess]
            self.dropped += excess
        if len(self._pending) >= self.batch and not self._busy:
            self._write()
        elif self._flush_timer is None:
            self._flush_timer = self.clock.callLater(self.flush_interval, self._timed_flush)

    def _timed_flush(self) -> None:
        self._flush_timer = None
        if not self._busy:
            self._write()

    def flush(self) -> Deferred[None]:
        """Write the pending records now; fires once they are durable (or their write
        failed, which is logged: the trace is a record, not the mail)."""
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        if not self._busy:
            self._write()
        return waiter

    def _write(self) -> None:
        """One index write of everything pending (rule 3); one write at a time."""
        batch, self._pending = self._pending, []
        waiters, self._waiters = self._waiters, []
        if not batch:
            for waiter in waiters:
                waiter.callback(None)
            return
        self._busy = True
        self._writing = batch

        def op(txn: Txn) -> None:  # on the index's writer thread: the JSON work too
            for key, record in batch:
                txn.put(TABLE, key, dump(record))
                for name in record["keys"]:
                    txn.put(INDEX, _index_prefix(name) + key, b"")

        def done(result: object) -> None:
            if isinstance(result, Failure):
                log.failure("writing {n} trace record(s) failed", result, n=len(batch))
            self._busy = False
            self._writing = []
            for waiter in waiters:
                waiter.callback(None)
            if self._waiters or len(self._pending) >= self.batch:
                self._write()
            elif self._pending and self._flush_timer is None:
                self._flush_timer = self.clock.callLater(self.flush_interval, self._timed_flush)

        self.db.write(op).addBoth(done)

    # -- pruning -------------------------------------------------------------------------

    def _schedule_prune(self, delay: float) -> None:
        if self._running and self._prune_timer is None:
            self._prune_timer = self.clock.callLater(delay, self._timed_prune)

    def _timed_prune(self) -> None:
        self._prune_timer = None
        d = self.prune()

        def again(deleted: object) -> None:
            full = isinstance(deleted, int) and deleted >= PRUNE_BATCH
            self._schedule_prune(0 if full else self.prune_interval)

        d.addBoth(again)

    def prune(self) -> Deferred[int]:
        """Delete up to :data:`PRUNE_BATCH` records that are older than ``max_age`` or
        beyond ``max_records`` (oldest first), with their index entries, in one write.
        Fires with the number deleted (0 when a prune is already running)."""
        if self._pruning is not None:
            return succeed(0)
        cutoff = _U64.pack(max(int((self.clock.seconds() - self.max_age) * 1000), 0))
        limit = self.max_records

        def op(txn: Txn) -> int:
            over = max(txn.count(TABLE) - limit, 0)
            doomed: list[tuple[bytes, list[str]]] = []
            for key, value in txn.range(TABLE, b"", None):
                if len(doomed) >= PRUNE_BATCH or (len(doomed) >= over and key >= cutoff):
                    break
                doomed.append((key, load(value).get("keys", [])))
            for key, keys in doomed:
                txn.delete(TABLE, key)
                for name in keys:
                    txn.delete(INDEX, _index_prefix(name) + key)
            return len(doomed)

        def done(result: Any) -> Any:
            self._pruning = None
            if isinstance(result, Failure):
                log.failure("pruning the trace log failed", result)
                return 0
            return result

        self._pruning = self.db.write(op)
        return self._pruning.addBoth(done)

    # -- reading (ITraceLog) -------------------------------------------------------------

    def find(self, message_id: str = "", queue_id: str = "", limit: int = 500) -> dict[str, Any]:
        """See :meth:`mailserver.interfaces.ITraceLog.find` (rule 2)."""
        if bool(message_id) == bool(queue_id):
            raise ValueError("give exactly one of message_id or queue_id")
        if message_id:
            start = [key_of("m", message_id)]
        else:
            start = [key_of("q", queue_id), key_of("s", queue_id)]
        memory = list(self._writing) + list(self._pending)
        found: dict[bytes, dict[str, Any]] = {}
        seen: set[str] = set()
        frontier = start
        complete = True
        with self.db.read() as txn:
            for _hop in range(MAX_HOPS):
                following: list[str] = []
                for name in frontier:
                    if name in seen:
                        continue
                    seen.add(name)
                    for key, record in self._matching(txn, memory, name):
                        if key in found:
                            continue
                        if len(found) >= limit:
                            complete = False
                            break
                        found[key] = record
                        following += [k for k in record.get("keys", ())
                                      if k[:1] in LINKS and k not in seen]
                if not following or not complete:
                    break
                frontier = following
        records = [dict(found[key]) for key in sorted(found)]
        for record in records:
            record.pop("keys", None)
        return {"records": records, "complete": complete}

    def _matching(self, txn: Txn, memory: list[tuple[bytes, dict[str, Any]]], name: str
                  ) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """The records with key ``name``: written (an index prefix walk) and in memory."""
        prefix = _index_prefix(name)
        for entry, _empty in txn.prefix(INDEX, prefix):
            key = entry[len(prefix):]
            raw = txn.get(TABLE, key)
            if raw is not None and len(key) == _RECORD_KEY:
                record = load(raw)
                if name in record.get("keys", ()):  # not a hash collision
                    yield key, record
        for key, record in memory:
            if name in record["keys"]:
                yield key, record

    def stats(self) -> dict[str, Any]:
        """See :meth:`mailserver.interfaces.ITraceLog.stats`."""
        with self.db.read() as txn:
            count = txn.count(TABLE)
            oldest = None
            for key, _value in txn.range(TABLE, b"", None):
                oldest = _U64.unpack_from(key)[0] / 1000.0
                break
        return {"records": count, "oldest": oldest, "max_age": self.max_age,
                "max_records": self.max_records,
                "pending": len(self._pending) + len(self._writing), "dropped": self.dropped}
