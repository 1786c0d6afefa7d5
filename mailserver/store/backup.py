"""Online backups of a data directory: a compacted LMDB snapshot plus the files it references.

A backup is a directory::

    DEST/manifest.json           format, source, counts, and {path: {size, sha256}} of every file
    DEST/index/data.mdb          the index, copied with compaction in ONE read transaction
    DEST/mail/<account>/<folder>/cur/<base>:2,<flags>   every message the snapshot references
    DEST/spool/<queue id>        every queued message the snapshot references
    DEST/<anything else>         the other files of the data directory (tls/, dkim/, secrets)

Guarantees, with the server running and mail flowing:

- **Consistent.** The index is one LMDB read transaction (``Environment.copy(compact=True)``),
  so every message acknowledged before the backup began is in it, and nothing half-written is.
  Exactly the message files that snapshot references are in the backup, named with the flags
  the snapshot holds, so ``reindex`` on a restored backup changes nothing.
- **Expunges after the snapshot lose nothing.** Before the snapshot every message file is
  *staged* into ``DEST/.staging`` (hard-linked with ``link=True`` on the same file system,
  else copied): a file the server unlinks afterwards still has its staged copy.
  Files that arrive between staging and the snapshot are staged from the live maildir after
  it; if one of them vanished meanwhile (delivered and expunged in that window), the snapshot
  is retaken, up to :data:`SNAPSHOT_ATTEMPTS` times.
- **Flag changes are tolerated.** Maildir flags live in file names, so files are looked up by
  their unique base name, never by their full name.
- **Checked.** The manifest, written last and atomically once everything else is on stable
  storage, lists the SHA-256 and size of every
  file; a directory without one is an unfinished backup (:mod:`mailserver.store.backup_check`
  verifies and restores).

Every function here blocks (file copies, hashing, fsync): the command line calls them with no
reactor running; a server would call them in a worker thread.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lmdb

from mailserver import durable
from mailserver.db import Snapshot, schema
from mailserver.errors import MailError
from mailserver.store import maildir

#: The manifest's file name and format tag.
MANIFEST = "manifest.json"
FORMAT = "mailserver-backup/1"
#: Top-level directories of a data directory that the backup treats specially.
INDEX, MAIL, SPOOL = "index", "mail", "spool"
STAGING = ".staging"
#: Times the snapshot is retaken when a file it references vanished before it was staged.
SNAPSHOT_ATTEMPTS = 5
#: Read files in chunks of this size when hashing and copying.
CHUNK = 1 << 16

#: ``progress(phase, done, total)``: ``total`` is None while unknown.
Progress = Callable[[str, int, int | None], None]


def no_progress(phase: str, done: int, total: int | None) -> None:
    """The default :data:`Progress`: say nothing."""


class BackupError(MailError):
    """A backup, verification or restore that cannot go on: the text says why and what to do."""

    code = 451
    enhanced = "4.3.0"

    def __init__(self, text: str) -> None:
        super().__init__(text)


@dataclass(frozen=True)
class MessageFile:
    """A message file an index references: where it lives relative to the data directory."""

    folder: str  # e.g. ``mail/example.org/alice/.Sent`` (``mail/example.org/alice`` = INBOX)
    base: str
    flags: frozenset[str]
    size: int
    account: str
    name: str  # the folder's name
    uid: int

    @property
    def path(self) -> str:
        """Its path in a backup: in ``cur/``, with the index's flags in the name."""
        return os.path.join(self.folder, "cur", maildir.file_name(self.base, self.flags))


@dataclass
class BackupReport:
    messages: int = 0
    queued: int = 0
    files: int = 0
    bytes: int = 0
    snapshots: int = 0
    linked: int = 0


# -- reading an index ----------------------------------------------------------------------


def _open_copy(path: str) -> Any:
    """The LMDB environment of the index copy in ``path``, read-only and without a lock file
    (nothing else writes a backup's copy)."""
    data = os.path.join(path, "data.mdb")
    if not os.path.isfile(data):
        raise BackupError(f"no index at {data}")
    try:
        return lmdb.open(
            path,
            readonly=True,
            lock=False,
            max_dbs=len(schema.SUBDBS) + 4,
            map_size=max(os.path.getsize(data), 1 << 20),
        )
    except lmdb.Error as error:
        raise BackupError(f"cannot read the index at {path}: {error}") from None


def index_version(path: str) -> int:
    """The schema version of the index in ``path`` (a backup's copy; only ``meta`` is read,
    so an index of an older schema, which lacks the newer sub-dbs, is read too); 0 when it
    records none. BackupError when it is missing or unreadable."""
    env = _open_copy(path)
    try:
        with env.begin(write=False) as txn:
            meta = env.open_db(b"meta", txn=txn, create=False)
            raw = txn.get(b"schema_version", db=meta)
            return int(schema.load(bytes(raw))) if raw is not None else 0
    except (lmdb.Error, ValueError, TypeError) as error:
        raise BackupError(
            f"cannot read the schema version of the index at {path}: {error}"
        ) from None
    finally:
        env.close()


def newer_schema(path: str, version: int) -> BackupError:
    """The refusal of an index written by a newer program than this one."""
    return BackupError(
        f"the index at {path} has schema {version}, newer than this program's "
        f"{schema.SCHEMA_VERSION}: it was made by a newer mailserver; verify or restore it "
        "with that version (or a later one)"
    )


@contextmanager
def open_index(path: str) -> Iterator[tuple[Any, dict[bytes, Any]]]:
    """A read transaction on the index in ``path`` (a backup's copy: no lock file is made)
    and its sub-databases. BackupError when it is missing, unreadable or of another schema
    (an older one is upgraded first: :func:`mailserver.store.backup_check.upgrade_index`)."""
    version = index_version(path)
    if version > schema.SCHEMA_VERSION:
        raise newer_schema(path, version)
    if version < schema.SCHEMA_VERSION:
        raise BackupError(
            f"the index at {path} has schema {version}, older than this program's "
            f"{schema.SCHEMA_VERSION}: upgrade a copy first (mailserver verify and restore do)"
        )
    env = _open_copy(path)
    try:
        with env.begin(write=False) as txn:
            dbs = {name: env.open_db(name, txn=txn, create=False) for name in schema.SUBDBS}
            yield txn, dbs
    except lmdb.Error as error:
        raise BackupError(f"cannot read the index at {path}: {error}") from None
    finally:
        env.close()


def folder_dirs(txn: Any, dbs: dict[bytes, Any]) -> dict[int, tuple[str, str, str]]:
    """Folder id -> (directory relative to the data directory, account, folder name), as
    :class:`mailserver.store.maildir_store.MaildirAccount` lays them out."""
    accounts = {
        bytes(key).decode(): schema.load(bytes(value))["dirname"]
        for key, value in txn.cursor(db=dbs[b"accounts"])
    }
    found = {}
    for key, value in txn.cursor(db=dbs[b"finfo"]):
        record = schema.load(bytes(value))
        dirname = accounts.get(record["account"])
        if dirname is None:
            continue  # a folder of a deleted account: no messages reference it
        sub = record.get("dirname")
        if sub is None:
            sub = maildir.folder_dirname(record["name"])
        path = os.path.normpath(os.path.join(MAIL, dirname, sub))
        found[schema.from_u32(bytes(key))] = (path, record["account"], record["name"])
    return found


def message_files(txn: Any, dbs: dict[bytes, Any]) -> Iterator[MessageFile]:
    """Every message entry of the index, with the folder and flags its file must have."""
    folders = folder_dirs(txn, dbs)
    flags_db = dbs[b"flags"]
    for key, value in txn.cursor(db=dbs[b"messages"]):
        fid, uid = schema.split_msg_key(bytes(key))
        where = folders.get(fid)
        if where is None:
            continue
        raw_flags = txn.get(bytes(key), db=flags_db)
        flags = schema.decode_flags(bytes(raw_flags))[1] if raw_flags is not None else frozenset()
        record = schema.load(bytes(value))
        yield MessageFile(where[0], record["base"], flags, record["size"], where[1], where[2], uid)


def queued_files(txn: Any, dbs: dict[bytes, Any]) -> list[str]:
    """The spool file (relative path) of every queue entry."""
    return [os.path.join(SPOOL, bytes(key).decode()) for key, _ in txn.cursor(db=dbs[b"queue"])]


# -- files -------------------------------------------------------------------------------


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def copy_file(source: str, target: str, fsync: bool = True) -> None:
    """Copy bytes, mode and times (mtime is a maildir message's internal date), durably;
    run as root, the owner too (``cp -a``), so the server's user can still write them."""
    with open(source, "rb") as f:
        durable.write_new(target, f, fsync=fsync)
        if os.geteuid() == 0:
            stat = os.fstat(f.fileno())
            os.chown(target, stat.st_uid, stat.st_gid)
    shutil.copystat(source, target)


def mirror_owners(source_root: str, target_root: str) -> None:
    """Run as root: give each directory and file under ``target_root`` the owner of the one
    at the same place under ``source_root`` (e.g. the folders, their ``maildirfolder``
    markers, the index), or, where there is none there (e.g. a ``spool/`` the backup made),
    the owner just given to its directory. Nothing otherwise."""
    if os.geteuid() != 0:
        return
    given: dict[str, tuple[int, int]] = {}
    for current, _dirs, files in os.walk(target_root):  # top-down: a directory's owner first
        relative = os.path.relpath(current, target_root)
        inherited = given.get(os.path.dirname(current))
        for name in [".", *files]:
            target = current if name == "." else os.path.join(current, name)
            try:
                stat = os.stat(os.path.join(source_root, relative, name))
                owner: tuple[int, int] | None = (stat.st_uid, stat.st_gid)
            except FileNotFoundError:
                owner = inherited if name == "." else given.get(current)
            if owner is None:
                continue
            os.chown(target, *owner)
            if name == ".":
                given[current] = owner


def find_live(folder: str, base: str) -> str | None:
    """Where a message file with ``base`` is now in the folder directory ``folder`` (it may
    have been renamed for a flag change, or still sit in ``new/``); None if gone."""
    candidate = os.path.join(folder, "new", base)
    if os.path.exists(candidate):
        return candidate
    try:
        names = os.listdir(os.path.join(folder, "cur"))
    except FileNotFoundError:
        return None
    for name in names:
        if maildir.split_name(name)[0] == base:
            return os.path.join(folder, "cur", name)
    return None


class Listings:
    """Each live folder's files by base name, listed once (``cur/`` then ``new/``), so
    looking up every message of a folder costs one directory listing, not one per message."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self._folders: dict[str, dict[str, str]] = {}

    def find(self, folder: str, base: str) -> str | None:
        """The path of the file with ``base`` in ``folder`` (relative to the data directory)
        as listed; :func:`find_live` (a fresh look) for one listed before it arrived."""
        listed = self._folders.get(folder)
        if listed is None:
            listed = self._folders[folder] = self._list(os.path.join(self.data_dir, folder))
        found = listed.get(base)
        return found if found is not None else find_live(
            os.path.join(self.data_dir, folder), base
        )

    @staticmethod
    def _list(path: str) -> dict[str, str]:
        found = {}
        for sub in ("new", "cur"):
            directory = os.path.join(path, sub)
            try:
                names = os.listdir(directory)
            except FileNotFoundError:
                continue
            for name in names:
                found[maildir.split_name(name)[0]] = os.path.join(directory, name)
        return found


def read_manifest(root: str) -> dict[str, Any]:
    """The manifest of the backup in ``root``; BackupError when it has none or a bad one."""
    path = os.path.join(root, MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise BackupError(
            f"{root} has no {MANIFEST}: it is not a backup, or the backup did not finish "
            "(take a new one with: mailserver backup DEST)"
        ) from None
    except (OSError, ValueError) as error:
        raise BackupError(f"cannot read {path}: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path} is not a {FORMAT} manifest")
    return manifest


class _Stage:
    """Files staged under ``DEST/.staging`` before the snapshot, keyed by (folder, base)."""

    def __init__(self, root: str, link: bool) -> None:
        self.root = root
        self.link = link
        self.files: dict[tuple[str, str], str] = {}
        self.inodes: dict[tuple[int, int], str] = {}
        self.linked = 0
        self._names = itertools.count(1)
        os.makedirs(root, mode=0o700)

    def take(self, source: str, key: tuple[str, str]) -> bool:
        """Stage ``source`` under ``key``; False when it vanished meanwhile."""
        if key in self.files:
            return True
        target = os.path.join(self.root, str(next(self._names)))
        try:
            stat = os.stat(source)
            inode = (stat.st_dev, stat.st_ino)
            twin = self.inodes.get(inode)
            if twin is not None:  # a COPY'd message: one inode, several names
                os.link(twin, target)
            elif self.link and _try_link(source, target):
                self.linked += 1
            else:
                copy_file(source, target, fsync=False)  # one sync before the manifest
        except FileNotFoundError:
            return False
        self.inodes.setdefault(inode, target)
        self.files[key] = target
        return True


def _try_link(source: str, target: str) -> bool:
    try:
        os.link(source, target)
    except OSError as error:
        if error.errno in (18, 1, 95):  # EXDEV, EPERM, EOPNOTSUPP: copy instead
            return False
        raise
    return True


def _prepare(data_dir: str, dest: str) -> None:
    if not os.path.isdir(os.path.join(data_dir, INDEX)):
        raise BackupError(
            f"no index in {data_dir}: is server.data_dir right? (pass --config with the "
            "server's config)"
        )
    real_data, real_dest = os.path.realpath(data_dir), os.path.realpath(dest)
    if real_dest == real_data or real_dest.startswith(real_data + os.sep):
        raise BackupError(f"{dest} is inside the data directory {data_dir}; back up elsewhere")
    if os.path.exists(dest):
        if not os.path.isdir(dest) or os.listdir(dest):
            raise BackupError(
                f"{dest} exists and is not an empty directory; give a new directory "
                "(backups are never merged)"
            )
    else:
        os.makedirs(dest, mode=0o700)


def _walk_live(data_dir: str) -> Iterator[tuple[str, tuple[str, str]]]:
    """(path, (folder, base)) of every file in a live ``cur/``/``new/`` and of every spool
    file (folder ``spool``, base = the queue id)."""
    mail = os.path.join(data_dir, MAIL)
    for root, _dirs, files in os.walk(mail):
        if os.path.basename(root) not in ("cur", "new"):
            continue
        folder = os.path.relpath(os.path.dirname(root), data_dir)
        for name in files:
            yield os.path.join(root, name), (folder, maildir.split_name(name)[0])
    spool = os.path.join(data_dir, SPOOL)
    for name in os.listdir(spool) if os.path.isdir(spool) else ():
        path = os.path.join(spool, name)
        if os.path.isfile(path):
            yield path, (SPOOL, name)


def take_backup(
    data_dir: str,
    dest: str,
    *,
    map_size: int,
    link: bool = False,
    fsync: bool = True,
    progress: Progress = no_progress,
) -> BackupReport:
    """Back up ``data_dir`` (server running or not) into ``dest``, which must be absent or an
    empty directory; see the module docstring for what is guaranteed."""
    _prepare(data_dir, dest)
    report = BackupReport()
    stage = _Stage(os.path.join(dest, STAGING), link)
    live = list(_walk_live(data_dir))
    for done, (path, key) in enumerate(live, 1):
        stage.take(path, key)
        progress("staging", done, len(live))
    index_copy = os.path.join(dest, INDEX)
    for attempt in range(1, SNAPSHOT_ATTEMPTS + 1):
        report.snapshots = attempt
        _snapshot(data_dir, index_copy, map_size)
        with open_index(index_copy) as (txn, dbs):
            messages = list(message_files(txn, dbs))
            queued = queued_files(txn, dbs)
            folders = [path for path, _a, _n in folder_dirs(txn, dbs).values()]
        missing = _stage_missing(data_dir, stage, messages, queued)
        if not missing:
            break
        shutil.rmtree(index_copy)
    else:
        raise BackupError(
            f"{len(missing)} message file(s) vanished before they could be copied, "
            f"{SNAPSHOT_ATTEMPTS} times over (e.g. {missing[0]}); run the backup again"
        )
    _place(dest, stage, messages, queued, folders, progress)
    shutil.rmtree(stage.root)
    _copy_others(data_dir, dest)
    mirror_owners(data_dir, dest)
    report.messages, report.queued, report.linked = len(messages), len(queued), stage.linked
    manifest = _manifest(dest, data_dir, report, progress)
    report.files = len(manifest["files"])
    report.bytes = sum(entry["size"] for entry in manifest["files"].values())
    if fsync:  # every file and directory on stable storage before the manifest says so
        sync_tree(dest)
    durable.write_atomically(
        os.path.join(dest, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True).encode()
    )
    return report


def _snapshot(data_dir: str, target: str, map_size: int) -> None:
    """The live index copied with compaction in one read transaction (a consistent view)."""
    live = Snapshot.open(os.path.join(data_dir, INDEX), map_size=map_size)
    try:
        os.makedirs(target, mode=0o700)
        live.env.copy(target, compact=True)
    except lmdb.Error as error:
        raise BackupError(f"cannot copy the index: {error}") from None
    finally:
        live.close()


def _stage_missing(
    data_dir: str, stage: _Stage, messages: list[MessageFile], queued: list[str]
) -> list[str]:
    """Stage the referenced files that arrived after the staging walk; those gone."""
    missing = []
    listings = Listings(data_dir)
    for message in messages:
        key = (message.folder, message.base)
        if key in stage.files:
            continue
        found = listings.find(message.folder, message.base)
        if found is not None and not stage.take(found, key):  # renamed since it was listed
            found = find_live(os.path.join(data_dir, message.folder), message.base)
            found = found if found is not None and stage.take(found, key) else None
        if found is None:
            missing.append(message.path)
    for path in queued:
        key = (SPOOL, os.path.basename(path))
        if key not in stage.files and not stage.take(os.path.join(data_dir, path), key):
            missing.append(path)
    return missing


def _place(
    dest: str,
    stage: _Stage,
    messages: list[MessageFile],
    queued: list[str],
    folders: list[str],
    progress: Progress,
) -> None:
    """Move the referenced staged files to their places; make every folder's directories."""
    for folder in folders:  # INBOX is the account directory itself: no marker there
        maildir.make_maildir(os.path.join(dest, folder), os.path.basename(folder).startswith("."))
    os.makedirs(os.path.join(dest, SPOOL, "tmp"), mode=0o700, exist_ok=True)
    total = len(messages) + len(queued)
    done = 0
    for message in messages:
        os.rename(stage.files[(message.folder, message.base)], os.path.join(dest, message.path))
        done += 1
        progress("placing", done, total)
    for path in queued:
        os.rename(stage.files[(SPOOL, os.path.basename(path))], os.path.join(dest, path))
        done += 1
        progress("placing", done, total)


def _copy_others(data_dir: str, dest: str) -> None:
    """Every other regular file of the data directory (certificates, keys, secrets, logs)."""
    for root, dirs, files in os.walk(data_dir):
        relative = os.path.relpath(root, data_dir)
        if relative == ".":
            dirs[:] = [d for d in dirs if d not in (INDEX, MAIL, SPOOL)]
        target_dir = os.path.join(dest, relative)
        os.makedirs(target_dir, mode=0o700, exist_ok=True)
        for name in files:
            source = os.path.join(root, name)
            if os.path.isfile(source) and not os.path.islink(source):
                try:
                    copy_file(source, os.path.join(target_dir, name), fsync=False)
                except FileNotFoundError:
                    pass  # e.g. a log rotated away meanwhile


def sync_tree(root: str) -> None:
    """Make every file written under ``root`` durable: one ``sync()`` (far cheaper than an
    fsync per file for many small files), then each directory's entries."""
    os.sync()
    for current, _dirs, _files in os.walk(root):
        durable.fsync_directory(current)


def backup_files(root: str) -> Iterator[str]:
    """Every regular file of the backup in ``root`` (relative paths), manifest excluded."""
    for current, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.relpath(os.path.join(current, name), root)
            if path not in (MANIFEST, os.path.join(INDEX, "lock.mdb")):
                yield path


def _manifest(
    dest: str, data_dir: str, report: BackupReport, progress: Progress
) -> dict[str, Any]:
    paths = sorted(backup_files(dest))
    files = {}
    for done, path in enumerate(paths, 1):
        full = os.path.join(dest, path)
        files[path] = {"size": os.path.getsize(full), "sha256": sha256_file(full)}
        progress("checksums", done, len(paths))
    return {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": data_dir,
        "schema_version": schema.SCHEMA_VERSION,
        "messages": report.messages,
        "queued": report.queued,
        "files": files,
    }
