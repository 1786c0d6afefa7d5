"""Verifying backups and live data directories, and restoring a backup.

- :func:`verify_backup` checks a backup made by :func:`mailserver.store.backup.take_backup`:
  every file the manifest lists is there with its size and SHA-256, no file is there that
  it does not list, and every index entry (message, queued message) has its file, named
  with the index's flags and of the indexed size, while every message file is indexed.
- :func:`verify_live` checks a data directory in use: every index entry has its file (found
  by base name, wherever a flag change or a crash left it) of the indexed size, and every
  file in a folder's ``cur/`` is indexed. The server may be running: a file problem is
  reported only if it is still there when looked at again in a fresh read transaction (an
  expunge or delivery in between is not a problem).
- Both check the index against itself (:func:`index_problems`, in one read transaction):
  folder counters, UIDNEXT, HIGHESTMODSEQ and quota usage against the message entries, and
  the header index (``headers``, ``header_text``, ``text_parts``: no entry of a message or
  folder that is gone, every message with its SEARCH texts; :mod:`mailserver.store.header_audit`).
- :func:`restore` copies a verified backup into an empty data directory.
- A backup whose index has an older schema than this program's (made before an upgrade) is
  verified and restored too: its files are checked against the manifest as they were
  written, and the index checks run on the index upgraded by the server's own migrations
  (:func:`upgrade_index`): a temporary copy for :func:`verify_backup`, the restored index for
  :func:`restore`. An index of a newer schema is refused (BackupError naming the versions).

Each check returns the list of problems (one line each, naming the file or entry); an
empty list means all is well. Everything here blocks.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lmdb

from mailserver.db import Snapshot, schema
from mailserver.db.env import migrate
from mailserver.store import header_audit, maildir
from mailserver.store.backup import (
    INDEX,
    MAIL,
    BackupError,
    Listings,
    MessageFile,
    Progress,
    backup_files,
    copy_file,
    find_live,
    folder_dirs,
    index_version,
    message_files,
    mirror_owners,
    newer_schema,
    no_progress,
    open_index,
    queued_files,
    read_manifest,
    sha256_file,
    sync_tree,
)


def _describe(message: MessageFile) -> str:
    return f"{message.account} {message.name} uid {message.uid}"


#: A backup's index file, relative to its root.
INDEX_FILE = os.path.join(INDEX, "data.mdb")
#: The map size an index is upgraded in when the caller gives none (the default of
#: ``store.map_size_mb``); at least twice the index file, whatever is given.
UPGRADE_MAP_SIZE = 1 << 30


def verify_backup(
    root: str, progress: Progress = no_progress, *, map_size: int = UPGRADE_MAP_SIZE
) -> list[str]:
    """The problems of the backup in ``root``. BackupError when it has no usable manifest, or
    its index has a newer schema than this program's. An index of an older schema is checked
    in a temporary copy upgraded as the server would upgrade it (:func:`upgrade_index`,
    ``map_size`` for its map; removed afterwards): the backup itself is not changed."""
    manifest = read_manifest(root)
    listed: dict[str, dict[str, object]] = manifest.get("files") or {}
    problems = _file_problems(root, listed, progress)
    if INDEX_FILE not in listed:
        problems.append(f"{INDEX_FILE}: the manifest lists no index")
        return problems
    if any(problem.startswith(INDEX_FILE + ":") for problem in problems):
        return problems  # a damaged index is not opened
    index_dir = os.path.join(root, INDEX)
    version = _restorable_version(index_dir)
    if version == schema.SCHEMA_VERSION:
        return problems + _index_problems(index_dir, root, listed)
    with tempfile.TemporaryDirectory(prefix="mailserver-verify-") as scratch:
        try:
            shutil.copyfile(os.path.join(index_dir, "data.mdb"), os.path.join(scratch, "data.mdb"))
        except OSError as error:
            raise BackupError(
                f"cannot copy the index into {scratch} to upgrade it: "
                f"{error.strerror or error}; point TMPDIR at a directory with room for it"
            ) from None
        upgrade_index(scratch, map_size=map_size, sync=False, progress=progress)
        return problems + _index_problems(scratch, root, listed)


def backup_schema(root: str) -> int | None:
    """The schema version of the index of the backup in ``root``; None when it has no
    readable one (:func:`verify_backup` then says what is wrong)."""
    try:
        return index_version(os.path.join(root, INDEX))
    except BackupError:
        return None


def _restorable_version(index_dir: str) -> int:
    """The schema of the index in ``index_dir``: this program's or an older one (which
    :func:`upgrade_index` upgrades); BackupError for a newer one."""
    version = index_version(index_dir)
    if version > schema.SCHEMA_VERSION:
        raise newer_schema(index_dir, version)
    if version < 1:  # schema 1 on wrote it; migrating "0" would start a new, empty index
        raise BackupError(
            f"the index at {index_dir} records no schema version: it was not written by "
            "mailserver, or it is damaged; take the backup again"
        )
    return version


def _file_problems(
    root: str, listed: dict[str, dict[str, object]], progress: Progress
) -> list[str]:
    """Every file the manifest lists is in ``root`` with its size and SHA-256, and no other
    file is there."""
    problems = []
    for done, (path, entry) in enumerate(sorted(listed.items()), 1):
        full = os.path.join(root, path)
        progress("checking", done, len(listed))
        if not os.path.isfile(full):
            problems.append(f"{path}: missing (listed in the manifest)")
        elif os.path.getsize(full) != entry.get("size"):
            problems.append(
                f"{path}: {os.path.getsize(full)} bytes, the manifest says {entry.get('size')}"
            )
        elif sha256_file(full) != entry.get("sha256"):
            problems.append(f"{path}: checksum mismatch (the file is damaged)")
    for path in sorted(set(backup_files(root)) - set(listed)):
        problems.append(f"{path}: not in the manifest")
    return problems


def _index_problems(
    index_dir: str, root: str, listed: dict[str, dict[str, object]]
) -> list[str]:
    """The index in ``index_dir`` (of this program's schema) against itself
    (:func:`index_problems`) and against the files of the backup (``listed`` in its
    manifest, present under ``root``): every message and queued entry has its file of the
    indexed size, every message file is indexed."""
    problems = []
    mail_files = {path for path in listed if path.startswith(MAIL + os.sep)}
    with open_index(index_dir) as (txn, dbs):
        problems.extend(index_problems(txn, dbs))
        for message in message_files(txn, dbs):
            path = message.path
            if path not in listed or not os.path.isfile(os.path.join(root, path)):
                problems.append(f"{path}: missing ({_describe(message)} in the index)")
                continue
            mail_files.discard(path)
            if listed[path].get("size") != message.size:
                problems.append(
                    f"{path}: {listed[path].get('size')} bytes, the index says {message.size} "
                    f"({_describe(message)})"
                )
        for path in queued_files(txn, dbs):
            if path not in listed or not os.path.isfile(os.path.join(root, path)):
                problems.append(f"{path}: missing (queued in the index)")
    for path in sorted(mail_files):
        if os.sep + "cur" + os.sep in path or os.sep + "new" + os.sep in path:
            problems.append(f"{path}: a message file the index does not reference")
    return problems


def upgrade_index(
    path: str,
    *,
    map_size: int = UPGRADE_MAP_SIZE,
    sync: bool = True,
    progress: Progress = no_progress,
) -> int:
    """Bring the index in ``path`` (a copy nothing else has open) up to this program's schema
    the way the server does when it opens a data directory: the sub-dbs added since are
    created, then :func:`mailserver.db.env.migrate` runs each pending migration in its own
    write transaction. The version it had (this program's: nothing done). BackupError, with
    what to do, for a newer schema or a migration that fails (the index may then be left
    part-way: upgrade a copy). Run as root, the lock file it makes gets the index's owner."""
    version = _restorable_version(path)
    if version == schema.SCHEMA_VERSION:
        return version
    phase = f"upgrading the index from schema {version} to {schema.SCHEMA_VERSION}"
    progress(phase, 0, 1)
    data = os.path.join(path, "data.mdb")
    try:
        env = lmdb.open(
            path,
            map_size=max(map_size, 2 * os.path.getsize(data)),
            max_dbs=len(schema.SUBDBS) + 4,
            sync=sync,
            metasync=sync,
        )
    except (OSError, lmdb.Error) as error:
        raise BackupError(f"cannot open the index at {path} to upgrade it: {error}") from None
    try:
        dbs = {name: env.open_db(name) for name in schema.SUBDBS}
        migrate(env, dbs)
    except Exception as error:  # a record a migration cannot read: say so, no traceback
        raise BackupError(
            f"cannot upgrade the index at {path} from schema {version} to "
            f"{schema.SCHEMA_VERSION}: {type(error).__name__}: {error}; the index is damaged "
            "or this program cannot upgrade it: restore the backup with the mailserver version "
            "that made it (and report this error)"
        ) from None
    finally:
        env.close()
    if os.geteuid() == 0 and os.path.exists(os.path.join(path, "lock.mdb")):
        stat = os.stat(data)
        os.chown(os.path.join(path, "lock.mdb"), stat.st_uid, stat.st_gid)
    progress(phase, 1, 1)
    return version


def index_problems(txn: Any, dbs: dict[bytes, Any]) -> list[str]:
    """What one index snapshot says against itself: every message entry has its flags entry
    and a folder; each folder's counters (EXISTS, size, unseen), UIDNEXT and HIGHESTMODSEQ
    agree with its messages, and its header index too (no entries of messages that are gone,
    no message without its SEARCH texts); no header index entries of a folder that is gone;
    each account's quota usage agrees with its folders' messages."""
    problems = []
    folders = {
        schema.from_u32(bytes(key)): schema.load(bytes(value))
        for key, value in txn.cursor(db=dbs[b"finfo"])
    }
    # folder id -> [messages, bytes, unseen, highest uid, highest modseq]
    totals: dict[int, list[int]] = {fid: [0, 0, 0, 0, 0] for fid in folders}
    flags_db = dbs[b"flags"]
    for key, value in txn.cursor(db=dbs[b"messages"]):
        fid, uid = schema.split_msg_key(bytes(key))
        raw = txn.get(bytes(key), db=flags_db)
        if fid not in folders:
            problems.append(f"index: message uid {uid} of folder id {fid}, which does not exist")
            continue
        where = f"{folders[fid]['account']} {folders[fid]['name']}"
        if raw is None:
            problems.append(f"index: {where} uid {uid} has no flags entry")
            continue
        modseq, flags = schema.decode_flags(bytes(raw))
        total = totals[fid]
        total[0] += 1
        total[1] += int(schema.load(bytes(value))["size"])
        total[2] += "\\Seen" not in flags
        total[3] = max(total[3], uid)
        total[4] = max(total[4], modseq)
    messages_db = dbs[b"messages"]
    for key, _value in txn.cursor(db=flags_db):
        if txn.get(bytes(key), db=messages_db) is None:
            fid, uid = schema.split_msg_key(bytes(key))
            problems.append(f"index: flags of folder id {fid} uid {uid} without a message")
    usage: dict[str, list[int]] = {}
    for fid, record in folders.items():
        count, size, unseen, uid, modseq = totals[fid]
        account = record["account"]
        fix = f"; run: mailserver reindex {account}"
        where = f"index: {account} {record['name']}"
        for name, stored, actual in (("exists", record["exists"], count),
                                     ("size", record["size"], size),
                                     ("unseen", record["unseen"], unseen)):
            if stored != actual:
                problems.append(f"{where}: {name} is {stored}, its messages say {actual}{fix}")
        if record["uidnext"] <= uid:
            problems.append(f"{where}: UIDNEXT {record['uidnext']} is not above UID {uid}{fix}")
        if record["highestmodseq"] < modseq:
            problems.append(
                f"{where}: HIGHESTMODSEQ {record['highestmodseq']} is below {modseq}{fix}"
            )
        used = usage.setdefault(account, [0, 0])
        used[0] += count
        used[1] += size
        audit = header_audit.audit_folder(txn, dbs, fid)
        if audit.problems:
            problems.append(f"{where}: header index has {audit.describe()}{fix}")
    stray = header_audit.stray_folders(txn, dbs, set(folders))
    for fid, count in sorted(stray.items()):
        problems.append(
            f"index: {count} header index entr{'y' if count == 1 else 'ies'} of folder id "
            f"{fid}, which does not exist; run: mailserver reindex"
        )
    for key, value in txn.cursor(db=dbs[b"accounts"]):
        account, record = bytes(key).decode(), schema.load(bytes(value))
        count, size = usage.get(account, [0, 0])
        if "used_messages" in record and (record["used_messages"], record["used_bytes"]) != (
            count,
            size,
        ):
            problems.append(
                f"index: {account} quota usage is {record['used_messages']} message(s) and "
                f"{record['used_bytes']} bytes, its folders hold {count} and {size}; "
                f"run: mailserver reindex {account}"
            )
    return problems


def verify_live(data_dir: str, map_size: int, progress: Progress = no_progress) -> list[str]:
    """The problems of the data directory ``data_dir`` (index vs files); see the module
    docstring. BackupError when there is no index to check."""
    index_dir = os.path.join(data_dir, INDEX)
    if not os.path.exists(os.path.join(index_dir, "data.mdb")):
        raise BackupError(f"no index at {index_dir}: is server.data_dir right?")
    problems, suspects = _live_suspects(data_dir, index_dir, map_size, progress)
    if not suspects:
        return problems
    # look again: the server may have expunged or indexed it meanwhile
    for problem, still in _live_checks(index_dir, map_size, suspects):
        if still:
            problems.append(problem)
    return problems


#: The recheck of a suspected problem: given a fresh read transaction, is it still one?
_Check = Callable[[Any, dict[bytes, Any]], bool]
_Suspect = tuple[str, _Check]


def _live_suspects(
    data_dir: str, index_dir: str, map_size: int, progress: Progress
) -> tuple[list[str], list[_Suspect]]:
    """(the index's own problems: one snapshot, so certain; the file problems to recheck)."""
    suspects: list[_Suspect] = []
    snapshot = Snapshot.open(index_dir, map_size=map_size)
    try:
        with snapshot.env.begin(write=False) as txn:
            dbs = snapshot.dbs
            problems = index_problems(txn, dbs)
            folders = folder_dirs(txn, dbs)
            fids = {path: fid for fid, (path, _a, _n) in folders.items()}
            messages = list(message_files(txn, dbs))
            listings = Listings(data_dir)
            for done, message in enumerate(messages, 1):
                progress("checking", done, len(messages))
                found = listings.find(message.folder, message.base)
                size = _size(found)
                if found is not None and size is None:  # renamed since it was listed
                    found = find_live(os.path.join(data_dir, message.folder), message.base)
                    size = _size(found)
                key = schema.msg_key(fids[message.folder], message.uid)
                if found is None or size is None:
                    suspects.append(
                        (
                            f"{message.path}: missing ({_describe(message)} in the index); "
                            "run: mailserver reindex " + message.account,
                            _entry_still(key, data_dir, message, None),
                        )
                    )
                elif size != message.size:
                    suspects.append(
                        (
                            f"{os.path.relpath(found, data_dir)}: {size} "
                            f"bytes, the index says {message.size} ({_describe(message)})",
                            _entry_still(key, data_dir, message, message.size),
                        )
                    )
            for fid, (folder, account, name) in folders.items():
                cur = os.path.join(data_dir, folder, "cur")
                for entry in os.listdir(cur) if os.path.isdir(cur) else ():
                    base = maildir.split_name(entry)[0]
                    if txn.get(schema.name_key(fid, base), db=dbs[b"names"]) is None:
                        suspects.append(
                            (
                                f"{os.path.join(folder, 'cur', entry)}: not in the index "
                                f"({account} {name}); run: mailserver reindex {account}",
                                _file_still(fid, base, os.path.join(cur, entry)),
                            )
                        )
            for path in queued_files(txn, dbs):
                if not os.path.isfile(os.path.join(data_dir, path)):
                    queue_id = os.path.basename(path).encode()
                    suspects.append(
                        (
                            f"{path}: missing (queued in the index); remove the entry: "
                            f"mailserver queue delete {queue_id.decode()}",
                            _queued_still(queue_id, os.path.join(data_dir, path)),
                        )
                    )
    finally:
        snapshot.close()
    return problems, suspects


def _entry_still(
    key: bytes, data_dir: str, message: MessageFile, size: int | None
) -> _Check:
    def check(txn: Any, dbs: dict[bytes, Any]) -> bool:
        if txn.get(key, db=dbs[b"messages"]) is None:
            return False  # expunged meanwhile
        now = _size(find_live(os.path.join(data_dir, message.folder), message.base))
        if size is None:
            return now is None
        return now is not None and now != size

    return check


def _size(path: str | None) -> int | None:
    """The size of the file at ``path``; None when there is none (any more)."""
    if path is None:
        return None
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return None


def _file_still(fid: int, base: str, path: str) -> _Check:
    def check(txn: Any, dbs: dict[bytes, Any]) -> bool:
        indexed = txn.get(schema.name_key(fid, base), db=dbs[b"names"])
        folder = os.path.dirname(os.path.dirname(path))
        return indexed is None and find_live(folder, base) is not None

    return check


def _queued_still(queue_id: bytes, path: str) -> _Check:
    def check(txn: Any, dbs: dict[bytes, Any]) -> bool:
        entry = txn.get(queue_id, db=dbs[b"queue"])
        return entry is not None and not os.path.isfile(path)

    return check


def _live_checks(
    index_dir: str, map_size: int, suspects: list[_Suspect]
) -> list[tuple[str, bool]]:
    snapshot = Snapshot.open(index_dir, map_size=map_size)
    try:
        with snapshot.env.begin(write=False) as txn:
            return [(problem, check(txn, snapshot.dbs)) for problem, check in suspects]
    finally:
        snapshot.close()


@dataclass(frozen=True)
class Restored:
    """What :func:`restore` did."""

    files: int
    #: the backup's schema when it was older than this program's and was upgraded, else None
    upgraded_from: int | None = None


def restore(
    root: str,
    data_dir: str,
    *,
    fsync: bool = True,
    progress: Progress = no_progress,
    map_size: int = UPGRADE_MAP_SIZE,
) -> Restored:
    """Copy the backup in ``root`` into ``data_dir`` (absent or empty) after verifying it.
    BackupError when the target is not empty or the backup has problems (nothing is written
    then), or its index has a newer schema than this program's.

    A backup whose index has an older schema is restored too: its files are checked against
    the manifest as they were written, copied, and the restored index is upgraded in place
    (:func:`upgrade_index`, ``map_size`` for its map) and then checked as :func:`verify_backup`
    checks a backup; if that fails, what was written is removed again."""
    if os.path.exists(data_dir) and (not os.path.isdir(data_dir) or os.listdir(data_dir)):
        raise BackupError(
            f"the data directory {data_dir} is not empty; restore only into an empty one: "
            f"move it aside (mv {data_dir} {data_dir}.old) or give --config a config whose "
            "server.data_dir is a new directory"
        )
    manifest = read_manifest(root)
    listed: dict[str, dict[str, object]] = manifest.get("files") or {}
    problems = _file_problems(root, listed, progress)
    if INDEX_FILE not in listed:
        problems.append(f"{INDEX_FILE}: the manifest lists no index")
    upgraded_from = None
    if not problems:
        index_dir = os.path.join(root, INDEX)
        version = _restorable_version(index_dir)
        if version == schema.SCHEMA_VERSION:
            problems = _index_problems(index_dir, root, listed)
        else:
            upgraded_from = version
    if problems:
        raise BackupError(
            f"the backup in {root} has {len(problems)} problem(s), e.g. {problems[0]}; "
            f"see them all with: mailserver verify {root}"
        )
    created = not os.path.exists(data_dir)
    count = _copy_backup(root, data_dir, sorted(listed), progress)
    mirror_owners(root, data_dir)
    if upgraded_from is not None:
        index_dir = os.path.join(data_dir, INDEX)
        try:
            upgrade_index(index_dir, map_size=map_size, sync=fsync, progress=progress)
            problems = _index_problems(index_dir, data_dir, listed)
        except BackupError:
            _unrestore(data_dir, created)
            raise
        if problems:
            _unrestore(data_dir, created)
            raise BackupError(
                f"the index of the backup in {root}, upgraded from schema {upgraded_from} to "
                f"{schema.SCHEMA_VERSION}, has {len(problems)} problem(s), e.g. {problems[0]}; "
                f"nothing was restored; see them all with: mailserver verify {root}"
            )
    if fsync:
        sync_tree(data_dir)
    return Restored(count, upgraded_from)


def _copy_backup(root: str, data_dir: str, paths: list[str], progress: Progress) -> int:
    """Copy the files ``paths`` of the backup in ``root`` and its directories into
    ``data_dir``; how many files."""
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    for current, dirs, _files in os.walk(root):  # empty folders (tmp/, new/) too
        for name in dirs:
            relative = os.path.relpath(os.path.join(current, name), root)
            os.makedirs(os.path.join(data_dir, relative), mode=0o700, exist_ok=True)
    inodes: dict[tuple[int, int], str] = {}
    for done, path in enumerate(paths, 1):
        source, target = os.path.join(root, path), os.path.join(data_dir, path)
        stat = os.stat(source)
        twin = inodes.get((stat.st_dev, stat.st_ino))
        if twin is not None:  # copies of one message share their bytes, as they did
            os.link(twin, target)
        else:
            copy_file(source, target, fsync=False)
            inodes[(stat.st_dev, stat.st_ino)] = target
        progress("restoring", done, len(paths))
    return len(paths)


def _unrestore(data_dir: str, created: bool) -> None:
    """Remove what a restore wrote into ``data_dir``, which was absent (``created``) or empty."""
    if created:
        shutil.rmtree(data_dir, ignore_errors=True)
        return
    for name in os.listdir(data_dir):
        path = os.path.join(data_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
