"""Bring the index back in line with the maildir files.

- :func:`recover_new` runs at every start: files in ``new/`` are either indexed already (a
  crash came after the commit: just move them to ``cur/``) or not (a crash came before it, or
  an outside deliverer put them there: index them).
- :func:`reindex` is ``mailserver reindex``: the files are the truth. Known files keep their
  UID, modseq and keywords and take the system flags from their names (a file whose
  ``names`` entry was lost is known by its message entry's record, and gets the entry
  back); unknown files get new UIDs (hard links to one inode share one object id, i.e. they
  are labels of one message); index entries without a file are dropped like an expunge (a
  tombstone each, and a higher HIGHESTMODSEQ, so QRESYNC clients hear of them); folders on
  disk but not in the index are added; each folder's EXISTS, unseen and size counters are
  recounted from its entries (an index that lost entries keeps counters that no longer
  match); each folder's header index is brought in step with its messages
  (:func:`mailserver.store.header_audit.repair_folder`: entries of messages that are gone
  deleted, missing SEARCH texts and text leaves written from the parse results), and entries
  of folders that are gone are deleted. New files get their header block, texts and leaves
  as at delivery, from the parse of the file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import inlineCallbacks

from mailserver.db import Txn
from mailserver.db.schema import decode_flags, name_key, u32
from mailserver.store import header_audit, index, maildir, quota, sketch
from mailserver.store.mailbox import move_to_cur
from mailserver.types import SEEN, SYSTEM_FLAGS, FlagMode

if TYPE_CHECKING:
    from mailserver.store.mailbox import MaildirMailbox
    from mailserver.store.maildir_store import MaildirStore

#: Maildir convention: a file in tmp/ untouched for 36 hours is debris.
TMP_MAX_AGE = 36 * 3600


@dataclass
class ReindexReport:
    folders_added: int = 0
    folders_dropped: int = 0
    messages_added: int = 0
    messages_dropped: int = 0
    flags_fixed: int = 0
    files_seen: int = 0
    #: header index entries deleted (orphans) or written (missing texts, leaves)
    header_index_fixed: int = 0


def _scan_new(path: str, now: float) -> list[str]:
    """Names in ``new/`` (oldest first), after removing stale ``tmp/`` debris."""
    tmp = os.path.join(path, "tmp")
    for name in os.listdir(tmp) if os.path.isdir(tmp) else ():
        full = os.path.join(tmp, name)
        try:
            if now - os.stat(full).st_mtime > TMP_MAX_AGE:
                os.unlink(full)
        except FileNotFoundError:
            pass
    new = os.path.join(path, "new")
    return sorted(os.listdir(new)) if os.path.isdir(new) else []


def _stat(path: str) -> tuple[int, float]:
    status = os.stat(path)
    return status.st_size, status.st_mtime


@inlineCallbacks
def _index_file(
    mailbox: MaildirMailbox, subdir: str, name: str, object_id: str, first: bool
) -> Any:
    """Index one file found on disk as (a label of) ``object_id`` and move it to ``cur/``;
    the ``first`` file of an object carries its parsed MIME data. Returns its UID."""
    store = mailbox.store
    base, flags = maildir.split_name(name)
    path = os.path.join(mailbox.path, subdir, name)
    size, mtime = yield store.in_thread(_stat, path)
    # Parsed from the file in bounded memory, however large the message (store/sketch.py).
    meta = (yield store.in_thread(sketch.file_meta, path)) if first else None
    if subdir == "cur" or ":" in name:
        # Give it a plain name in new/ so the usual post-commit step files it in cur/.
        yield store.in_thread(os.rename, path, os.path.join(mailbox.path, "new", base))
    def op(txn: Txn) -> int:
        # Checked again in the write itself: start-up recovery runs while the listeners
        # already deliver, and a delivery renames its file into new/ before its commit, so
        # a file seen unindexed by the scan may be indexed by the time this write runs
        # (the writes are serial, so this check cannot race). Indexing it again would give
        # the message a second UID.
        indexed = index.uid_for_name(txn, mailbox.folder_id, base)
        if indexed is not None:
            return indexed
        return mailbox._add(txn, base, flags, size, mtime, meta, object_id)

    uid = yield store.write(op)
    return uid


@inlineCallbacks
def recover_new(store: MaildirStore) -> Any:
    count = 0
    now = time.time()
    for address in store.accounts():
        account = store.account(address)
        for info in account.list_folders():
            mailbox = account.folder(info.name)
            names = yield store.in_thread(_scan_new, mailbox.path, now)
            for name in names:
                base, _ = maildir.split_name(name)
                with store.db.read() as txn:
                    uid = index.uid_for_name(txn, mailbox.folder_id, base)
                    found = None if uid is None else index.message(txn, mailbox.folder_id, uid)
                if found is not None:
                    yield store.in_thread(move_to_cur, mailbox.path, base, found[2])
                    continue
                try:
                    yield _index_file(mailbox, "new", name, index.new_object_id(), True)
                except FileNotFoundError:
                    continue  # moved to cur/ by the commit of the delivery that wrote it
                count += 1
    return count


def _account_dirs(root: str) -> list[str]:
    found = []
    for domain in sorted(os.listdir(root)) if os.path.isdir(root) else ():
        domain_path = os.path.join(root, domain)
        if not os.path.isdir(domain_path):
            continue
        for local in sorted(os.listdir(domain_path)):
            if os.path.isdir(os.path.join(domain_path, local, "cur")):
                found.append(os.path.join(domain, local))
    return found


@inlineCallbacks
def adopt_accounts(store: MaildirStore) -> Any:
    """Give every account directory on disk that the index does not know an account record
    (its folders come from :func:`reindex`). Deferred[list of adopted addresses]."""
    dirnames = yield store.in_thread(_account_dirs, store.root)
    adopted = []
    for dirname in dirnames:
        address = maildir.address_from_dirname(dirname)
        if store.has_account(address):
            continue
        yield store.write(
            lambda txn, a=address, d=dirname: index.create_account(txn, a, d, False)
        )
        adopted.append(address)
    return adopted


def _disk_folders(account_path: str) -> list[str]:
    names = ["INBOX"]
    for entry in sorted(os.listdir(account_path)):
        if entry.startswith(".") and os.path.isdir(os.path.join(account_path, entry, "cur")):
            try:
                names.append(maildir.folder_name(entry))
            except ValueError:
                continue
    return names


def _disk_files(path: str) -> list[tuple[str, str, tuple[int, int]]]:
    """(subdir, name, (device, inode)) of every message file, oldest first."""
    files = []
    for subdir in ("new", "cur"):
        directory = os.path.join(path, subdir)
        for name in os.listdir(directory) if os.path.isdir(directory) else ():
            st = os.stat(os.path.join(directory, name))
            files.append((subdir, name, (st.st_dev, st.st_ino)))
    return sorted(files, key=lambda f: f[1])


@inlineCallbacks
def reindex(
    store: MaildirStore, address: str, progress: Callable[[str], None] | None = None
) -> Any:
    """Reconcile one account's index with its files; Deferred[ReindexReport]."""
    report = ReindexReport()
    account = store.account(address)
    on_disk = yield store.in_thread(_disk_folders, account.path)
    known = {info.name for info in account.list_folders()}
    for name in on_disk:
        if name not in known:
            yield store.write(lambda txn, n=name: index.create_folder(txn, address, n, None))
            report.folders_added += 1
    for name in known - set(on_disk):
        yield account.delete_folder(name)
        report.folders_dropped += 1
    inode_objects: dict[tuple[int, int], str] = {}
    for name in on_disk:
        if progress is not None:
            progress(name)
        mailbox = account.folder(name)
        files = yield store.in_thread(_disk_files, mailbox.path)
        report.files_seen += len(files)
        unknown = []
        fixes: dict[frozenset[str], list[int]] = {}
        with store.db.read() as txn:
            fid = mailbox.folder_id
            entries = _entries_by_base(txn, fid)
            kept: dict[str, int] = {}
            relinked: list[tuple[str, int]] = []
            for subdir, file, inode in files:
                base, file_flags = maildir.split_name(file)
                uid = index.uid_for_name(txn, fid, base)
                found = None if uid is None else index.message(txn, fid, uid)
                if found is None and entries.get(base):
                    # Its ``names`` entry was lost, its message entry stands: it keeps its UID.
                    uid = entries[base][0]
                    found = index.message(txn, fid, uid)
                    relinked.append((base, uid))
                if uid is None or found is None:
                    unknown.append((subdir, file, inode))
                    continue
                kept[base] = uid
                record, _modseq, flags = found
                inode_objects.setdefault(inode, record["object_id"])
                wanted = (flags - SYSTEM_FLAGS) | (file_flags & SYSTEM_FLAGS)
                if file_flags != maildir.split_name(maildir.file_name(base, flags))[1]:
                    fixes.setdefault(frozenset(wanted), []).append(uid)
            dead_names = [
                bytes(key)
                for key, _ in txn.prefix(b"names", u32(fid))
                if bytes(key[4:]).decode() not in kept
            ]
            # Entries whose file is gone, found by their ``names`` entry or by their record
            # (a lost ``names`` entry), and second entries of one file.
            named = (index.uid_for_name(txn, fid, key[4:].decode()) for key in dead_names)
            stale = sorted(
                {uid for uid in named if uid is not None}
                | {uid for base, uids in entries.items() for uid in uids if kept.get(base) != uid}
            )
        for wanted, uids in fixes.items():
            yield mailbox.store_flags(uids, wanted, FlagMode.REPLACE)
            report.flags_fixed += len(uids)
        if stale or dead_names or relinked:
            dropped = yield store.write(
                lambda txn, s=stale, m=mailbox, d=dead_names, r=relinked: _drop(txn, m, s, d, r)
            )
            report.messages_dropped += dropped
        for subdir, file, inode in unknown:
            first = inode not in inode_objects
            object_id = inode_objects.setdefault(inode, index.new_object_id())
            yield _index_file(mailbox, subdir, file, object_id, first)
            report.messages_added += 1
        yield store.write(lambda txn, f=mailbox.folder_id: _recount(txn, f))
        report.header_index_fixed += yield store.write(_repair_header_index(mailbox.folder_id))
    report.header_index_fixed += yield store.write(header_audit.drop_stray)
    # The quota counters (RFC 9208 usage) follow the messages now in the index.
    yield store.write(lambda txn: quota.rebuild_usage(txn, address))
    return report


def _repair_header_index(fid: int) -> Callable[[Txn], int]:
    """The write that brings folder ``fid``'s header index in step with its messages."""

    def repair(txn: Txn) -> int:
        return header_audit.repair_folder(txn, fid)

    return repair


def _recount(txn: Txn, fid: int) -> None:
    """Set the folder's EXISTS, unseen and size counters from its index entries."""
    record = index.folder(txn, fid)
    exists = unseen = size = 0
    for key, value in txn.prefix(b"flags", u32(fid)):
        _modseq, flags = decode_flags(value)
        exists += 1
        unseen += SEEN not in flags
        meta = txn.get_json(b"messages", key)
        size += meta["size"] if meta else 0
    if (record["exists"], record["unseen"], record["size"]) != (exists, unseen, size):
        record.update(exists=exists, unseen=unseen, size=size)
        index.update_folder(txn, record)


def _entries_by_base(txn: Txn, fid: int) -> dict[str, list[int]]:
    """File base -> UIDs (ascending) of the folder's message entries, from their records."""
    found: dict[str, list[int]] = {}
    for uid, _flags, _modseq in index.flag_range(txn, fid, 1, None):
        got = index.message(txn, fid, uid)
        if got is not None and got[0] is not None:
            found.setdefault(got[0]["base"], []).append(uid)
    return found


def _drop(
    txn: Txn,
    mailbox: MaildirMailbox,
    uids: list[int],
    dead_names: list[bytes],
    relinked: list[tuple[str, int]],
) -> int:
    """Remove the stale entries ``uids`` (like an expunge) and the ``names`` entries of files
    that are gone; give files whose ``names`` entry was lost theirs again. How many message
    entries were removed."""
    fid = mailbox.folder_id
    removed = index.remove_messages(txn, index.folder(txn, fid), uids)
    for key in dead_names:
        txn.delete(b"names", key)
    for base, uid in relinked:
        txn.put(b"names", name_key(fid, base), u32(uid))
    return len(removed)
