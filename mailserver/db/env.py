"""The LMDB environment: reads on the caller's thread, writes on one writer thread.

Every write is a function run inside a write transaction on a dedicated thread. Writes that
arrive while another batch is committing are run together in the next transaction and share
its fsync (group commit, DESIGN decision 5); each runs in a nested transaction, so one
failing write does not spoil the others. A write's Deferred fires on the reactor thread
only after the commit that holds it is on stable storage.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import lmdb
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from mailserver.db import schema
from mailserver.diskspace import InsufficientStorage, out_of_space
from mailserver.errors import StoreUnavailable

T = TypeVar("T")
log = Logger()

#: At most this many writes share one transaction.
MAX_BATCH = 256

#: Sub-databases whose records per-process caches keep (the directory's domains, users and
#: aliases; each account's folder-name map): any put or delete in one of them, and a delete
#: in ``accounts``, bumps :data:`GENERATION_KEY` in the same transaction, whichever process
#: writes. A cache keyed on :func:`generation` is therefore never staler than the snapshot
#: it read the generation from (e.g. a user deleted by the CLI is seen at the next look-up).
GENERATIONAL = frozenset({b"domains", b"users", b"aliases", b"folders"})
#: The ``meta`` key of the directory generation (an opaque counter; compare, never parse).
GENERATION_KEY = b"directory_generation"


def generation(txn: Txn) -> bytes | None:
    """The directory generation seen by ``txn`` (None before the first change)."""
    return txn.get(b"meta", GENERATION_KEY)


def current_generation(db: Database | Snapshot) -> bytes | None:
    """The directory generation now: :func:`generation` in a snapshot of its own (one LMDB
    read, cheap enough for every look-up on the reactor thread)."""
    with db.env.begin(write=False) as raw:
        return raw.get(GENERATION_KEY, db=db.dbs[b"meta"])


class Txn:
    """A transaction plus the sub-database handles, passed to write functions and readers."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict[bytes, Any]) -> None:
        self.raw = txn
        self.dbs = dbs
        self._after: list[Callable[[], None]] = []
        self._before: dict[Any, Callable[[], None]] = {}
        self._bumped = False

    def get(self, table: bytes, key: bytes) -> bytes | None:
        value = self.raw.get(key, db=self.dbs[table])
        return None if value is None else bytes(value)

    def put(self, table: bytes, key: bytes, value: bytes) -> None:
        self.raw.put(key, value, db=self.dbs[table])
        if table in GENERATIONAL and not self._bumped:
            self._bump_generation()

    def delete(self, table: bytes, key: bytes) -> bool:
        deleted = bool(self.raw.delete(key, db=self.dbs[table]))
        if (table in GENERATIONAL or table == b"accounts") and not self._bumped:
            self._bump_generation()
        return deleted

    def _bump_generation(self) -> None:
        """Count a change to the cached tables, once per transaction (rolled back with it)."""
        self._bumped = True
        meta = self.dbs[b"meta"]
        current = self.raw.get(GENERATION_KEY, db=meta)
        self.raw.put(GENERATION_KEY, b"%d" % (int(bytes(current)) + 1 if current else 1), db=meta)

    def get_json(self, table: bytes, key: bytes) -> Any:
        raw = self.get(table, key)
        return None if raw is None else schema.load(raw)

    def put_json(self, table: bytes, key: bytes, value: Any) -> None:
        self.put(table, key, schema.dump(value))

    def prefix(self, table: bytes, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with ``prefix``, in key order."""
        yield from self.range(table, prefix, None, prefix=prefix)

    def range(
        self, table: bytes, start: bytes, stop: bytes | None, prefix: bytes = b""
    ) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) with ``start <= key <= stop`` (and the prefix), in key order."""
        cursor = self.raw.cursor(db=self.dbs[table])
        if not cursor.set_range(start):
            return
        for key, value in cursor:
            key = bytes(key)
            if stop is not None and key > stop:
                return
            if prefix and not key.startswith(prefix):
                return
            yield key, bytes(value)

    def count(self, table: bytes) -> int:
        return int(self.raw.stat(self.dbs[table])["entries"])

    def before_commit(self, key: Any, action: Callable[[], None]) -> None:
        """Run ``action`` on the writer thread just before the enclosing commit, once per
        ``key`` for the whole group commit (e.g. one fsync of a maildir ``new/`` directory
        for every message renamed into it). If it raises OSError the batch is not
        committed and every write in it fails."""
        self._before.setdefault(key, action)

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` on the writer thread once the enclosing commit is durable (used for
        best-effort file renames that mirror the index)."""
        self._after.append(action)


@dataclass
class _Write(Generic[T]):
    function: Callable[[Txn], T]
    deferred: Deferred[T]
    result: Any = None
    error: BaseException | None = None
    after: list[Callable[[], None]] = field(default_factory=list)


class Database:
    """One LMDB environment holding the whole index of a data directory."""

    def __init__(self, env: lmdb.Environment, dbs: dict[bytes, Any], reactor: Any) -> None:
        self.env = env
        self.dbs = dbs
        self._reactor = reactor
        self._queue: queue.Queue[_Write[Any] | None] = queue.Queue()
        self._closing: list[Deferred[None]] | None = None
        self._done = False
        self._lock = threading.Lock()  # _closing and the queue's end marker, for submit()
        self._thread = threading.Thread(target=self._run, name="lmdb-writer", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, path: str, *, map_size: int, reactor: Any, sync: bool = True) -> Database:
        """Open (creating when absent) the environment at ``path`` and bring its schema up to
        :data:`schema.SCHEMA_VERSION`. Raises StoreUnavailable with the reason on failure."""
        try:
            os.makedirs(path, exist_ok=True)
            env = lmdb.open(
                path,
                map_size=map_size,
                max_dbs=len(schema.SUBDBS) + 4,
                sync=sync,
                metasync=sync,
                max_spare_txns=4,
            )
        except (OSError, lmdb.Error) as e:
            raise StoreUnavailable(detail=f"cannot open the index at {path}: {e}") from e
        dbs = {name: env.open_db(name) for name in schema.SUBDBS}
        migrate(env, dbs)
        return cls(env, dbs, reactor)

    @property
    def schema_version(self) -> int:
        with self.read() as txn:
            return int(txn.get_json(b"meta", b"schema_version") or 0)

    @contextmanager
    def read(self) -> Iterator[Txn]:
        """A read-only snapshot. LMDB reads are fast enough for the reactor thread."""
        with self.env.begin(write=False, buffers=True) as raw:
            yield Txn(raw, self.dbs)

    def write(self, function: Callable[[Txn], T]) -> Deferred[T]:
        """Run ``function(txn)`` in a write transaction on the writer thread.

        The Deferred fires with its result after the commit is durable, or fails with the
        exception it raised (its changes are then rolled back, others' are not).
        """
        d: Deferred[T] = Deferred()
        with self._lock:
            if self._closing is not None:
                return fail(StoreUnavailable(detail="the index is closing"))
            self._queue.put(_Write(function, d))
        return d

    def submit(self, function: Callable[[Txn], T], deferred: Deferred[T]) -> None:
        """:meth:`write` from any thread: ``function`` runs in the writer's next group
        commit and ``deferred`` (made, and given its callbacks, on the reactor thread) fires
        there as :meth:`write`'s would, or fails with StoreUnavailable once the index is
        closing. A pool thread that has just written and fsynced a message file hands its
        index write over this way, without a trip through the reactor in between."""
        with self._lock:
            if self._closing is None:
                self._queue.put(_Write(function, deferred))
                return
        closing = StoreUnavailable(detail="the index is closing")
        self._reactor.callFromThread(deferred.errback, closing)

    def write_sync(self, function: Callable[[Txn], T]) -> T:
        """Run a write on the calling thread (for tools with no reactor, e.g. the CLI's
        offline paths and migrations). Never call it from the reactor thread."""
        with self.env.begin(write=True) as raw:
            txn = Txn(raw, self.dbs)
            result = function(txn)
            for before in txn._before.values():
                before()
        for action in txn._after:
            action()
        return result

    def close(self) -> Deferred[None]:
        """Finish every queued write, then close the environment. Idempotent."""
        if self._done:
            return succeed(None)
        with self._lock:  # no write is queued behind the end marker (submit)
            if self._closing is None:
                self._closing = []
                self._queue.put(None)
        d: Deferred[None] = Deferred()
        self._closing.append(d)
        return d

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None or self._commit(first):
                self._finish()
                return

    def _commit(self, first: _Write[Any]) -> bool:
        """Commit ``first`` with the writes queued by the time the write lock is held (at
        most MAX_BATCH); True when the queue's end marker was among them."""
        batch = [first]
        stop = False
        try:
            with self.env.begin(write=True) as parent:
                # The batch is gathered once the lock is held, not before: while another
                # process's writer held it, the writes queued here join this commit and
                # share its fsyncs instead of waiting for the next one.
                stop = self._gather(batch)
                before: dict[Any, Callable[[], None]] = {}
                for item in batch:
                    child = self.env.begin(write=True, parent=parent)
                    txn = Txn(child, self.dbs)
                    try:
                        item.result = item.function(txn)
                    except BaseException as e:  # reported to that write's caller
                        child.abort()
                        item.error = _full(e) or e
                    else:
                        child.commit()
                        item.after = txn._after
                        for key, action in txn._before.items():
                            before.setdefault(key, action)
                for action in before.values():
                    action()  # e.g. fsync the directories the batch renamed into
        except (lmdb.Error, OSError) as e:
            failure = _commit_failure(e)
            for item in batch:
                item.error = item.error or failure
        for item in batch:
            for action in item.after if item.error is None else ():
                try:
                    action()
                except OSError as e:
                    log.warn("post-commit action failed: {error}", error=e)
        # One reactor wake-up for the whole batch, not one per write (each callFromThread
        # wakes the reactor and hands the GIL over).
        self._reactor.callFromThread(_answer, batch)
        return stop

    def _gather(self, batch: list[_Write[Any]]) -> bool:
        """Add the queued writes to ``batch`` up to MAX_BATCH without waiting; True when the
        end marker was taken (the writes before it are in the batch)."""
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            batch.append(item)
        return False

    def _finish(self) -> None:
        self.env.sync(True)
        self.env.close()
        self._reactor.callFromThread(self._closed_now)

    def _closed_now(self) -> None:
        self._done = True
        for d in self._closing or ():
            d.callback(None)


def _answer(batch: list[_Write[Any]]) -> None:
    """Fire each write's Deferred, in the order they were queued (on the reactor thread).
    A callback that raises is that Deferred's failure; it never keeps the others unfired."""
    for item in batch:
        if item.error is not None:
            item.deferred.errback(item.error)
        else:
            item.deferred.callback(item.result)


def _full(error: BaseException) -> InsufficientStorage | None:
    """A full disk or a full LMDB map as InsufficientStorage (``452 4.3.1``, try later)."""
    if isinstance(error, lmdb.DiskError | lmdb.MapFullError) or out_of_space(error):
        return InsufficientStorage(detail=f"index write failed: {error}")
    return None


def _commit_failure(error: Exception) -> StoreUnavailable:
    """A failed index commit as the error its writers report: InsufficientStorage when the
    disk or the map is full, else StoreUnavailable (``451 4.3.0``)."""
    return _full(error) or StoreUnavailable(detail=f"index commit failed: {error}")


def migrate(env: lmdb.Environment, dbs: dict[bytes, Any]) -> int:
    """Apply every pending migration, each in its own transaction; return the new version."""
    while True:
        with env.begin(write=True) as raw:
            txn = Txn(raw, dbs)
            version = int(txn.get_json(b"meta", b"schema_version") or 0)
            if version >= schema.SCHEMA_VERSION:
                if version > schema.SCHEMA_VERSION:
                    raise StoreUnavailable(
                        detail=f"index schema {version} is newer than this program "
                        f"({schema.SCHEMA_VERSION}): upgrade mailserver"
                    )
                return version
            schema.MIGRATIONS[version](raw, dbs)
            txn.put_json(b"meta", b"schema_version", version + 1)


class Snapshot:
    """Read-only access to an index with no writer thread and no reactor: for look-ups the
    command line makes before anything else runs (e.g. the roles of ``--as ADDRESS``).

    It never migrates: an index with another schema version is refused with the fix.
    """

    def __init__(self, env: lmdb.Environment, dbs: dict[bytes, Any]) -> None:
        self.env = env
        self.dbs = dbs

    @classmethod
    def open(cls, path: str, *, map_size: int) -> Snapshot:
        if not os.path.exists(os.path.join(path, "data.mdb")):
            raise StoreUnavailable(detail=f"no index at {path}: start the server or add a domain")
        try:
            env = lmdb.open(path, map_size=map_size, max_dbs=len(schema.SUBDBS) + 4,
                            readonly=True)
            meta = env.open_db(b"meta", create=False)
        except (OSError, lmdb.Error) as e:
            raise StoreUnavailable(detail=f"cannot read the index at {path}: {e}") from e
        # The version first: an older index lacks the newer sub-dbs, and the answer to
        # that is the upgrade, not "cannot read".
        with env.begin(write=False) as raw:
            stored = raw.get(b"schema_version", db=meta)
        version = int(schema.load(bytes(stored))) if stored is not None else 0
        if version == schema.SCHEMA_VERSION:
            try:
                dbs = {name: env.open_db(name, create=False) for name in schema.SUBDBS}
            except lmdb.Error as e:
                env.close()
                raise StoreUnavailable(detail=f"cannot read the index at {path}: {e}") from e
            return cls(env, dbs)
        env.close()
        raise StoreUnavailable(
            detail=f"index schema {version}, this program uses {schema.SCHEMA_VERSION}: "
            "run any storage command (e.g. 'mailserver domain list') once to upgrade it"
        )

    @contextmanager
    def read(self) -> Iterator[Txn]:
        with self.env.begin(write=False, buffers=True) as raw:
            yield Txn(raw, self.dbs)

    def close(self) -> None:
        self.env.close()
