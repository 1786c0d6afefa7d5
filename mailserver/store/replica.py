"""Continuous replication of a data directory into a replica directory (issue 12).

A replica is a directory ``DEST`` (local, or a mounted remote file system such as NFS)::

    DEST/replica.lock            marks DEST as a replica; the running replicator holds a lock on it
    DEST/current -> gen-<N>      the last finished cycle (a relative symbolic link)
    DEST/gen-<N>/                a complete data directory AND a valid backup (manifest.json):
                                 index/data.mdb, mail/.../cur/<base>:2,<flags>, spool/<id>, tls/...
    DEST/pool/<folder>/cur/<base>  one copy of every message file shipped, by unique base name
    DEST/pool/spool/<queue id>   one copy of every queued message shipped
    DEST/status.json             the last cycle: when it began and ended, counts, the last error

One cycle (:meth:`Replica.cycle`):

1. *Ship* every message and spool file of the live data directory that the pool lacks (looked
   up by folder and Maildir unique base name, so a flag change, which renames the live file,
   ships nothing). This happens before the snapshot, so an expunge after it loses nothing.
2. *Snapshot* the live index into ``gen-<N+1>/index`` with ``Environment.copy(compact=True)``:
   one read transaction, so every message acknowledged before the cycle began is in it.
   Files it references that arrived after step 1 are shipped now; if one vanished meanwhile
   the snapshot is retaken (as :func:`mailserver.store.backup.take_backup` does).
3. *Build* ``gen-<N+1>``: every referenced file hard-linked from the pool under the name the
   snapshot's flags give it (a copy where the file system has no hard links), the other
   files of the data directory copied (or hard-linked from the previous generation when
   their size and modification time are unchanged), a manifest of SHA-256 checksums
   (computed once per file, when it is shipped) written last, everything synced.
4. *Switch* ``current`` to it atomically (a new symbolic link renamed over the old one, then
   the directory synced), write ``status.json``, and only then remove the previous generation
   and the pool files no longer referenced.

Guarantees: at every moment ``DEST/current`` is the whole of one finished cycle. A replicator
killed at any point (even ``kill -9`` during step 3) leaves it untouched; the next cycle
removes the half-built generation and files shipped for it are reused. Every message
acknowledged before the last finished cycle began is in ``current``, so the recovery point
objective (RPO) is the interval between cycle starts plus one cycle's duration.
``current`` is checked by ``mailserver verify DEST/current``, restored by ``mailserver
restore DEST/current``, or served directly by a server whose ``server.data_dir`` is the
directory it points to (fail-over; see docs/operations.md). Once a server has opened it
(``index/lock.mdb`` exists) the replica is *promoted* and the replicator refuses to touch it.

Every function here blocks (copies, hashing, sync): the command line calls them with no
reactor running.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

from mailserver import durable
from mailserver.db import schema
from mailserver.store import maildir
from mailserver.store.backup import (
    FORMAT,
    INDEX,
    MAIL,
    MANIFEST,
    SNAPSHOT_ATTEMPTS,
    SPOOL,
    BackupError,
    Listings,
    MessageFile,
    Progress,
    backup_files,
    copy_file,
    find_live,
    folder_dirs,
    message_files,
    no_progress,
    open_index,
    queued_files,
    sha256_file,
)
from mailserver.store.backup import (
    _snapshot as snapshot_index,
)
from mailserver.store.backup import (
    _try_link as try_link,
)
from mailserver.store.backup import (
    _walk_live as walk_live,
)

LOCK = "replica.lock"
CURRENT = "current"
POOL = "pool"
STATUS = "status.json"
GENERATION = "gen-"
#: Where a pool file is written before it is renamed to its key.
POOL_TMP = ".tmp"

#: A pool key: (folder relative to the data directory, base name), or (``spool``, queue id).
Key = tuple[str, str]


class ReplicaError(BackupError):
    """A replication cycle that cannot run: the text says why and what to do."""


@dataclass(frozen=True)
class CycleReport:
    """What one finished cycle did (also the body of ``status.json``)."""

    generation: int
    started: float  # when the cycle began (every message acknowledged before is in it)
    snapshot_at: float  # when its index snapshot was taken
    finished: float
    messages: int
    queued: int
    shipped: int  # files copied into the pool this cycle
    shipped_bytes: int
    removed: int  # pool files no longer referenced, deleted
    files: int  # files in the generation
    bytes: int
    snapshots: int

    @property
    def duration(self) -> float:
        return self.finished - self.started


class _Hashing:
    """A readable file that hashes what is read from it (so a copy hashes in one pass)."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        block = self.source.read(size)
        self.digest.update(block)
        return block


class Pool:
    """The replica's message and spool files by key, each with its size and SHA-256."""

    def __init__(self, root: str, known: dict[Key, tuple[int, str]]) -> None:
        self.root = root
        self.tmp = os.path.join(root, POOL_TMP)
        shutil.rmtree(self.tmp, ignore_errors=True)  # left by a cycle that was killed
        os.makedirs(root, mode=0o700, exist_ok=True)
        os.makedirs(self.tmp, mode=0o700, exist_ok=True)
        #: Files whose checksum is known (listed by the current generation, or shipped in
        #: this cycle); a pool file not listed here is shipped again before use.
        self.known = {key: value for key, value in known.items() if os.path.isfile(self.path(key))}
        self.shipped = 0
        self.shipped_bytes = 0
        self._names = 0

    def path(self, key: Key) -> str:
        folder, base = key
        if folder == SPOOL:
            return os.path.join(self.root, SPOOL, base)
        return os.path.join(self.root, folder, "cur", base)

    def ship(self, source: str, key: Key) -> bool:
        """Copy ``source`` in under ``key`` unless it is there; False when it vanished."""
        if key in self.known:
            return True
        self._names += 1
        temporary = os.path.join(self.tmp, str(self._names))
        try:
            with open(source, "rb") as f:
                hashing = _Hashing(f)
                size = durable.write_new(temporary, hashing, fsync=False)  # type: ignore[arg-type]
            shutil.copystat(source, temporary)  # mtime = a message's internal date
        except FileNotFoundError:
            _unlink(temporary)
            return False
        target = self.path(key)
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        os.replace(temporary, target)
        self.known[key] = (size, hashing.digest.hexdigest())
        self.shipped += 1
        self.shipped_bytes += size
        return True

    def collect(self, keep: set[Key]) -> int:
        """Delete every pool file whose key is not in ``keep``; how many."""
        removed = 0
        for current, dirs, files in os.walk(self.root):
            if current == self.root:
                dirs[:] = [d for d in dirs if d != POOL_TMP]
            for name in files:
                path = os.path.join(current, name)
                key = self._key_of(path)
                if key not in keep:
                    _unlink(path)
                    self.known.pop(key, None)
                    removed += 1
        return removed

    def _key_of(self, path: str) -> Key:
        relative = os.path.relpath(path, self.root)
        directory, base = os.path.split(relative)
        if directory == SPOOL:
            return SPOOL, base
        return os.path.dirname(directory), base  # strip the ``cur`` level


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _unchanged(source: str, old: str, entry: dict[str, Any]) -> bool:
    """Whether ``old`` (a previous generation's copy, of the size its manifest ``entry``
    says) has the size and modification time of ``source`` (as rsync decides)."""
    try:
        now, then = os.stat(source), os.stat(old)
    except FileNotFoundError:
        return False
    same = (now.st_size, now.st_mtime_ns) == (then.st_size, then.st_mtime_ns)
    return same and then.st_size == entry.get("size")


def _key_of_file(path: str) -> Key | None:
    """The pool key of a generation's file (``mail/.../cur/<name>`` or ``spool/<id>``)."""
    directory, name = os.path.split(path)
    if directory == SPOOL:
        return SPOOL, name
    if path.startswith(MAIL + os.sep) and os.path.basename(directory) == "cur":
        return os.path.dirname(directory), maildir.split_name(name)[0]
    return None


def read_status(dest: str) -> dict[str, Any]:
    """The status of the replica in ``dest``; ReplicaError when it has none."""
    path = os.path.join(dest, STATUS)
    try:
        with open(path, encoding="utf-8") as f:
            status = json.load(f)
    except FileNotFoundError:
        raise ReplicaError(
            f"{dest} has no {STATUS}: no replication cycle has finished there yet "
            "(run: mailserver replicate DEST --once)"
        ) from None
    except (OSError, ValueError) as error:
        raise ReplicaError(f"cannot read {path}: {error}") from None
    if not isinstance(status, dict):
        raise ReplicaError(f"{path} is not a replica status")
    return status


class Replica:
    """The replica in ``dest`` of the data directory ``data_dir``, locked while open.

    ``clock`` gives the wall-clock times written to the status (seconds since the epoch).
    """

    def __init__(
        self,
        data_dir: str,
        dest: str,
        *,
        map_size: int,
        fsync: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.data_dir = data_dir
        self.dest = dest
        self.map_size = map_size
        self.fsync = fsync
        self.clock = clock
        self._lock: int | None = None

    # -- opening ---------------------------------------------------------------------------

    def open(self) -> Replica:
        """Check both directories and take the replica's lock; ReplicaError when another
        replicator holds it, DEST is something else, or the replica was promoted."""
        if not os.path.isdir(os.path.join(self.data_dir, INDEX)):
            raise ReplicaError(
                f"no index in {self.data_dir}: is server.data_dir right? (pass --config with "
                "the server's config)"
            )
        real_data, real_dest = os.path.realpath(self.data_dir), os.path.realpath(self.dest)
        if real_dest == real_data or real_dest.startswith(real_data + os.sep):
            raise ReplicaError(
                f"{self.dest} is inside the data directory {self.data_dir}; replicate to "
                "another directory (another disk or host)"
            )
        lock = os.path.join(self.dest, LOCK)
        if os.path.exists(self.dest):
            if not os.path.isdir(self.dest):
                raise ReplicaError(f"{self.dest} is not a directory")
            if os.listdir(self.dest) and not os.path.exists(lock):
                raise ReplicaError(
                    f"{self.dest} is neither empty nor a replica (no {LOCK}); give a new "
                    "directory"
                )
        else:
            os.makedirs(self.dest, mode=0o700)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ReplicaError(
                f"another replicator is running into {self.dest} (it holds {lock}); stop it "
                "first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock = fd
        try:
            self._refuse_promoted()
        except ReplicaError:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Release the lock."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> Replica:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _refuse_promoted(self) -> None:
        current = os.path.join(self.dest, CURRENT)
        if os.path.exists(os.path.join(current, INDEX, "lock.mdb")):
            raise ReplicaError(
                f"{os.path.realpath(current)} has been opened by a server (index/lock.mdb "
                "exists): the replica was promoted, and replicating into it would destroy "
                "that server's data; replicate into a new directory"
            )

    def current_generation(self) -> int:
        """The number of the generation ``current`` points to; 0 before the first cycle."""
        link = os.path.join(self.dest, CURRENT)
        target = os.readlink(link) if os.path.islink(link) else ""
        if not target.startswith(GENERATION):
            return 0
        try:
            return int(target[len(GENERATION):])
        except ValueError:
            return 0

    # -- one cycle -------------------------------------------------------------------------

    def cycle(self, progress: Progress = no_progress) -> CycleReport:
        """Run one replication cycle (see the module docstring); its report."""
        assert self._lock is not None, "open the replica first"
        self._refuse_promoted()
        started = self.clock()
        previous = self.current_generation()
        pool = Pool(os.path.join(self.dest, POOL), self._known(previous))
        live = list(walk_live(self.data_dir))
        for done, (path, key) in enumerate(live, 1):
            pool.ship(path, key)
            progress("shipping", done, len(live))
        number = previous + 1
        generation = os.path.join(self.dest, f"{GENERATION}{number}")
        shutil.rmtree(generation, ignore_errors=True)  # half built by a killed cycle
        os.makedirs(generation, mode=0o700)
        index = os.path.join(generation, INDEX)
        snapshots = 0
        for attempt in range(1, SNAPSHOT_ATTEMPTS + 1):
            snapshots, snapshot_at = attempt, self.clock()
            snapshot_index(self.data_dir, index, self.map_size)
            with open_index(index) as (txn, dbs):
                messages = list(message_files(txn, dbs))
                queued = queued_files(txn, dbs)
                folders = [path for path, _a, _n in folder_dirs(txn, dbs).values()]
            missing = self._ship_missing(pool, messages, queued)
            if not missing:
                break
            shutil.rmtree(index)
        else:
            raise ReplicaError(
                f"{len(missing)} message file(s) vanished before they could be shipped, "
                f"{SNAPSHOT_ATTEMPTS} times over (e.g. {missing[0]}); the next cycle tries again"
            )
        self._build(generation, pool, messages, queued, folders, progress)
        reused = self._others(generation, previous)
        files = self._manifest(
            generation, pool, reused, len(messages), len(queued), number, started, snapshot_at
        )
        self._switch(number)
        keep = {(m.folder, m.base) for m in messages}
        keep.update((SPOOL, os.path.basename(path)) for path in queued)
        for name in os.listdir(self.dest):  # previous generations, half-built ones
            if name.startswith(GENERATION) and name != f"{GENERATION}{number}":
                shutil.rmtree(os.path.join(self.dest, name), ignore_errors=True)
        removed = pool.collect(keep)
        report = CycleReport(
            generation=number,
            started=started,
            snapshot_at=snapshot_at,
            finished=self.clock(),
            messages=len(messages),
            queued=len(queued),
            shipped=pool.shipped,
            shipped_bytes=pool.shipped_bytes,
            removed=removed,
            files=len(files),
            bytes=sum(entry["size"] for entry in files.values()),
            snapshots=snapshots,
        )
        self._write_status(report, None)
        return report

    def record_failure(self, error: BaseException) -> None:
        """Note a failed cycle in ``status.json`` (the last finished cycle stays as it was)."""
        try:
            status = read_status(self.dest)
        except ReplicaError:
            status = {}
        status["last_error"] = str(error)
        status["last_error_at"] = self.clock()
        durable.write_atomically(
            os.path.join(self.dest, STATUS), json.dumps(status, indent=1).encode()
        )

    def _listed(self, generation: int) -> dict[str, Any]:
        """The files the manifest of ``generation`` lists ({} when it has none)."""
        if generation == 0:
            return {}
        path = os.path.join(self.dest, f"{GENERATION}{generation}", MANIFEST)
        try:
            with open(path, encoding="utf-8") as f:
                listed = json.load(f).get("files") or {}
        except (OSError, ValueError):
            return {}  # copy everything again: slower, never wrong
        return listed if isinstance(listed, dict) else {}

    def _known(self, generation: int) -> dict[Key, tuple[int, str]]:
        """Size and checksum of every pool file the current generation's manifest lists."""
        known = {}
        for relative, entry in self._listed(generation).items():
            key = _key_of_file(relative)
            if key is not None:
                known[key] = (int(entry["size"]), str(entry["sha256"]))
        return known

    def _ship_missing(
        self, pool: Pool, messages: list[MessageFile], queued: list[str]
    ) -> list[str]:
        """Ship the referenced files the pool lacks (arrived after the walk); those gone."""
        missing = []
        listings = Listings(self.data_dir)
        for message in messages:
            key = (message.folder, message.base)
            if key in pool.known:
                continue
            found = listings.find(message.folder, message.base)
            if found is None or not pool.ship(found, key):  # renamed since it was listed?
                found = find_live(os.path.join(self.data_dir, message.folder), message.base)
                if found is None or not pool.ship(found, key):
                    missing.append(message.path)
        for path in queued:
            key = (SPOOL, os.path.basename(path))
            if not pool.ship(os.path.join(self.data_dir, path), key):
                missing.append(path)
        return missing

    def _build(
        self,
        generation: str,
        pool: Pool,
        messages: list[MessageFile],
        queued: list[str],
        folders: list[str],
        progress: Progress,
    ) -> None:
        """Every folder's directories, and every referenced file linked from the pool."""
        for folder in folders:
            maildir.make_maildir(
                os.path.join(generation, folder), os.path.basename(folder).startswith(".")
            )
        os.makedirs(os.path.join(generation, SPOOL, "tmp"), mode=0o700, exist_ok=True)
        placements = [(pool.path((m.folder, m.base)), m.path) for m in messages]
        placements += [(pool.path((SPOOL, os.path.basename(p))), p) for p in queued]
        for done, (source, relative) in enumerate(placements, 1):
            target = os.path.join(generation, relative)
            if not try_link(source, target):
                copy_file(source, target, fsync=False)
            progress("linking", done, len(placements))

    def _others(self, generation: str, previous: int) -> dict[str, tuple[int, str]]:
        """Copy every other file of the data directory (certificates, keys, the audit log)
        into ``generation``; one unchanged since the previous generation (same size and
        modification time) is hard-linked from it instead. Size and checksum of those."""
        listed = self._listed(previous)
        before = os.path.join(self.dest, f"{GENERATION}{previous}")
        reused: dict[str, tuple[int, str]] = {}
        for root, dirs, files in os.walk(self.data_dir):
            relative_root = os.path.relpath(root, self.data_dir)
            if relative_root == ".":
                dirs[:] = [d for d in dirs if d not in (INDEX, MAIL, SPOOL)]
            os.makedirs(os.path.join(generation, relative_root), mode=0o700, exist_ok=True)
            for name in files:
                source = os.path.join(root, name)
                relative = os.path.normpath(os.path.join(relative_root, name))
                target = os.path.join(generation, relative)
                if not os.path.isfile(source) or os.path.islink(source):
                    continue
                old = os.path.join(before, relative)
                entry = listed.get(relative)
                if entry is not None and _unchanged(source, old, entry) and try_link(old, target):
                    reused[relative] = (int(entry["size"]), str(entry["sha256"]))
                    continue
                try:
                    copy_file(source, target, fsync=False)
                except FileNotFoundError:
                    continue  # e.g. a log rotated away meanwhile
        return reused

    def _manifest(
        self,
        generation: str,
        pool: Pool,
        reused: dict[str, tuple[int, str]],
        messages: int,
        queued: int,
        number: int,
        started: float,
        snapshot_at: float,
    ) -> dict[str, dict[str, Any]]:
        """Write the generation's manifest (a backup's) after syncing everything; its files."""
        files: dict[str, dict[str, Any]] = {}
        for relative in sorted(backup_files(generation)):
            key = _key_of_file(relative)
            if key is not None and key in pool.known:
                size, digest = pool.known[key]
            elif relative in reused:
                size, digest = reused[relative]
            else:
                full = os.path.join(generation, relative)
                size, digest = os.path.getsize(full), sha256_file(full)
            files[relative] = {"size": size, "sha256": digest}
        manifest = {
            "format": FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(snapshot_at)),
            "source": self.data_dir,
            "schema_version": schema.SCHEMA_VERSION,
            "messages": messages,
            "queued": queued,
            "replica": {"generation": number, "started": started, "snapshot_at": snapshot_at},
            "files": files,
        }
        if self.fsync:  # every file and directory on stable storage before the manifest
            os.sync()
            for root in (generation, pool.root):
                for current, _dirs, _files in os.walk(root):
                    durable.fsync_directory(current)
        durable.write_atomically(
            os.path.join(generation, MANIFEST),
            json.dumps(manifest, indent=1, sort_keys=True).encode(),
        )
        return files

    def _switch(self, number: int) -> None:
        """Point ``current`` at generation ``number`` atomically and durably."""
        link = os.path.join(self.dest, CURRENT)
        temporary = link + ".new"
        _unlink(temporary)
        os.symlink(f"{GENERATION}{number}", temporary)
        os.replace(temporary, link)
        if self.fsync:
            durable.fsync_directory(self.dest)

    def _write_status(self, report: CycleReport, error: str | None) -> None:
        status = asdict(report)
        status.update(
            source=self.data_dir,
            current=os.path.realpath(os.path.join(self.dest, CURRENT)),
            duration=report.duration,
            last_error=error,
            last_error_at=None,
        )
        durable.write_atomically(
            os.path.join(self.dest, STATUS), json.dumps(status, indent=1).encode()
        )
