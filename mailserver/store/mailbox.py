"""IMailbox and IMessage providers of the maildir store (see maildir_store for the write
protocol: tmp -> new -> index commit -> cur)."""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from twisted.internet.defer import Deferred, inlineCallbacks
from zope.interface import implementer

from mailserver import durable
from mailserver.db import Txn
from mailserver.db.schema import dump
from mailserver.errors import NoSuchMessage
from mailserver.interfaces import IMailbox, IMailboxRecords, IMessage
from mailserver.interfaces.header_index import IHeaderIndex
from mailserver.interfaces.rendered_items import IRenderedItems
from mailserver.message import body_text, mime
from mailserver.message.headers import header_length
from mailserver.store import header_index, imap_items, index, maildir, quota, sketch
from mailserver.store.names import normalize_folder_name
from mailserver.types import (
    DELETED,
    FlagInfo,
    FlagMode,
    FolderInfo,
    MessageInfo,
    SpamVerdict,
    SpecialUse,
)

if TYPE_CHECKING:
    from mailserver.store.maildir_store import MaildirAccount

T = TypeVar("T")

#: Range reads open one short read transaction per this many entries, so a long iteration
#: never pins an old snapshot.
CHUNK = 1000


def deliver_file(folder_path: str, data: bytes | BinaryIO, fsync: bool) -> str:
    """Write ``data`` (bytes, or a binary file read from its position in chunks) durably
    into ``new/`` of a maildir; return the file's base name."""
    base = maildir.unique_name()
    temporary = os.path.join(folder_path, "tmp", base)
    durable.write_new(temporary, data, fsync=fsync)
    durable.publish(temporary, os.path.join(folder_path, "new", base), fsync=fsync)
    return base


def move_to_cur(folder_path: str, base: str, flags: frozenset[str]) -> None:
    """After the index commit: ``new/base`` -> ``cur/base:2,FLAGS`` (a mirror; no fsync)."""
    try:
        os.rename(
            os.path.join(folder_path, "new", base),
            os.path.join(folder_path, "cur", maildir.file_name(base, flags)),
        )
    except FileNotFoundError:
        pass


def find_file(folder_path: str, base: str, flags: frozenset[str]) -> str:
    """The path of a message file: where its flags say, else wherever a crash left it."""
    path = os.path.join(folder_path, "cur", maildir.file_name(base, flags))
    if os.path.exists(path):
        return path
    candidate = os.path.join(folder_path, "new", base)
    if os.path.exists(candidate):
        return candidate
    cur = os.path.join(folder_path, "cur")
    for name in os.listdir(cur):
        if maildir.split_name(name)[0] == base:
            return os.path.join(cur, name)
    raise NoSuchMessage(detail=f"file {base} is missing: run mailserver reindex")


def _rename_flags(
    folder_path: str, renames: list[tuple[str, frozenset[str], frozenset[str]]]
) -> None:
    """After a flag change's commit, on the writer thread: rename each (base, old flags, new
    flags) file in ``cur/`` to mirror its new flags (no fsync: the index is the truth). The
    renames are relative to ``cur/`` opened once, and each distinct flag set's suffix is
    worked out once; a file that is not where its old flags say is left alone."""
    suffixes: dict[frozenset[str], str] = {}
    try:
        cur = os.open(os.path.join(folder_path, "cur"), os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:  # the folder is gone
        return
    try:
        for base, old, new in renames:
            old_suffix = suffixes.get(old)
            if old_suffix is None:
                old_suffix = suffixes[old] = maildir.flags_suffix(old)
            new_suffix = suffixes.get(new)
            if new_suffix is None:
                new_suffix = suffixes[new] = maildir.flags_suffix(new)
            if old_suffix != new_suffix:
                try:
                    os.rename(base + old_suffix, base + new_suffix, src_dir_fd=cur, dst_dir_fd=cur)
                except FileNotFoundError:
                    pass
    finally:
        os.close(cur)


def _unlink(folder_path: str, base: str, flags: frozenset[str]) -> None:
    try:
        os.unlink(find_file(folder_path, base, flags))
    except (NoSuchMessage, FileNotFoundError):
        pass


def _discard_new(folder_path: str, bases: list[str]) -> None:
    """Remove files written into ``new/`` for a change the index did not commit (over quota,
    index full, a failed commit), so start-up recovery does not index them: the client was
    told it failed and may send it again."""
    for base in bases:
        try:
            os.unlink(os.path.join(folder_path, "new", base))
        except FileNotFoundError:
            pass


def _link_all(
    source: str, destination: str, files: list[tuple[str, frozenset[str]]], fsync: bool
) -> list[str]:
    bases = []
    for base, flags in files:
        new_base = maildir.unique_name()
        durable.link_into(
            find_file(source, base, flags),
            os.path.join(destination, "new", new_base),
            fsync=False,
        )
        bases.append(new_base)
    if fsync and bases:
        durable.fsync_directory(os.path.join(destination, "new"))
    return bases


def folder_info(record: index.Record, subscribed: bool) -> FolderInfo:
    """The FolderInfo of a folder record; ``subscribed`` comes from the account's
    subscriptions (:func:`mailserver.store.index.is_subscribed`), not from the record."""
    special = record.get("special_use")
    return FolderInfo(
        name=record["name"],
        uidvalidity=record["uidvalidity"],
        uidnext=record["uidnext"],
        highestmodseq=record["highestmodseq"],
        exists=record["exists"],
        unseen=record["unseen"],
        size=record["size"],
        special_use=SpecialUse(special) if special else None,
        subscribed=subscribed,
        folder_id=record["id"],
        # Folders made before MAILBOXID was stored: derived from what never changes.
        mailbox_id=record.get("mailbox_id") or f"F{record['uidvalidity']:08x}{record['id']:08x}",
    )


def message_meta(data: bytes) -> index.Record:
    """The cached parse results stored once per message object, and ``header``: the header
    block (up to :data:`~mailserver.store.header_index.HEADER_LIMIT` octets, else None),
    which :func:`~mailserver.store.index.add_message` keeps in the header index only."""
    parsed = mime.parse(data)
    header = data[: header_length(data)]
    return {
        "envelope": parsed.envelope,
        "bodystructure": parsed.bodystructure,
        "attachments": parsed.attachments,
        "spam": None,
        "header": header if len(header) <= header_index.HEADER_LIMIT else None,
    }


def spam_record(verdict: SpamVerdict) -> dict[str, object]:
    """How a spam verdict is kept in a message object's index record."""
    return {
        "score": verdict.score,
        "is_spam": verdict.is_spam,
        "reasons": list(verdict.reasons),
        "classifier": verdict.classifier,
    }


@implementer(IMailbox, IMailboxRecords, IHeaderIndex, IRenderedItems)
class MaildirMailbox:
    def __init__(self, account: MaildirAccount, folder_id: int, name: str, path: str) -> None:
        self.account = account
        self.store = account.store
        self.folder_id = folder_id
        self.name = name
        self.path = path

    def _record(self, txn: Txn) -> index.Record:
        return index.folder(txn, self.folder_id)

    def info(self) -> FolderInfo:
        with self.store.db.read() as txn:
            record = self._record(txn)
            return folder_info(record, index.is_subscribed(txn, record["account"], record["name"]))

    def flags(self, first: int = 1, last: int | None = None) -> Iterator[FlagInfo]:
        while True:
            with self.store.db.read() as txn:
                chunk = []
                for uid, flags, modseq in index.flag_range(txn, self.folder_id, first, last):
                    chunk.append(FlagInfo(uid, flags, modseq))
                    if len(chunk) == CHUNK:
                        break
            yield from chunk
            if len(chunk) < CHUNK:
                return
            first = chunk[-1].uid + 1

    def uids(self, first: int = 1, last: int | None = None) -> Iterator[int]:
        return (info.uid for info in self.flags(first, last))

    def changed_since(self, modseq: int) -> Iterator[FlagInfo]:
        with self.store.db.read() as txn:
            return iter(index.changed_since(txn, self.folder_id, modseq))

    def expunged_since(self, modseq: int) -> list[int] | None:
        with self.store.db.read() as txn:
            return index.expunged_since(txn, self._record(txn), modseq)

    def message(self, uid: int) -> MaildirMessage:
        if not 0 < uid < 1 << 32:  # RFC 9051 §2.3.1.1: a UID is a 32-bit number above 0
            raise NoSuchMessage(detail=f"{self.name} uid {uid}")
        with self.store.db.read() as txn:
            found = index.message(txn, self.folder_id, uid)
            if found is None:
                raise NoSuchMessage(detail=f"{self.name} uid {uid}")
            record, modseq, flags = found
            meta = index.object_meta(txn, record["object_id"])
        return self._message(uid, record, modseq, flags, meta)

    def messages(self, uids: Iterable[int], meta: bool | str = True) -> Iterator[MaildirMessage]:
        # One read transaction per CHUNK messages: no snapshot is pinned while the caller
        # works between chunks, and no transaction is opened per message.
        wanted = iter(uids)
        while True:
            chunk = list(itertools.islice(wanted, CHUNK))
            if not chunk:
                return
            found = []
            with self.store.db.read() as txn:
                for uid, record, modseq, flags in index.messages(txn, self.folder_id, chunk):
                    object_meta: dict[str, Any] | None
                    if meta == "envelope":
                        object_meta = {"envelope": index.object_envelope(txn, record["object_id"])}
                    elif meta == "rendered":  # the stored IMAP items, else the parse results
                        rendered = imap_items.rendered(txn, self.folder_id, uid)
                        object_meta = (
                            {"rendered": rendered}
                            if rendered
                            else index.object_meta(txn, record["object_id"])
                        )
                    else:
                        object_meta = index.object_meta(txn, record["object_id"]) if meta else None
                    found.append((uid, record, modseq, flags, object_meta))
            for uid, record, modseq, flags, object_meta in found:
                yield self._message(uid, record, modseq, flags, object_meta)

    def records(
        self, uids: Iterable[int], rendered: bool = False
    ) -> Iterator[tuple[int, frozenset[str], int, int, float, str, bytes | None]]:
        fid = self.folder_id
        return self._chunked(uids, lambda txn, chunk: imap_items.records(txn, fid, chunk, rendered))

    def rendered_item(
        self, uids: Iterable[int], tag: int, utf8: bool
    ) -> list[tuple[int, int, int, bytes]] | None:
        """IRenderedItems: one read transaction; None for a run of over CHUNK messages."""
        wanted = list(uids)
        if len(wanted) > CHUNK:
            return None
        with self._bytes_read() as txn:
            return imap_items.rendered_item(txn, self.folder_id, wanted, tag, utf8)

    def _message(
        self,
        uid: int,
        record: index.Record,
        modseq: int,
        flags: frozenset[str],
        meta: index.Record | None,
    ) -> MaildirMessage:
        if meta is None:
            info = MessageInfo(
                uid=uid,
                flags=flags,
                modseq=modseq,
                size=record["size"],
                internaldate=record["internaldate"],
                object_id=record["object_id"],
                savedate=record.get("savedate", 0.0),
            )
            return MaildirMessage(self, info, record["base"])
        spam = meta.get("spam")
        info = MessageInfo(
            uid=uid,
            flags=flags,
            modseq=modseq,
            size=record["size"],
            internaldate=record["internaldate"],
            object_id=record["object_id"],
            savedate=record.get("savedate", 0.0),
            envelope=meta.get("envelope") or {},
            bodystructure=meta.get("bodystructure") or {},
            attachments=tuple(meta.get("attachments") or ()),
            spam=SpamVerdict(**{**spam, "reasons": tuple(spam["reasons"])}) if spam else None,
            rendered=meta.get("rendered") or {},
        )
        return MaildirMessage(self, info, record["base"])

    def header_blocks(self, uids: Iterable[int]) -> Iterator[tuple[int, bytes]]:
        """IHeaderIndex: one read transaction per CHUNK messages."""
        fid = self.folder_id
        return self._chunked(uids, lambda txn, chunk: header_index.header_blocks(txn, fid, chunk))

    def text_leaves(self, uids: Iterable[int]) -> Iterator[tuple[int, list[body_text.Leaf]]]:
        """IHeaderIndex: one read transaction per CHUNK messages."""
        fid = self.folder_id
        for uid, packed in self._chunked(
            uids, lambda txn, chunk: header_index.text_parts(txn, fid, chunk)
        ):
            try:
                yield uid, body_text.unpack(packed)
            except ValueError:  # a damaged value: the cached structure is used
                continue

    def search_field(self, field: str, value: str) -> list[int] | None:
        """IHeaderIndex: one cursor walk of the folder's texts for ``field``."""
        with self._bytes_read() as txn:
            return header_index.search_field(txn, self._record(txn), field, value)

    def _unlink_all(self, removed: Iterable[tuple[int, str, frozenset[str]]]) -> None:
        """Remove the files of expunged messages (after the index commit)."""
        for _uid, base, flags in removed:
            _unlink(self.path, base, flags)

    def _chunked(
        self, uids: Iterable[int], read: Callable[[Txn, list[int]], Iterable[T]]
    ) -> Iterator[T]:
        """``read(txn, chunk)`` of each CHUNK of ``uids`` in a read transaction of its own
        (:meth:`_bytes_read`), consumed before the transaction ends: no snapshot is pinned
        while the caller works between chunks, and none is opened per message."""
        wanted = iter(uids)
        while True:
            chunk = list(itertools.islice(wanted, CHUNK))
            if not chunk:
                return
            with self._bytes_read() as txn:
                found = list(read(txn, chunk))
            yield from found

    @contextlib.contextmanager
    def _bytes_read(self) -> Iterator[Txn]:
        """A read transaction whose values are ``bytes`` (half the cost of buffers for a
        walk that copies every value anyway)."""
        db = self.store.db
        with db.env.begin(write=False, buffers=False) as raw:
            yield Txn(raw, db.dbs)

    @inlineCallbacks
    def append(
        self, source: BinaryIO, flags: Iterable[str] = (), internaldate: float | None = None
    ) -> Any:
        flag_set = frozenset(f for f in flags if f != "\\Recent")
        base, size, meta = yield self.store.in_thread(self._write, source)
        address, limits = self.account.address, self.account.quota_limits()

        def op(txn: Txn) -> int:
            quota.check(txn, address, limits, size, 1)  # RFC 9208 §4.3.1 OVERQUOTA
            return self._add(txn, base, flag_set, size, internaldate, meta)

        try:
            uid = yield self.store.write(op)
        except Exception:  # not committed (over quota, index full, ...): no file stays
            yield self.store.in_thread(_discard_new, self.path, [base])
            raise
        self.store.changes.notify(self.account.address, self.name)
        return uid

    def _write(self, source: BinaryIO) -> tuple[str, int, index.Record]:
        """In a worker thread: durably write one message into ``new/`` and parse it
        (refused with InsufficientStorage below the store's free-space reserve).

        A seekable ``source`` (an IMAP literal spooled to disk, a BytesIO) is copied in
        chunks and parsed from the written file in bounded memory
        (:func:`mailserver.store.sketch.file_meta`), so a large APPEND never sits whole in
        memory; another source is read whole first."""
        try:
            start = source.tell()
            size = source.seek(0, os.SEEK_END) - start
            source.seek(start)
        except (AttributeError, OSError, ValueError):
            data = source.read()
            if self.store.free_space is not None:
                self.store.free_space.check(len(data))
            return deliver_file(self.path, data, self.store.fsync), len(data), message_meta(data)
        if self.store.free_space is not None:
            self.store.free_space.check(size)
        base = deliver_file(self.path, source, self.store.fsync)
        try:
            meta = sketch.file_meta(os.path.join(self.path, "new", base))
        except BaseException:
            _discard_new(self.path, [base])
            raise
        return base, size, meta

    def _add(
        self,
        txn: Txn,
        base: str,
        flags: frozenset[str],
        size: int,
        internaldate: float | None,
        meta: index.Record | None,
        object_id: str | None = None,
    ) -> int:
        record = self._record(txn)
        uid = index.add_message(
            txn,
            record,
            base,
            flags,
            size,
            time.time() if internaldate is None else internaldate,
            object_id or index.new_object_id(),
            meta,
        )
        txn.after_commit(lambda: move_to_cur(self.path, base, flags))
        return uid

    def store_flags(
        self, uids: Iterable[int], flags: Iterable[str], mode: FlagMode
    ) -> Deferred[list[FlagInfo]]:
        d = self._store_flags(uids, flags, mode, None)
        return d.addCallback(lambda result: result[0])

    def conditional_store(
        self, uids: Iterable[int], flags: Iterable[str], mode: FlagMode, unchangedsince: int
    ) -> Deferred[tuple[list[FlagInfo], list[int]]]:
        return self._store_flags(uids, flags, mode, unchangedsince)

    def _store_flags(
        self,
        uids: Iterable[int],
        flags: Iterable[str],
        mode: FlagMode,
        unchangedsince: int | None,
    ) -> Deferred[tuple[list[FlagInfo], list[int]]]:
        given = frozenset(f for f in flags if f != "\\Recent")
        wanted = list(uids)

        def op(txn: Txn) -> tuple[list[FlagInfo], list[int]]:
            changed, refused = index.store_flags(
                txn, self._record(txn), wanted, given, mode, unchangedsince
            )
            renames = [(base, old, info.flags) for info, old, base in changed if base]
            if renames:
                txn.after_commit(lambda: _rename_flags(self.path, renames))
            return [info for info, _old, _base in changed], refused

        return self.store.write(op).addCallback(self._changed)

    def expunge(self, uids: Iterable[int] | None = None) -> Deferred[list[int]]:
        wanted = None if uids is None else list(uids)

        def op(txn: Txn) -> list[int]:
            targets = wanted
            if targets is None:
                targets = [
                    uid
                    for uid, flags, _m in index.flag_range(txn, self.folder_id, 1, None)
                    if DELETED in flags
                ]
            removed = index.remove_messages(txn, self._record(txn), targets)
            txn.after_commit(lambda: self._unlink_all(removed))
            return [uid for uid, _b, _f in removed]

        return self.store.write(op).addCallback(self._changed)

    def copy(self, uids: Iterable[int], destination: str) -> Deferred[list[tuple[int, int]]]:
        return self._copy(uids, destination, remove=False)

    def move(self, uids: Iterable[int], destination: str) -> Deferred[list[tuple[int, int]]]:
        return self._copy(uids, destination, remove=True)

    @inlineCallbacks
    def _copy(self, uids: Iterable[int], destination: str, remove: bool) -> Any:
        target = self.account.folder(normalize_folder_name(destination))
        items = []
        with self.store.db.read() as txn:
            for uid in sorted(set(uids)):
                found = index.message(txn, self.folder_id, uid)
                if found is not None:
                    record, _modseq, flags = found
                    items.append((uid, record, flags))
        if not items:
            return []
        bases = yield self.store.in_thread(
            _link_all,
            self.path,
            target.path,
            [(r["base"], f) for _u, r, f in items],
            self.store.fsync,
        )

        address, limits = self.account.address, self.account.quota_limits()

        def op(txn: Txn) -> list[tuple[int, int]]:
            if not remove:  # a MOVE within the account leaves its usage as it was
                size = sum(record["size"] for _u, record, _f in items)
                quota.check(txn, address, limits, size, len(items))
            pairs = []
            for (uid, record, flags), base in zip(items, bases):
                new_uid = target._add(
                    txn,
                    base,
                    flags,
                    record["size"],
                    record["internaldate"],
                    None,
                    record["object_id"],
                )
                pairs.append((uid, new_uid))
            if remove:
                removed = index.remove_messages(txn, self._record(txn), [u for u, _r, _f in items])
                txn.after_commit(lambda: self._unlink_all(removed))
            return pairs

        try:
            pairs = yield self.store.write(op)
        except Exception:  # not committed (over quota, index full, ...): no file stays
            yield self.store.in_thread(_discard_new, target.path, bases)
            raise
        self.store.changes.notify(self.account.address, target.name)
        if remove:
            self._changed(None)
        return pairs

    def _changed(self, result: T) -> T:
        """Tell watchers of this folder (IDLE sessions) that a change is durable."""
        self.store.changes.notify(self.account.address, self.name)
        return result


@implementer(IMessage)
class MaildirMessage:
    def __init__(self, mailbox: MaildirMailbox, info: MessageInfo, base: str) -> None:
        self.mailbox = mailbox
        self.info = info
        self.base = base

    def path(self) -> str:
        return find_file(self.mailbox.path, self.base, self.info.flags)

    def open(self) -> BinaryIO:
        # Where its flags say first, without a stat (FETCH BODY[] opens a file per message);
        # find_file's search only when it is not there.
        try:
            name = maildir.file_name(self.base, self.info.flags)
            return open(os.path.join(self.mailbox.path, "cur", name), "rb")
        except FileNotFoundError:
            return open(self.path(), "rb")

    def set_spam_verdict(self, verdict: SpamVerdict) -> Deferred[None]:
        key = self.info.object_id.encode()
        value = spam_record(verdict)

        def op(txn: Txn) -> None:
            meta = txn.get_json(b"objects", key) or {}
            meta["spam"] = value
            txn.put(b"objects", key, dump(meta))

        return self.mailbox.store.write(op)
