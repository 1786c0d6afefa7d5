"""The durable outbound spool: message files beside an LMDB queue and schedule.

A message enters through the delivery transaction (:class:`SpoolDelivery`): the bytes are
written to ``<root>/<queue id>`` with ``durable.write_new`` + ``publish`` (file and directory
fsynced), then the entry and its schedule key are committed to LMDB with sync, and only then
does ``commit`` fire, so a ``250`` is never given for mail a crash could lose.

Crash windows, and what :meth:`LmdbSpool.recover` does about them:

- file written, entry not committed: the sender got no 250 and will retry; the orphan file
  is removed;
- entry committed, file missing (only if the disk lied about fsync): the entry is kept and
  logged, never silently dropped;
- a delivery attempt done but its result not committed: the recipient is tried again
  (at-least-once; the window is one remote ``250`` wide).

Keys (see ``db/schema.py``): ``queue`` maps queue id -> JSON entry, ``due`` holds
``next attempt ms (u64) + queue id`` for every entry not held, so "what is due" is one cursor
walk, never a scan of the queue.
"""

from __future__ import annotations

import os
import secrets
import struct
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from mailserver import durable
from mailserver.db import Database, Txn, schema
from mailserver.errors import MailError
from mailserver.interfaces import IDelivery, IDeliveryTarget, ISpool
from mailserver.message.headers import get_header, parse_headers, split_message
from mailserver.types import (
    Address,
    Envelope,
    QueuedRecipient,
    QueueEntry,
    RecipientState,
)

__all__ = ["LmdbSpool", "SpoolDelivery", "new_queue_id"]

log = Logger(namespace="mailserver.spool")
_U64 = struct.Struct(">Q")
#: How much of a spooled message is read for its Message-ID (the trace's ``queued`` event).
HEAD = 64 * 1024


def new_queue_id(milliseconds: int) -> str:
    """Time-ordered and unguessable: 11 hex digits of milliseconds, then 8 random ones."""
    return f"{milliseconds:011X}{secrets.token_hex(4).upper()}"


def _due_key(when: float, queue_id: str) -> bytes:
    return _U64.pack(max(int(when * 1000), 0)) + queue_id.encode("ascii")


def _to_json(entry: QueueEntry) -> dict[str, Any]:
    return {
        "sender": entry.sender,
        "recipients": [
            {
                "address": r.address,
                "params": dict(r.params),
                "state": r.state.value,
                "last_reply": r.last_reply,
                "attempts": r.attempts,
                "updated": r.updated,
            }
            for r in entry.recipients
        ],
        "size": entry.size,
        "created": entry.created,
        "next_attempt": entry.next_attempt,
        "params": dict(entry.params),
        "attempts": entry.attempts,
        "held": entry.held,
        "authenticated_as": entry.authenticated_as,
        "warned": entry.warned,
    }


def _from_json(queue_id: str, raw: Mapping[str, Any]) -> QueueEntry:
    recipients = tuple(
        QueuedRecipient(
            address=r["address"],
            params=r["params"],
            state=RecipientState(r["state"]),
            last_reply=r["last_reply"],
            attempts=r["attempts"],
            updated=r["updated"],
        )
        for r in raw["recipients"]
    )
    return QueueEntry(
        queue_id=queue_id,
        sender=raw["sender"],
        recipients=recipients,
        size=raw["size"],
        created=raw["created"],
        next_attempt=raw["next_attempt"],
        params=raw["params"],
        attempts=raw["attempts"],
        held=raw["held"],
        authenticated_as=raw["authenticated_as"],
        warned=raw.get("warned", False),
    )


@implementer(IDeliveryTarget, ISpool)
class LmdbSpool:
    """The spool over ``db`` (the data directory's index) and message files under ``root``."""

    def __init__(self, db: Database, root: str, reactor: Any, *, fsync: bool = True) -> None:
        self.db = db
        self.root = root
        self.reactor = reactor
        self.fsync = fsync
        self._last_ms = 0
        os.makedirs(os.path.join(root, "tmp"), exist_ok=True)

    # -- helpers -----------------------------------------------------------------------

    def in_thread(self, function: Any, *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), function, *args)

    def next_id(self) -> str:
        """A new queue id, strictly greater than the previous one from this spool."""
        self._last_ms = max(int(self.reactor.seconds() * 1000), self._last_ms + 1)
        return new_queue_id(self._last_ms)

    def message_path(self, queue_id: str) -> str:
        return os.path.join(self.root, queue_id)

    # -- IDeliveryTarget -----------------------------------------------------------------

    def start(self, envelope: Envelope) -> SpoolDelivery:
        return SpoolDelivery(self, envelope)

    # -- ISpool: reads (fast LMDB reads, fine on the reactor) ----------------------------

    def get(self, queue_id: str) -> QueueEntry | None:
        with self.db.read() as txn:
            raw = txn.get_json(b"queue", queue_id.encode("ascii"))
        return None if raw is None else _from_json(queue_id, raw)

    def entries(self, after: str = "", limit: int = 100) -> list[QueueEntry]:
        found = []
        with self.db.read() as txn:
            for key, value in txn.range(b"queue", after.encode("ascii") + b"\0", None):
                found.append(_from_json(key.decode("ascii"), schema.load(value)))
                if len(found) >= limit:
                    break
        return found

    def count(self) -> int:
        with self.db.read() as txn:
            return txn.count(b"queue")

    def due(self, now: float, limit: int = 100) -> list[str]:
        stop = _U64.pack(int(now * 1000)) + b"\xff"
        ids = []
        with self.db.read() as txn:
            for key, _value in txn.range(b"due", b"", stop):
                ids.append(key[8:].decode("ascii"))
                if len(ids) >= limit:
                    break
        return ids

    def next_due(self) -> float | None:
        with self.db.read() as txn:
            for key, _value in txn.range(b"due", b"", None):
                return int(_U64.unpack_from(key)[0]) / 1000.0
        return None

    def open_message(self, queue_id: str) -> BinaryIO:
        return open(self.message_path(queue_id), "rb")

    # -- ISpool: writes ------------------------------------------------------------------

    def _change(self, queue_id: str, change: Any) -> Deferred[Any]:
        """Apply ``change(entry) -> entry | None`` in one write; None removes the entry."""
        key = queue_id.encode("ascii")

        def op(txn: Txn) -> QueueEntry | None:
            raw = txn.get_json(b"queue", key)
            if raw is None:
                raise MailError("No such queue entry", detail=queue_id)
            old = _from_json(queue_id, raw)
            new = change(old)
            if not old.held:
                txn.delete(b"due", _due_key(old.next_attempt, queue_id))
            if new is None:
                txn.delete(b"queue", key)
                txn.after_commit(lambda: _unlink(self.message_path(queue_id)))
                return None
            txn.put_json(b"queue", key, _to_json(new))
            if not new.held:
                txn.put(b"due", _due_key(new.next_attempt, queue_id), b"")
            return new

        return self.db.write(op)

    def update(
        self,
        queue_id: str,
        recipients: Mapping[str, QueuedRecipient],
        next_attempt: float,
        warned: bool | None = None,
    ) -> Deferred[QueueEntry | None]:
        def change(entry: QueueEntry) -> QueueEntry | None:
            merged = tuple(recipients.get(r.address, r) for r in entry.recipients)
            new = replace(
                entry,
                recipients=merged,
                next_attempt=next_attempt,
                attempts=entry.attempts + 1,
                warned=entry.warned if warned is None else warned,
            )
            return new if new.pending else None

        return self._change(queue_id, change)

    def set_held(self, queue_id: str, held: bool) -> Deferred[QueueEntry | None]:
        return self._change(queue_id, lambda entry: replace(entry, held=held))

    def reschedule(self, queue_id: str, when: float) -> Deferred[QueueEntry | None]:
        return self._change(queue_id, lambda entry: replace(entry, next_attempt=when))

    def remove(self, queue_id: str) -> Deferred[None]:
        return self._change(queue_id, lambda entry: None)

    def add(self, entry: QueueEntry) -> Deferred[None]:
        """Commit a new entry whose message file is already durable at message_path."""
        key = entry.queue_id.encode("ascii")

        def op(txn: Txn) -> None:
            txn.put_json(b"queue", key, _to_json(entry))
            if not entry.held:
                txn.put(b"due", _due_key(entry.next_attempt, entry.queue_id), b"")

        return self.db.write(op)

    # -- recovery --------------------------------------------------------------------

    @inlineCallbacks
    def recover(self) -> Any:
        """Remove message files that have no entry (a crash before the commit), and report
        entries whose file is missing. Deferred[(removed, missing)]."""
        tmp = os.path.join(self.root, "tmp")
        yield self.in_thread(_unlink_all, [os.path.join(tmp, n) for n in os.listdir(tmp)])
        names = yield self.in_thread(_list_messages, self.root)
        with self.db.read() as txn:
            known = {key.decode("ascii") for key, _v in txn.range(b"queue", b"", None)}
        orphans = [name for name in names if name not in known]
        missing = sorted(known - set(names))
        if orphans:
            yield self.in_thread(_unlink_all, [self.message_path(n) for n in orphans])
        for queue_id in missing:
            log.error("spool entry {queue_id} has no message file", queue_id=queue_id)
        return len(orphans), missing


@implementer(IDelivery)
class SpoolDelivery:
    """One message into the spool: every recipient is accepted (the avatar in front decides
    who may relay); the commit makes file and entry durable, then fires with the queue id."""

    def __init__(self, spool: LmdbSpool, envelope: Envelope) -> None:
        self.spool = spool
        self.envelope = envelope
        self.queue_id = spool.next_id()
        self._recipients: dict[str, QueuedRecipient] = {}
        self._size: int | None = None
        self._message_id = ""
        self._done = False

    def add_recipient(
        self, address: Address, params: Mapping[str, str] | None = None
    ) -> Deferred[None]:
        key = str(address)
        self._recipients.setdefault(key, QueuedRecipient(key, dict(params or {})))
        return succeed(None)

    @inlineCallbacks
    def body(self, source: BinaryIO) -> Any:
        if not self._recipients:
            raise MailError("no valid recipients", detail="body before any accepted recipient")
        spool = self.spool
        temporary = os.path.join(spool.root, "tmp", self.queue_id)
        final = spool.message_path(self.queue_id)

        def write() -> tuple[int, str]:
            size = durable.write_new(temporary, source, fsync=spool.fsync)
            durable.publish(temporary, final, fsync=spool.fsync)
            return size, _message_id(final)

        self._size, self._message_id = yield spool.in_thread(write)

    @inlineCallbacks
    def commit(self) -> Any:
        if self._done:
            raise MailError("transaction already finished")
        self._done = True
        if self._size is None:
            raise MailError("no message body", detail="commit before body")
        now = self.spool.reactor.seconds()
        sender = self.envelope.sender
        entry = QueueEntry(
            queue_id=self.queue_id,
            sender="" if sender is None else str(sender),
            recipients=tuple(self._recipients.values()),
            size=self._size,
            created=now,
            next_attempt=now,
            params=dict(self.envelope.params),
            authenticated_as=self.envelope.authenticated_as,
        )
        try:
            yield self.spool.add(entry)
        except BaseException:
            yield self.spool.in_thread(_unlink, self.spool.message_path(self.queue_id))
            raise
        envelope = self.envelope
        log.info(  # the trace's spool record (mailserver.trace.observer: queued)
            "{queue_id}: queued from=<{sender}> for {recipients}",
            mail_event="queued",
            queue_id=self.queue_id,
            smtp_id=envelope.queue_id,
            message_id=self._message_id,
            sender=entry.sender,
            recipients=[r.address for r in entry.recipients],
            size=entry.size,
            client=envelope.client_address,
            helo=envelope.helo,
            authenticated_as=envelope.authenticated_as,
        )
        return self.queue_id

    def abort(self) -> Deferred[None]:
        if self._done:
            return succeed(None)
        self._done = True
        if self._size is None:
            return succeed(None)
        return self.spool.in_thread(_unlink, self.spool.message_path(self.queue_id))


def _message_id(path: str) -> str:
    """Blocking: the Message-ID field of the message file at ``path`` ('' when none); only
    its first :data:`HEAD` bytes are read (just written: from the page cache)."""
    try:
        with open(path, "rb") as source:
            head = source.read(HEAD)
    except OSError:
        return ""
    found = get_header(parse_headers(split_message(head)[0]), "Message-ID")
    return "" if found is None else found.decode("utf-8", "replace")[:998]


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _unlink_all(paths: list[str]) -> None:
    for path in paths:
        _unlink(path)


def _list_messages(root: str) -> list[str]:
    return [name for name in os.listdir(root) if name != "tmp" and not name.startswith(".")]
