"""IMailStore, IAccount, IMailbox and IMessage over Maildir++ files and the LMDB index.

Files are the bytes; the index is the truth for UIDs, flags and modseqs, and a mirror of the
flags is kept in file names so ``mailserver reindex`` can rebuild it. Writing a message:

1. a worker thread writes ``tmp/<base>``, fsyncs it, renames it into ``new/`` and fsyncs
   ``new/`` (:mod:`mailserver.durable`);
2. the index write (UID, flags, labels, cached MIME data) commits with fsync on the writer
   thread, possibly together with other messages (group commit);
3. after the commit the file moves to ``cur/<base>:2,<flags>`` and the caller is answered.

A crash after 1 leaves a file in ``new/`` that :meth:`MaildirStore.recover` indexes at the
next start; a crash in 1 leaves only a partial file in ``tmp/``, which is never a message.
Every file in ``cur/`` is in the index.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any, TypeVar

import lmdb
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from zope.interface import implementer

from mailserver import durable
from mailserver.db import Database, Txn
from mailserver.diskspace import FreeSpace, InsufficientStorage
from mailserver.errors import AlreadyExists, FolderExists, InvalidName, NoSuchFolder, NoSuchUser
from mailserver.interfaces import IAccount, IMailStore
from mailserver.store import index, maildir, quota
from mailserver.store.changes import FolderChanges
from mailserver.store.mailbox import MaildirMailbox, folder_info
from mailserver.store.names import normalize_folder_name, parents
from mailserver.types import DEFAULT_FOLDERS, FolderInfo, QuotaUsage, SpecialUse

T = TypeVar("T")


@implementer(IMailStore)
class MaildirStore:
    """The embedded store: ``root/<domain>/<local>/`` Maildir++ trees plus the index in
    ``db``. ``fsync=False`` is for throwaway test setups only."""

    def __init__(
        self,
        db: Database,
        root: str,
        reactor: Any,
        fsync: bool = True,
        quota_rules: quota.QuotaRules | None = None,
        free_space: FreeSpace | None = None,
    ) -> None:
        self.db = db
        self.root = root
        self.fsync = fsync
        #: The free-space reserve APPEND checks (:mod:`mailserver.diskspace`); None = none.
        self.free_space = free_space
        #: Each account's limits (RFC 9208); the default is no limit.
        self.quota_rules = quota_rules or quota.QuotaRules()
        self._reactor = reactor
        #: Change notices for IDLE sessions (:meth:`MaildirAccount.watch`).
        self.changes = FolderChanges(reactor)
        self._pending: set[Deferred[Any]] = set()
        self._closing = False
        os.makedirs(root, mode=0o700, exist_ok=True)

    # -- plumbing -----------------------------------------------------------------------

    def in_thread(self, function: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run blocking file work in the reactor's thread pool, tracked for close()."""
        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), function, *args)
        return self.track(d)

    def track(self, d: Deferred[T]) -> Deferred[T]:
        self._pending.add(d)

        def done(result: T) -> T:
            self._pending.discard(d)
            return result

        d.addBoth(done)
        return d

    def write(self, function: Callable[[Txn], T]) -> Deferred[T]:
        """Run ``function`` in an index write; a full index (LMDB's map size reached) is
        InsufficientStorage (452 4.3.1), like a full disk."""
        return self.track(self.db.write(function).addErrback(_index_full))

    def account_path(self, address: str) -> str:
        with self.db.read() as txn:
            record = index.account(txn, address)
        if record is None:
            raise NoSuchUser(detail=address)
        return os.path.join(self.root, record["dirname"])

    # -- IMailStore -----------------------------------------------------------------------

    @inlineCallbacks
    def create_account(self, address: str) -> Any:
        address = canonical(address)
        if self.has_account(address):
            raise AlreadyExists(detail=address)
        dirname = maildir.account_dirname(address)
        path = os.path.join(self.root, dirname)
        yield self.in_thread(_make_default_dirs, path)
        yield self.write(lambda txn: index.create_account(txn, address, dirname))

    @inlineCallbacks
    def delete_account(self, address: str) -> Any:
        address = canonical(address)
        path = self.account_path(address)
        yield self.write(lambda txn: index.delete_account(txn, address))
        yield self.in_thread(shutil.rmtree, path, True)

    def has_account(self, address: str) -> bool:
        with self.db.read() as txn:
            return index.account(txn, canonical(address)) is not None

    def account(self, address: str) -> MaildirAccount:
        address = canonical(address)
        return MaildirAccount(self, address, self.account_path(address))

    def accounts(self) -> list[str]:
        with self.db.read() as txn:
            return [key.decode() for key, _ in txn.prefix(b"accounts", b"")]

    def close(self) -> Deferred[Any]:
        """Wait for in-flight writes of this store; the owner closes ``db`` afterwards."""
        self._closing = True
        return DeferredList(list(self._pending), consumeErrors=True)

    def recover(self) -> Deferred[int]:
        """Index every message file left in a ``new/`` directory (by a crash between the file
        rename and the index commit, or by an outside deliverer). Deferred[count]."""
        from mailserver.store.reindex import recover_new

        return recover_new(self)


def canonical(address: str) -> str:
    """Account key: the address lower-cased, as the directory keys users."""
    return address.strip().lower()


def _make_default_dirs(path: str) -> None:
    for name, _special in DEFAULT_FOLDERS:
        maildir.make_maildir(os.path.join(path, maildir.folder_dirname(name)), name != "INBOX")


@implementer(IAccount)
class MaildirAccount:
    def __init__(self, store: MaildirStore, address: str, path: str) -> None:
        self.store = store
        self.address = address
        self.path = path

    def folder_path(self, record: index.Record) -> str:
        dirname = record.get("dirname")
        if dirname is None:
            dirname = maildir.folder_dirname(record["name"])
        return os.path.join(self.path, dirname)

    def list_folders(self) -> list[FolderInfo]:
        with self.store.db.read() as txn:
            subscribed = set(index.subscriptions(txn, self.address))
            infos = [
                folder_info(record, name in subscribed)
                for name, _f, record in index.folders(txn, self.address)
            ]
        return sorted(infos, key=lambda i: (i.name != "INBOX", i.name))

    def _record(self, name: str) -> index.Record:
        name = normalize_folder_name(name)
        with self.store.db.read() as txn:
            fid = index.folder_id(txn, self.address, name)
            if fid is None:
                raise NoSuchFolder(detail=name)
            return index.folder(txn, fid)

    def folder(self, name: str) -> MaildirMailbox:
        record = self._record(name)
        return MaildirMailbox(self, record["id"], record["name"], self.folder_path(record))

    def watch(self, name: str, callback: Callable[[], None]) -> Callable[[], None]:
        return self.store.changes.watch(self.address, normalize_folder_name(name), callback)

    @inlineCallbacks
    def create_folder(self, name: str, special_use: SpecialUse | None = None) -> Any:
        name = normalize_folder_name(name)
        created = None
        for level in [*parents(name), name]:
            with self.store.db.read() as txn:
                exists = index.folder_id(txn, self.address, level) is not None
            if exists:
                if level == name:
                    raise FolderExists(detail=name)
                continue
            path = os.path.join(self.path, maildir.folder_dirname(level))
            yield self.store.in_thread(maildir.make_maildir, path, True)
            use = special_use.value if special_use is not None and level == name else None
            created = yield self.store.write(
                lambda txn, lv=level, u=use: index.create_folder(txn, self.address, lv, u)
            )
        # create_folder subscribed the name, in the same transaction
        return folder_info(created, True)

    @inlineCallbacks
    def delete_folder(self, name: str) -> Any:
        record = self._record(name)
        if record["name"] == "INBOX":
            raise InvalidName("INBOX cannot be deleted")
        path = self.folder_path(record)
        yield self.store.write(lambda txn: index.delete_folder(txn, record["id"]))
        self.store.changes.notify(self.address, record["name"])
        yield self.store.in_thread(shutil.rmtree, path, True)

    @inlineCallbacks
    def rename_folder(self, old: str, new: str) -> Any:
        source = self._record(old)
        new = normalize_folder_name(new)
        if new == "INBOX":
            raise InvalidName("cannot rename a folder to INBOX")
        if source["name"] == "INBOX":
            # RFC 9051 §6.3.6: renaming INBOX moves its messages to a new folder and leaves
            # INBOX empty.
            yield self.create_folder(new)
            inbox = self.folder("INBOX")
            yield inbox.move(list(inbox.uids()), new)
            return
        renames = []
        with self.store.db.read() as txn:
            for name, fid, _record in index.folders(txn, self.address):
                if name == source["name"] or name.startswith(source["name"] + "/"):
                    renames.append((fid, name, new + name[len(source["name"]) :]))
            for _fid, _name, target in renames:
                if index.folder_id(txn, self.address, target) is not None:
                    raise FolderExists(detail=target)
        for parent in parents(new):
            with self.store.db.read() as txn:
                missing = index.folder_id(txn, self.address, parent) is None
            if missing:
                yield self.create_folder(parent)
        moves = [
            (
                os.path.join(self.path, maildir.folder_dirname(name)),
                os.path.join(self.path, maildir.folder_dirname(target)),
            )
            for _fid, name, target in renames
        ]
        yield self.store.in_thread(_rename_dirs, moves)

        def update(txn: Txn) -> None:
            for fid, _name, target in renames:
                record = index.rename_folder(txn, fid, target)
                record.pop("dirname", None)
                index.update_folder(txn, record)

        yield self.store.write(update)
        for _fid, name, _target in renames:
            self.store.changes.notify(self.address, name)

    @inlineCallbacks
    def subscribe(self, name: str, subscribed: bool = True) -> Any:
        """Add ``name`` to the subscriptions, whether or not a folder has it (RFC 9051
        §6.3.7). ``subscribed=False`` is :meth:`unsubscribe` (the older, flag form)."""
        if not subscribed:
            yield self.unsubscribe(name)
            return
        name = normalize_folder_name(name)
        yield self.store.write(lambda txn: index.subscribe(txn, self.address, name))

    @inlineCallbacks
    def unsubscribe(self, name: str) -> Any:
        """Remove ``name`` from the subscriptions; done when it was not there (RFC 9051
        §6.3.8)."""
        name = normalize_folder_name(name)
        yield self.store.write(lambda txn: index.unsubscribe(txn, self.address, name))

    def subscriptions(self) -> list[str]:
        with self.store.db.read() as txn:
            names = index.subscriptions(txn, self.address)
        return sorted(names, key=lambda n: (n != "INBOX", n))

    def quota_limits(self) -> tuple[int | None, int | None]:
        """(byte limit, message limit) of this account now; None = unlimited."""
        return self.store.quota_rules.limits(self.address)

    def quota(self) -> QuotaUsage:
        limits = self.quota_limits()
        with self.store.db.read() as txn:
            return quota.report(txn, self.address, limits)

    def labels(self, object_id: str) -> list[tuple[str, int]]:
        with self.store.db.read() as txn:
            places = []
            for fid, uid in index.labels(txn, object_id):
                record = index.folder(txn, fid)
                if record["account"] == self.address:
                    places.append((record["name"], uid))
        return sorted(places)


def _rename_dirs(moves: list[tuple[str, str]]) -> None:
    done = []
    try:
        for old, new in moves:
            if os.path.exists(new):
                raise InvalidName(detail=f"{new} exists on disk")
            os.rename(old, new)
            done.append((old, new))
    except BaseException:
        for old, new in reversed(done):
            os.rename(new, old)
        raise
    for _old, new in moves:
        durable.fsync_directory(os.path.dirname(new))


def _index_full(failure: Failure) -> Failure:
    """Turn LMDB's MapFullError into InsufficientStorage; other failures pass."""
    if failure.check(lmdb.MapFullError):
        raise InsufficientStorage(
            detail="the index is full: raise [store] map_size_mb"
        ) from failure.value
    return failure
