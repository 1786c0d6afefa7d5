"""Is the index in step with the maildir files? A cheap check the server runs at every start.

The files are the truth (``mailserver reindex`` rebuilds the index from them). After start-up
recovery every message file of a folder (in ``cur/`` and ``new/``) has an index entry and
every entry a file, so a difference means the index lost entries (a damaged or restored
index) or the files changed behind the server's back. The check compares, per folder, the
number of files, of index entries and the folder's EXISTS counter, and finds account
directories on disk that the index does not know (a lost or replaced index). For each folder
found out of step it also audits the header index (:mod:`mailserver.store.header_audit`):
entries of messages that are gone, or messages without their SEARCH texts, which could make
SEARCH SUBJECT/FROM/... miss a message. That audit reads every message's entries, so a
healthy store does not pay for it at each start; ``mailserver verify`` audits every folder.
It reads directories and the index only; it changes nothing.

Each problem comes with the command that repairs it, so the log says what to do:
``mailserver reindex ADDRESS`` for a folder out of step (files, counters or header index),
``mailserver reindex --adopt`` for mail the index does not know.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lmdb
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mailserver.db.schema import load, u32
from mailserver.store import header_audit, index, maildir

if TYPE_CHECKING:
    from mailserver.store.maildir_store import MaildirStore

__all__ = [
    "HeaderIndexMismatch",
    "Mismatch",
    "check",
    "damaged_index",
    "header_index_problems",
    "unknown_accounts",
    "verify_at_start",
]

log = Logger(namespace="mailserver.store")

#: What to do about a damaged index; users, domains and passwords live in it too.
REBUILD = (
    "stop the server, move {path} aside, restore the users and domains (from a backup, or "
    "'mailserver domain add' / 'mailserver user add'), then run 'mailserver reindex --adopt' "
    "to rebuild the mailboxes from the maildir files"
)


@dataclass(frozen=True)
class Mismatch:
    """One folder whose files and index disagree."""

    address: str
    folder: str
    files: int
    entries: int
    exists: int

    def __str__(self) -> str:
        return (
            f"{self.address} {self.folder}: {self.files} message file(s), {self.entries} "
            f"index entries, EXISTS {self.exists}"
        )


@dataclass(frozen=True)
class HeaderIndexMismatch:
    """One folder whose header index disagrees with its messages."""

    address: str
    folder: str
    detail: str  # :meth:`mailserver.store.header_audit.FolderAudit.describe`

    def __str__(self) -> str:
        return f"{self.address} {self.folder}: header index has {self.detail}"


def _count_files(path: str) -> int:
    total = 0
    for sub in ("cur", "new"):
        try:
            total += sum(1 for entry in os.scandir(os.path.join(path, sub)) if entry.is_file())
        except FileNotFoundError:
            continue
    return total


def unknown_accounts(store: MaildirStore) -> list[str]:
    """Addresses whose maildir is on disk under the store's root but not in the index."""
    with store.db.read() as txn:
        known = {load(value)["dirname"] for _key, value in txn.prefix(b"accounts", b"")}
    found = []
    root = store.root
    for domain in sorted(os.listdir(root)) if os.path.isdir(root) else ():
        domain_path = os.path.join(root, domain)
        if not os.path.isdir(domain_path):
            continue
        for local in sorted(os.listdir(domain_path)):
            dirname = os.path.join(domain, local)
            if dirname not in known and os.path.isdir(os.path.join(root, dirname, "cur")):
                found.append(maildir.address_from_dirname(dirname))
    return found


def check(store: MaildirStore) -> list[Mismatch]:
    """Every folder of every account whose file count, index entries and EXISTS disagree.
    Blocking (directory listings): run it in a worker thread."""
    problems = []
    for address in store.accounts():
        account = store.account(address)
        for info in account.list_folders():
            mailbox = account.folder(info.name)
            files = _count_files(mailbox.path)
            with store.db.read() as txn:
                entries = sum(1 for _ in txn.prefix(b"flags", u32(mailbox.folder_id)))
                exists = index.folder(txn, mailbox.folder_id)["exists"]
            if not files == entries == exists:
                problems.append(Mismatch(address, info.name, files, entries, exists))
    return problems


def header_index_problems(
    store: MaildirStore, only: set[tuple[str, str]] | None = None
) -> list[HeaderIndexMismatch]:
    """Every folder of every account (or only the ``(address, folder name)`` pairs in
    ``only``) whose header index has orphans or messages without their SEARCH texts
    (:func:`mailserver.store.header_audit.audit_folder`), one read transaction per folder.
    Blocking: run it in a worker thread."""
    problems = []
    for address in store.accounts():
        with store.db.read() as txn:
            found = [(name, fid) for name, fid, _record in index.folders(txn, address)]
        for name, fid in found:
            if only is not None and (address, name) not in only:
                continue
            with store.db.read() as txn:
                audit = header_audit.audit_folder(txn.raw, txn.dbs, fid)
            if audit.problems:
                problems.append(HeaderIndexMismatch(address, name, audit.describe()))
    return problems


def damaged_index(error: BaseException, path: str) -> str | None:
    """One line for the log when ``error`` shows the LMDB index at ``path`` is damaged
    (what LMDB reports for corrupt pages), else None."""
    if not isinstance(error, lmdb.Error):
        return None
    return f"the index at {path} is damaged ({error}): " + REBUILD.format(path=path)


def verify_at_start(store: MaildirStore, index_path: str) -> Deferred[int]:
    """Run :func:`check` (then :func:`header_index_problems` of the folders it finds out of
    step) and :func:`unknown_accounts` in the thread pool and log one warning per problem
    with the command that repairs it; Deferred[number of problems]. A failure of the check
    itself is logged, never raised."""

    def run() -> tuple[list[Mismatch | HeaderIndexMismatch], list[str]]:
        mismatches = check(store)
        damaged = {(mismatch.address, mismatch.folder) for mismatch in mismatches}
        headers = header_index_problems(store, only=damaged) if damaged else []
        return [*mismatches, *headers], unknown_accounts(store)

    def report(found: tuple[list[Mismatch | HeaderIndexMismatch], list[str]]) -> int:
        mismatches, unknown = found
        for mismatch in mismatches:
            log.warn(
                "index out of step with the maildir files: {mismatch}; run 'mailserver "
                "reindex {address}' (best with the server stopped)"
                if isinstance(mismatch, Mismatch)
                else "index out of step with its messages: {mismatch}; run 'mailserver "
                "reindex {address}' (SEARCH may miss messages until then)",
                mismatch=str(mismatch),
                address=mismatch.address,
            )
        if unknown:
            log.warn(
                "{count} mailbox(es) on disk are not in the index ({addresses}): run "
                "'mailserver reindex --adopt', and 'mailserver user add' for their users",
                count=len(unknown),
                addresses=", ".join(unknown),
            )
        problems = len(mismatches) + len(unknown)
        log.info("start-up check done: {problems} problem(s)", problems=problems)
        return problems

    def failed(failure: Any) -> int:
        line = damaged_index(failure.value, index_path)
        if line is not None:
            log.error(line)
        else:
            log.failure("the start-up consistency check failed", failure)
        return 0

    d = store.in_thread(run)
    d.addCallbacks(report, failed)
    return d
