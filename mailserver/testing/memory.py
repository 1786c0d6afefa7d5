"""In-memory providers of the project's interfaces, for embedders' tests and ours (import
them from :mod:`mailserver.testing`; this module's path is private).

They work for real and pass the same contract tests (``tests/contracts/``) as the embedded
maildir + LMDB providers: :class:`MemoryStore` (IMailStore), :class:`MemoryDirectory`
(IUserDirectory) and :class:`MemoryDeliveryTarget` (IDeliveryTarget). Nothing here touches
the disk; every write completes at once.
"""

from __future__ import annotations

import bisect
import io
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from zope.interface import implementer

from mailserver.auth.directory import DirectoryRules
from mailserver.errors import (
    AlreadyExists,
    FolderExists,
    InvalidName,
    MailboxFull,
    MailError,
    NoSuchFolder,
    NoSuchMessage,
    NoSuchUser,
    QuotaExceeded,
)
from mailserver.interfaces import (
    IAccount,
    IDelivery,
    IDeliveryTarget,
    IMailbox,
    IMailboxRecords,
    IMailStore,
    IMessage,
    IUserDirectory,
)
from mailserver.message import mime
from mailserver.store.changes import FolderChanges
from mailserver.store.index import combine, new_object_id
from mailserver.store.names import normalize_folder_name, parents
from mailserver.store.quota import QuotaRules
from mailserver.types import (
    DEFAULT_FOLDERS,
    DELETED,
    SEEN,
    Address,
    Envelope,
    FlagInfo,
    FlagMode,
    FolderInfo,
    MessageInfo,
    QuotaUsage,
    SpamVerdict,
    SpecialUse,
)


def _meta(data: bytes) -> dict[str, Any]:
    parsed = mime.parse(data)
    return {
        "envelope": parsed.envelope,
        "bodystructure": parsed.bodystructure,
        "attachments": tuple(parsed.attachments),
    }


@dataclass
class _Object:
    data: bytes
    meta: dict[str, Any]
    spam: SpamVerdict | None = None
    refs: int = 0


@dataclass
class _Entry:
    object_id: str
    flags: frozenset[str]
    modseq: int
    internaldate: float
    savedate: float


@dataclass
class _Folder:
    name: str
    uidvalidity: int
    special_use: SpecialUse | None
    uidnext: int = 1
    highestmodseq: int = 1
    entries: dict[int, _Entry] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    #: RFC 8474 MAILBOXID, kept across RENAME.
    mailbox_id: str = field(default_factory=lambda: "F" + secrets.token_hex(12))
    #: (modseq, uid) of every removal, for QRESYNC (kept without a bound in memory).
    vanished: list[tuple[int, int]] = field(default_factory=list)


@implementer(IMailStore)
class MemoryStore:
    """Accounts, folders and messages in dictionaries."""

    def __init__(self, quota_rules: QuotaRules | None = None) -> None:
        self._accounts: dict[str, MemoryAccount] = {}
        #: Each account's limits (RFC 9208); the default is no limit.
        self.quota_rules = quota_rules or QuotaRules()
        self.objects: dict[str, _Object] = {}
        self.changes = FolderChanges()
        self._last_uidvalidity = 0

    def next_uidvalidity(self) -> int:
        self._last_uidvalidity = max(int(time.time()), self._last_uidvalidity + 1)
        return self._last_uidvalidity

    def create_account(self, address: str) -> Deferred[None]:
        key = address.strip().lower()
        if key in self._accounts:
            return fail(AlreadyExists(detail=key))
        account = MemoryAccount(self, key)
        for name, special in DEFAULT_FOLDERS:
            account._folders[name] = _Folder(name, self.next_uidvalidity(), special)
            account._subscriptions.add(name)
        self._accounts[key] = account
        return succeed(None)

    def delete_account(self, address: str) -> Deferred[None]:
        account = self._accounts.pop(address.strip().lower(), None)
        if account is None:
            return fail(NoSuchUser(detail=address))
        return succeed(None)

    def has_account(self, address: str) -> bool:
        return address.strip().lower() in self._accounts

    def account(self, address: str) -> MemoryAccount:
        try:
            return self._accounts[address.strip().lower()]
        except KeyError:
            raise NoSuchUser(detail=address) from None

    def close(self) -> Deferred[None]:
        return succeed(None)


def _info(folder: _Folder, store: MemoryStore, subscribed: bool) -> FolderInfo:
    entries = folder.entries.values()
    return FolderInfo(
        name=folder.name,
        uidvalidity=folder.uidvalidity,
        uidnext=folder.uidnext,
        highestmodseq=folder.highestmodseq,
        exists=len(folder.entries),
        unseen=sum(1 for e in entries if SEEN not in e.flags),
        size=sum(len(store.objects[e.object_id].data) for e in entries),
        special_use=folder.special_use,
        subscribed=subscribed,
        mailbox_id=folder.mailbox_id,
    )


@implementer(IAccount)
class MemoryAccount:
    def __init__(self, store: MemoryStore, address: str) -> None:
        self.store = store
        self.address = address
        self._folders: dict[str, _Folder] = {}
        #: Subscribed names, with or without a folder (RFC 9051 §6.3.7): DELETE and RENAME
        #: leave them alone; creating a folder subscribes its name.
        self._subscriptions: set[str] = set()

    def _new_folder(self, name: str, special_use: SpecialUse | None) -> _Folder:
        folder = _Folder(name, self.store.next_uidvalidity(), special_use)
        self._folders[name] = folder
        self._subscriptions.add(name)
        return folder

    def list_folders(self) -> list[FolderInfo]:
        subscribed = self._subscriptions
        infos = [_info(f, self.store, f.name in subscribed) for f in self._folders.values()]
        return sorted(infos, key=lambda i: (i.name != "INBOX", i.name))

    def folder(self, name: str) -> MemoryMailbox:
        name = normalize_folder_name(name)
        if name not in self._folders:
            raise NoSuchFolder(detail=name)
        return MemoryMailbox(self, self._folders[name])

    def watch(self, name: str, callback: Callable[[], None]) -> Callable[[], None]:
        return self.store.changes.watch(self.address, normalize_folder_name(name), callback)

    def create_folder(self, name: str, special_use: SpecialUse | None = None) -> Deferred[Any]:
        def create() -> FolderInfo:
            wanted = normalize_folder_name(name)
            if wanted in self._folders:
                raise FolderExists(detail=wanted)
            for parent in parents(wanted):
                if parent not in self._folders:
                    self._new_folder(parent, None)
            folder = self._new_folder(wanted, special_use)
            return _info(folder, self.store, True)

        return maybeDeferred(create)

    def delete_folder(self, name: str) -> Deferred[None]:
        def delete() -> None:
            mailbox = self.folder(name)
            if mailbox.name == "INBOX":
                raise InvalidName("INBOX cannot be deleted")
            del self._folders[mailbox.name]
            self.store.changes.notify(self.address, mailbox.name)

        return maybeDeferred(delete)

    def rename_folder(self, old: str, new: str) -> Deferred[Any]:
        def rename() -> Any:
            source = self.folder(old)
            target = normalize_folder_name(new)
            if target == "INBOX":
                raise InvalidName("cannot rename a folder to INBOX")
            if source.name == "INBOX":
                self.create_folder(target)
                return source.move(list(source.uids()), target)
            moving = [
                n for n in self._folders if n == source.name or n.startswith(source.name + "/")
            ]
            renamed = {n: target + n[len(source.name) :] for n in moving}
            if any(t in self._folders for t in renamed.values()):
                raise FolderExists(detail=target)
            for parent in parents(target):
                if parent not in self._folders:
                    self._new_folder(parent, None)
            for old_name, new_name in renamed.items():
                folder = self._folders.pop(old_name)
                folder.name = new_name
                self._folders[new_name] = folder
                self.store.changes.notify(self.address, old_name)
            return None

        return maybeDeferred(rename)

    def subscribe(self, name: str, subscribed: bool = True) -> Deferred[None]:
        if not subscribed:
            return self.unsubscribe(name)
        return maybeDeferred(lambda: self._subscriptions.add(normalize_folder_name(name)))

    def unsubscribe(self, name: str) -> Deferred[None]:
        return maybeDeferred(lambda: self._subscriptions.discard(normalize_folder_name(name)))

    def subscriptions(self) -> list[str]:
        return sorted(self._subscriptions, key=lambda n: (n != "INBOX", n))

    def quota(self) -> QuotaUsage:
        limit_bytes, limit_messages = self.store.quota_rules.limits(self.address)
        objects = self.store.objects
        entries = [e for f in self._folders.values() for e in f.entries.values()]
        used = sum(len(objects[e.object_id].data) for e in entries)
        return QuotaUsage(used, len(entries), limit_bytes, limit_messages)

    def check_quota(self, size: int, count: int) -> None:
        """Raise QuotaExceeded / MailboxFull unless ``size`` bytes and ``count`` messages
        more fit (the maildir store's rule, :func:`mailserver.store.quota.check`)."""
        usage = self.quota()
        pairs = (
            (usage.used_bytes, usage.limit_bytes, size),
            (usage.used_messages, usage.limit_messages, count),
        )
        for used, limit, more in pairs:
            if limit is None or more <= 0 or used + more <= limit:
                continue
            if more > limit:
                raise QuotaExceeded(detail=f"{self.address}: {more} more, limit {limit}")
            raise MailboxFull(detail=f"{self.address}: {used} + {more}, limit {limit}")

    def labels(self, object_id: str) -> list[tuple[str, int]]:
        return sorted(
            (f.name, uid)
            for f in self._folders.values()
            for uid, entry in f.entries.items()
            if entry.object_id == object_id
        )


@implementer(IMailbox, IMailboxRecords)
class MemoryMailbox:
    def __init__(self, account: MemoryAccount, folder: _Folder) -> None:
        self.account = account
        self._folder = folder
        self.name = folder.name

    def info(self) -> FolderInfo:
        subscribed = self._folder.name in self.account._subscriptions
        return _info(self._folder, self.account.store, subscribed)

    def flags(self, first: int = 1, last: int | None = None) -> Iterator[FlagInfo]:
        order = self._folder.order
        start = bisect.bisect_left(order, first)
        stop = len(order) if last is None else bisect.bisect_right(order, last)
        for uid in order[start:stop]:
            entry = self._folder.entries[uid]
            yield FlagInfo(uid, entry.flags, entry.modseq)

    def uids(self, first: int = 1, last: int | None = None) -> Iterator[int]:
        return (info.uid for info in self.flags(first, last))

    def changed_since(self, modseq: int) -> Iterator[FlagInfo]:
        changed = [
            FlagInfo(uid, e.flags, e.modseq)
            for uid, e in self._folder.entries.items()
            if e.modseq > modseq
        ]
        return iter(sorted(changed, key=lambda i: (i.modseq, i.uid)))

    def expunged_since(self, modseq: int) -> list[int]:
        return sorted(uid for m, uid in self._folder.vanished if m > modseq)

    def message(self, uid: int) -> MemoryMessage:
        entry = self._folder.entries.get(uid)
        if entry is None:
            raise NoSuchMessage(detail=f"{self.name} uid {uid}")
        return self._message(uid, entry, True)

    def messages(self, uids: Iterable[int], meta: bool | str = True) -> Iterator[MemoryMessage]:
        entries = self._folder.entries
        for uid in uids:
            entry = entries.get(uid)
            if entry is not None:
                yield self._message(uid, entry, meta)

    def records(
        self, uids: Iterable[int], rendered: bool = False
    ) -> Iterator[tuple[int, frozenset[str], int, int, float, str, bytes | None]]:
        # Nothing is kept rendered here: ``packed`` is always None.
        entries, objects = self._folder.entries, self.account.store.objects
        for uid in uids:
            entry = entries.get(uid)
            if entry is not None:
                size = len(objects[entry.object_id].data)
                object_id = entry.object_id
                yield (uid, entry.flags, entry.modseq, size, entry.internaldate, object_id, None)

    def _message(self, uid: int, entry: _Entry, meta: bool | str) -> MemoryMessage:
        obj = self.account.store.objects[entry.object_id]
        info = MessageInfo(
            uid=uid,
            flags=entry.flags,
            modseq=entry.modseq,
            size=len(obj.data),
            internaldate=entry.internaldate,
            object_id=entry.object_id,
            savedate=entry.savedate,
        )
        if meta == "envelope":
            info = replace(info, envelope=obj.meta["envelope"])
        elif meta:
            info = replace(
                info,
                envelope=obj.meta["envelope"],
                bodystructure=obj.meta["bodystructure"],
                attachments=obj.meta["attachments"],
                spam=obj.spam,
            )
        return MemoryMessage(self, info)

    def _add(self, object_id: str, flags: frozenset[str], internaldate: float) -> int:
        folder = self._folder
        uid = folder.uidnext
        folder.uidnext += 1
        folder.highestmodseq += 1
        folder.entries[uid] = _Entry(
            object_id, flags, folder.highestmodseq, internaldate, time.time()
        )
        folder.order.append(uid)
        self.account.store.objects[object_id].refs += 1
        return uid

    def _remove(self, uids: Iterable[int]) -> list[int]:
        folder = self._folder
        removed = [u for u in sorted(set(uids)) if u in folder.entries]
        objects = self.account.store.objects
        for uid in removed:
            object_id = folder.entries.pop(uid).object_id
            del folder.order[bisect.bisect_left(folder.order, uid)]
            objects[object_id].refs -= 1
            if objects[object_id].refs == 0:
                del objects[object_id]
        if removed:
            folder.highestmodseq += 1
            folder.vanished += [(folder.highestmodseq, uid) for uid in removed]
        return removed

    def append(
        self, source: BinaryIO, flags: Iterable[str] = (), internaldate: float | None = None
    ) -> Deferred[int]:
        data = source.read()
        try:
            self.account.check_quota(len(data), 1)
        except QuotaExceeded as error:
            return fail(error)
        object_id = new_object_id()
        self.account.store.objects[object_id] = _Object(data, _meta(data))
        wanted = frozenset(f for f in flags if f != "\\Recent")
        uid = self._add(object_id, wanted, time.time() if internaldate is None else internaldate)
        self.account.store.changes.notify(self.account.address, self.name)
        return succeed(uid)

    def store_flags(
        self, uids: Iterable[int], flags: Iterable[str], mode: FlagMode
    ) -> Deferred[list[FlagInfo]]:
        return succeed(self._store(uids, flags, mode, None)[0])

    def conditional_store(
        self, uids: Iterable[int], flags: Iterable[str], mode: FlagMode, unchangedsince: int
    ) -> Deferred[tuple[list[FlagInfo], list[int]]]:
        return succeed(self._store(uids, flags, mode, unchangedsince))

    def _store(
        self, uids: Iterable[int], flags: Iterable[str], mode: FlagMode, since: int | None
    ) -> tuple[list[FlagInfo], list[int]]:
        given = frozenset(f for f in flags if f != "\\Recent")
        folder = self._folder
        modseq = folder.highestmodseq + 1
        changed = []
        refused = []
        for uid in sorted(set(uids)):
            entry = folder.entries.get(uid)
            if entry is None:
                continue
            if since is not None and entry.modseq > since:
                refused.append(uid)
                continue
            new = combine(entry.flags, given, mode)
            if new != entry.flags:
                entry.flags, entry.modseq = new, modseq
                changed.append(FlagInfo(uid, new, modseq))
        if changed:
            folder.highestmodseq = modseq
            self._changed(self.name)
        return changed, refused

    def _changed(self, name: str) -> None:
        self.account.store.changes.notify(self.account.address, name)

    def expunge(self, uids: Iterable[int] | None = None) -> Deferred[list[int]]:
        if uids is None:
            uids = [u for u, e in self._folder.entries.items() if DELETED in e.flags]
        removed = self._remove(uids)
        self._changed(self.name)
        return succeed(removed)

    def _copy(self, uids: Iterable[int], destination: str, remove: bool) -> list[tuple[int, int]]:
        target = self.account.folder(destination)
        pairs = []
        wanted = [u for u in sorted(set(uids)) if u in self._folder.entries]
        if not remove:
            objects = self.account.store.objects
            size = sum(len(objects[self._folder.entries[u].object_id].data) for u in wanted)
            self.account.check_quota(size, len(wanted))
        for uid in wanted:
            entry = self._folder.entries[uid]
            pairs.append((uid, target._add(entry.object_id, entry.flags, entry.internaldate)))
        if remove:
            self._remove(wanted)
            self._changed(self.name)
        self._changed(target.name)
        return pairs

    def copy(self, uids: Iterable[int], destination: str) -> Deferred[list[tuple[int, int]]]:
        return maybeDeferred(self._copy, uids, destination, False)

    def move(self, uids: Iterable[int], destination: str) -> Deferred[list[tuple[int, int]]]:
        return maybeDeferred(self._copy, uids, destination, True)


@implementer(IMessage)
class MemoryMessage:
    def __init__(self, mailbox: MemoryMailbox, info: MessageInfo) -> None:
        self.mailbox = mailbox
        self.info = info

    def open(self) -> BinaryIO:
        return io.BytesIO(self.mailbox.account.store.objects[self.info.object_id].data)

    def set_spam_verdict(self, verdict: SpamVerdict) -> Deferred[None]:
        self.mailbox.account.store.objects[self.info.object_id].spam = verdict
        return succeed(None)


@implementer(IUserDirectory)
class MemoryDirectory(DirectoryRules):
    """The directory's rules over dictionaries (bcrypt still runs in the thread pool)."""

    def __init__(self, reactor: Any = None, bcrypt_cost: int = 4) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        super().__init__(reactor, bcrypt_cost)
        self._tables: dict[str, dict[str, Any]] = {"domains": {}, "users": {}, "aliases": {}}

    def _get(self, table: str, key: str) -> Any:
        return self._tables[table].get(key)

    def _scan(self, table: str, prefix: str = "") -> Iterator[tuple[str, Any]]:
        rows = sorted(self._tables[table].items())
        return iter([(k, v) for k, v in rows if k.startswith(prefix)])

    def _apply(self, changes: list[tuple[str, str, Any]], check: Any = None) -> Deferred[Any]:
        def apply() -> None:
            if check is not None:
                check(self._get)
            for table, key, value in changes:
                if value is None:
                    self._tables[table].pop(key, None)
                else:
                    self._tables[table][key] = value

        return maybeDeferred(apply)


@implementer(IDeliveryTarget)
class MemoryDeliveryTarget:
    """Final delivery into a :class:`MemoryStore`'s INBOXes, resolved by a directory."""

    def __init__(self, store: MemoryStore, directory: IUserDirectory) -> None:
        self.store = store
        self.directory = directory

    def start(self, envelope: Envelope) -> MemoryDelivery:
        return MemoryDelivery(self, envelope)


@implementer(IDelivery)
class MemoryDelivery:
    def __init__(self, target: MemoryDeliveryTarget, envelope: Envelope) -> None:
        self.target = target
        self.envelope = envelope
        self._accounts: dict[str, None] = {}
        self._data: bytes | None = None
        self._done = False

    def add_recipient(
        self, address: Address, params: Mapping[str, str] | None = None
    ) -> Deferred[None]:
        local = [
            a
            for a in self.target.directory.resolve(str(address))
            if self.target.store.has_account(a)
        ]
        if not local:
            return fail(NoSuchUser(detail=str(address)))
        raw = self.envelope.params.get("SIZE", "")
        declared = int(raw) if raw.isdigit() else 0
        try:
            for account in local:
                self.target.store.account(account).check_quota(max(declared, 1), 1)
        except QuotaExceeded as error:
            return fail(error)
        self._accounts.update(dict.fromkeys(local))
        return succeed(None)

    def body(self, source: BinaryIO) -> Deferred[None]:
        if not self._accounts:
            return fail(MailError("no valid recipients"))
        sender = "" if self.envelope.sender is None else str(self.envelope.sender)
        self._data = f"Return-Path: <{sender}>\r\n".encode() + source.read()
        return succeed(None)

    def commit(self) -> Deferred[list[int]]:
        if self._done or self._data is None:
            return fail(MailError("no message to commit"))
        self._done = True
        store = self.target.store
        try:
            for address in self._accounts:
                store.account(address).check_quota(len(self._data), 1)
        except QuotaExceeded as error:
            return fail(error)
        object_id = new_object_id()
        store.objects[object_id] = _Object(self._data, _meta(self._data))
        now = self.envelope.received_at or time.time()
        uids = [
            store.account(a).folder("INBOX")._add(object_id, frozenset(), now)
            for a in self._accounts
        ]
        for address in self._accounts:
            store.changes.notify(address, "INBOX")
        return succeed(uids)

    def abort(self) -> Deferred[None]:
        self._done = True
        self._data = None
        return succeed(None)
