"""Final delivery into local accounts: the store's IDeliveryTarget.

One transaction writes the message once (``tmp`` of the first recipient's INBOX, fsynced),
hard-links it into every other recipient's INBOX (one copy of the bytes for any number of
local recipients), and commits all index entries in one write, so the message is durable
for every recipient or for none before the commit's Deferred fires. The renames into
``new/`` happen on the index writer thread, and each ``new/`` directory is fsynced once for
all the deliveries that share a group commit (DESIGN decision 5: batch fsyncs where the
semantics allow). A crash after the rename but before the commit leaves a file in ``new/``
that start-up recovery indexes (the sender got no 250 and may send it again).

A small message held in memory makes one round trip off the reactor thread, not two: the
pool thread that wrote and fsynced it queues its index write itself (``_BodyWrite``), so
the reactor hears of it only when the commit is durable (fewer thread wake-ups and GIL
hand-offs a message; issue 3).
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailserver import durable
from mailserver.db import Txn
from mailserver.db.env import current_generation
from mailserver.diskspace import FreeSpace
from mailserver.errors import MailError, NoSuchUser
from mailserver.interfaces import (
    IClassified,
    IDelivery,
    IDeliveryTarget,
    IFolderChoice,
    IUserDirectory,
)
from mailserver.store import index, maildir, quota, sketch
from mailserver.store.mailbox import MaildirMailbox, spam_record
from mailserver.store.maildir_store import MaildirAccount, MaildirStore, canonical
from mailserver.types import Address, Envelope, SpamVerdict, SpecialUse

log = Logger(namespace="mailserver.store")

#: Accounts whose INBOX a target keeps per process before it starts afresh.
MEMO_SIZE = 10_000
#: The limits of an account with no quota (:meth:`mailserver.store.quota.QuotaRules.limits`).
NO_LIMIT = (None, None)


def return_path(envelope: Envelope) -> bytes:
    """RFC 5321 §4.4: final delivery records the reverse-path in a Return-Path header."""
    sender = "" if envelope.sender is None else str(envelope.sender)
    return f"Return-Path: <{sender}>\r\n".encode()


@implementer(IDeliveryTarget)
class LocalDeliveryTarget:
    """Delivers to the INBOX of each local account that a recipient resolves to.

    Each account's INBOX (its folder id, name and directory) is kept per process with the
    index's directory generation read before it was looked up (:mod:`mailserver.db.env`):
    creating, renaming or deleting a folder or deleting an account, in any process, changes
    the generation, so a kept INBOX is used only while no such change has committed. Only
    accounts that exist are kept; an unknown one is looked up every time."""

    def __init__(
        self, store: MaildirStore, directory: IUserDirectory, reserve: FreeSpace | None = None
    ) -> None:
        self.store = store
        self.directory = directory
        #: The free-space reserve checked before a body is written (mailserver.diskspace):
        #: a message that would leave less free is refused with 452 4.3.1. It is checked on
        #: the thread that writes the body, so it costs no thread hop of its own.
        self.reserve = reserve
        self._inboxes: dict[str, tuple[bytes | None, int, str, str, str]] = {}

    def start(self, envelope: Envelope) -> LocalDelivery:
        return LocalDelivery(self, envelope)

    @property
    def reactor(self) -> Any:
        """The store's reactor: its thread pool writes the bodies, and a pool thread's
        results reach the reactor thread through it."""
        return self.store._reactor

    def pool(self) -> Any:
        """The reactor's thread pool (where :meth:`MaildirStore.in_thread` runs work too)."""
        return self.reactor.getThreadPool()

    def inbox(self, address: str) -> MaildirMailbox | None:
        """The INBOX of the account ``address`` (canonical), None when there is none."""
        store = self.store
        now = current_generation(store.db)
        hit = self._inboxes.get(address)
        if hit is None or hit[0] != now:
            with store.db.read() as txn:
                record = index.account(txn, address)
                fid = None if record is None else index.folder_id(txn, address, "INBOX")
                if record is None or fid is None:
                    return None
                folder = index.folder(txn, fid)
            if len(self._inboxes) >= MEMO_SIZE:
                self._inboxes.clear()
            account_path = os.path.join(store.root, record["dirname"])
            dirname = folder.get("dirname")
            if dirname is None:
                dirname = maildir.folder_dirname(folder["name"])
            hit = (now, fid, folder["name"], account_path, os.path.join(account_path, dirname))
            self._inboxes[address] = hit
        _now, fid, name, account_path, path = hit
        return MaildirMailbox(MaildirAccount(store, address, account_path), fid, name, path)


def _link(source: str, final: str, fsync: bool) -> None:
    """A hard link (no second copy); across file systems, a durable copy."""
    try:
        os.link(source, final)
    except OSError:
        durable.link_into(source, final, fsync=fsync)


@implementer(IDelivery, IFolderChoice, IClassified)
class LocalDelivery:
    """``body`` writes the message once into the first INBOX's ``tmp/`` (fsynced, still
    invisible); ``commit`` runs on the index writer thread: it renames the file into
    ``new/``, hard-links it into the other INBOXes, adds the index entries, and has each
    ``new/`` directory fsynced once per group commit, before the commit itself."""

    def __init__(self, target: LocalDeliveryTarget, envelope: Envelope) -> None:
        self.target = target
        self.envelope = envelope
        self._accounts: dict[str, None] = {}
        self._inboxes: list[MaildirMailbox] = []
        self._written: tuple[str, int, index.Record] | None = None  # (base, size, meta)
        self._job: _BodyWrite | None = None  # a small body being written in the pool
        self._done = False
        self._special_use: SpecialUse | None = None
        self._spam: SpamVerdict | None = None

    def file_into(self, special_use: SpecialUse) -> None:
        """Deliver to each recipient's folder with ``special_use`` (INBOX when it has none)."""
        self._special_use = special_use

    def classified(self, verdict: SpamVerdict) -> None:
        """Keep the filter's verdict in the message's index record (shared by its labels)."""
        self._spam = verdict

    def _folder(self, address: str) -> MaildirMailbox:
        if self._special_use is not None:
            account = self.target.store.account(address)
            for info in account.list_folders():
                if info.special_use == self._special_use:
                    return account.folder(info.name)
        inbox = self.target.inbox(canonical(address))
        if inbox is None:
            raise NoSuchUser(detail=address)
        return inbox

    def add_recipient(
        self, address: Address, params: Mapping[str, str] | None = None
    ) -> Deferred[None]:
        try:
            self._check_recipient(address)
        except Exception:
            return fail()
        return succeed(None)

    def _check_recipient(self, address: Address) -> None:
        target = self.target
        local = [a for a in target.directory.resolve(str(address)) if target.inbox(canonical(a))]
        if not local:
            raise NoSuchUser(detail=str(address))
        # RFC 9208 / RFC 3463 X.2.2: a full mailbox refuses the recipient here (452 4.2.2,
        # or 552 5.2.2 when the declared SIZE can never fit); the commit checks again with
        # the real size. An account with no limit has nothing to check.
        store = target.store
        limited = [
            (a, limits) for a in local if (limits := store.quota_rules.limits(a)) != NO_LIMIT
        ]
        if limited:
            declared = _declared_size(self.envelope)
            with store.db.read() as txn:
                for account, limits in limited:
                    quota.check(txn, account, limits, max(declared, 1), 1)
        for account in local:
            self._accounts[account] = None

    def body(self, source: BinaryIO) -> Deferred[None]:
        """Write the message into the first INBOX's ``tmp/`` in the thread pool.

        A message held in memory (the SMTP spool up to 1 MiB) of at most ``sketch.SMALL``
        octets is read here, and the Deferred fires at once: the pool thread writes,
        fsyncs and parses it, and once :meth:`commit` has been called hands the index write
        straight to the writer thread (:meth:`mailserver.db.env.Database.submit`), so the
        message reaches the reactor thread once, with its commit, instead of once after the
        write and again after the commit. A write that fails (no space, the free-space
        reserve) fails the commit. A larger or file-backed message is streamed in the pool
        and the Deferred fires when it is written, as before."""
        if not self._accounts:
            return fail(
                MailError("no valid recipients", detail="body before any accepted recipient")
            )
        try:
            self._inboxes = [self._folder(a) for a in self._accounts]
        except Exception:
            return fail()
        store = self.target.store
        first = self._inboxes[0]
        prefix = return_path(self.envelope)
        data = _small_in_memory(source, prefix)
        base = maildir.unique_name()
        path = os.path.join(first.path, "tmp", base)
        reserve = self.target.reserve
        if data is not None:
            job = self._job = _BodyWrite(self, base, path, data, len(data) - len(prefix))
            self.target.pool().callInThread(job.run)
            return succeed(None)

        def write() -> tuple[str, int, index.Record]:
            # A message on disk up to sketch.SMALL octets is read once, written with the
            # Return-Path and parsed from those bytes. A larger one is streamed: copied in
            # chunks after the Return-Path, and the index's parse reads the written file in
            # bounded memory (store/sketch.py), so it never sits whole in memory (issue 12).
            start = source.tell()
            end = source.seek(0, os.SEEK_END)
            if reserve is not None:
                start = 0
                reserve.check(end)
            source.seek(start)
            small = len(prefix) + end - start <= sketch.SMALL
            data = prefix + source.read() if small else b""
            if small:
                size = durable.write_new(path, data, fsync=store.fsync)
            else:
                size = durable.write_new(path, source, prefix=prefix, fsync=store.fsync)
            try:
                meta = sketch.data_meta(data) if small else sketch.file_meta(path)
            except BaseException:
                _unlink_quietly(path)
                raise
            return base, size, meta

        def written(result: tuple[str, int, index.Record]) -> None:
            self._written = result

        return store.in_thread(write).addCallback(written)

    def commit(self) -> Deferred[list[int]]:
        if self._done:
            return fail(MailError("transaction already finished"))
        self._done = True
        job = self._job
        if self._written is None and job is None:
            return fail(MailError("no message body", detail="commit before body"))
        store = self.target.store
        inboxes = self._inboxes
        object_id = index.new_object_id()
        received = self.envelope.received_at or None
        fsync = store.fsync
        base = job.base if job is not None else self._written[0]  # type: ignore[index]

        limits = [
            (address, limit)
            for address in (m.account.address for m in inboxes)
            if (limit := store.quota_rules.limits(address)) != NO_LIMIT
        ]
        bases = [base] + [maildir.unique_name() for _ in inboxes[1:]]

        def op(txn: Txn) -> list[int]:
            assert self._written is not None  # the body is written before its commit runs
            _base, size, meta = self._written
            if self._spam is not None:
                meta["spam"] = spam_record(self._spam)
            for address, limit in limits:  # before any file moves: a refusal leaves tmp/ only
                quota.check(txn, address, limit, size, 1)
            first = inboxes[0]
            source = os.path.join(first.path, "new", base)
            os.rename(os.path.join(first.path, "tmp", base), source)
            for mailbox, other in zip(inboxes[1:], bases[1:]):
                _link(source, os.path.join(mailbox.path, "new", other), fsync)
            if fsync:
                for mailbox in inboxes:
                    new_dir = os.path.join(mailbox.path, "new")
                    txn.before_commit(("fsync", new_dir), partial(durable.fsync_directory, new_dir))
            return [
                mailbox._add(txn, name, frozenset(), size, received, meta, object_id)
                for mailbox, name in zip(inboxes, bases)
            ]

        def not_committed(failure: Failure) -> Deferred[Any]:
            # Not committed (over quota, index full, a failed write or commit): the sender
            # hears so and may send again, so no file may stay for start-up recovery to index.
            files = [os.path.join(inboxes[0].path, "tmp", base)] + [
                os.path.join(mailbox.path, "new", name) for mailbox, name in zip(inboxes, bases)
            ]
            return store.in_thread(_unlink_all_quietly, files).addCallback(lambda _: failure)

        def committed(uids: list[int]) -> list[int]:
            assert self._written is not None
            meta = self._written[2]
            for mailbox in inboxes:
                store.changes.notify(mailbox.account.address, mailbox.name)
            envelope = self.envelope
            # The trace's storage record (mailserver.trace.observer: stored), at debug level:
            # the mail log's line for the message (observe/maillog.py) is the one text line
            # per message, and formatting a second one cost the reactor ~0.1 ms a message.
            log.debug(
                "{smtp_id}: stored as {object_id} in {places}",
                mail_event="stored",
                smtp_id=envelope.queue_id,
                message_id=str(meta["envelope"].get("message_id") or ""),
                object_id=object_id,
                places=[[m.account.address, m.name, uid] for m, uid in zip(inboxes, uids)],
                sender="" if envelope.sender is None else str(envelope.sender),
                client=envelope.client_address,
                helo=envelope.helo,
                authenticated_as=envelope.authenticated_as,
            )
            return uids

        if job is None:
            done = store.write(op)
        else:
            done = store.track(Deferred())
            job.commit_with(op, done)
        return done.addCallbacks(committed, not_committed)

    def abort(self) -> Deferred[None]:
        if self._done:
            return succeed(None)
        self._done = True
        job, self._job = self._job, None
        if job is not None:
            return job.abort()
        written, self._written = self._written, None
        if written is None or not self._inboxes:
            return succeed(None)
        path = os.path.join(self._inboxes[0].path, "tmp", written[0])
        return self.target.store.in_thread(_unlink_quietly, path)


class _BodyWrite:
    """A small message being written into ``tmp/`` by a pool thread (LocalDelivery.body),
    and what the reactor thread asked for meanwhile: the commit (the pool thread then
    submits the index write itself) or an abort (it then removes the file itself). The lock
    orders the pool thread's end against those requests; Deferreds are only fired on the
    reactor thread."""

    def __init__(
        self, delivery: LocalDelivery, base: str, path: str, data: bytes, source_size: int
    ) -> None:
        self.delivery = delivery
        self.base = base
        self.path = path
        self.data = data
        self.source_size = source_size
        self.lock = threading.Lock()
        self.finished = False
        self.error: BaseException | None = None
        self.commit: tuple[Callable[[Txn], Any], Deferred[Any]] | None = None
        self.aborted: Deferred[None] | None = None

    def run(self) -> None:
        """On a pool thread: reserve check, write + fsync, parse; then whatever was asked."""
        delivery = self.delivery
        target = delivery.target
        try:
            if target.reserve is not None:
                target.reserve.check(self.source_size)
            size = durable.write_new(self.path, self.data, fsync=target.store.fsync)
            try:
                meta = sketch.data_meta(self.data)
            except BaseException:
                _unlink_quietly(self.path)
                raise
            delivery._written = (self.base, size, meta)
        except BaseException as error:
            self.error = error
        self.data = b""
        with self.lock:
            self.finished = True
            commit, aborted = self.commit, self.aborted
        self._then(commit, aborted)

    def _then(
        self,
        commit: tuple[Callable[[Txn], Any], Deferred[Any]] | None,
        aborted: Deferred[None] | None,
    ) -> None:
        """After the write (on the pool thread, or on the reactor when it was over before
        the request came): submit the commit, fail it, or finish the abort."""
        reactor = self.delivery.target.reactor
        if aborted is not None:
            if self.error is None:
                _unlink_quietly(self.path)
            reactor.callFromThread(aborted.callback, None)
        elif commit is not None:
            op, done = commit
            if self.error is not None:
                reactor.callFromThread(done.errback, self.error)
            else:
                self.delivery.target.store.db.submit(op, done)

    def commit_with(self, op: Callable[[Txn], Any], done: Deferred[Any]) -> None:
        """On the reactor thread: commit with ``op`` once the write is over (now if it is)."""
        with self.lock:
            finished = self.finished
            if not finished:
                self.commit = (op, done)
        if finished:
            self._then((op, done), None)

    def abort(self) -> Deferred[None]:
        """On the reactor thread: remove the file once the write is over."""
        done: Deferred[None] = Deferred()
        with self.lock:
            finished = self.finished
            if not finished:
                self.aborted = done
        if finished:
            store = self.delivery.target.store
            if self.error is not None:
                return succeed(None)
            return store.in_thread(_unlink_quietly, self.path)
        return self.delivery.target.store.track(done)


def _small_in_memory(source: BinaryIO, prefix: bytes) -> bytes | None:
    """``prefix`` + the rest of ``source`` when ``source`` holds it in memory (a BytesIO, or
    a ``tempfile.SpooledTemporaryFile`` not rolled over to disk, possibly behind a wrapper
    that passes its attributes on, as the SMTP session's spool up to 1 MiB is) and the
    result is at most ``sketch.SMALL`` octets; None (nothing read) otherwise: a file on
    disk is read in the pool, never on the reactor thread."""
    # SpooledTemporaryFile keeps the state in _rolled (False while in memory) and has no
    # public name for it; a wrapper's __getattr__ passes it through.
    if getattr(source, "_rolled", None) is not False and not isinstance(source, io.BytesIO):
        return None
    start = source.tell()
    end = source.seek(0, os.SEEK_END)
    source.seek(start)
    if len(prefix) + end - start > sketch.SMALL:
        return None
    return prefix + source.read()


def _declared_size(envelope: Envelope) -> int:
    """The MAIL FROM SIZE= value (RFC 1870), 0 when absent or not a number."""
    raw = envelope.params.get("SIZE", "")
    return int(raw) if raw.isdigit() else 0


def _unlink_all_quietly(paths: list[str]) -> None:
    for path in paths:
        _unlink_quietly(path)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
