"""The LMDB environment: group commit, isolation of failing writes, schema migrations."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from mailserver.db import Database, schema
from mailserver.db.env import migrate
from mailserver.diskspace import InsufficientStorage
from mailserver.errors import StoreUnavailable


@pytest.fixture
def db(tmp_path):
    database = Database.open(str(tmp_path / "index"), map_size=16 << 20, reactor=reactor)
    yield database
    if not database._done:
        pytest_twisted.blockon(database.close())


class Boom(Exception):
    pass


@pytest_twisted.ensureDeferred
async def test_writes_queued_together_share_a_commit(db):
    """Writes submitted while the writer is busy are committed together, each answered."""
    def put(n):
        return lambda txn: (txn.put(b"meta", b"k%d" % n, b"%d" % n), n)[1]

    results = await defer.gatherResults([db.write(put(n)) for n in range(200)])
    assert results == list(range(200))
    with db.read() as txn:
        assert txn.get(b"meta", b"k199") == b"199"


@pytest_twisted.ensureDeferred
async def test_a_failing_write_spoils_only_itself(db):
    """A write that raises is rolled back and reported; its batch-mates still commit."""
    def bad(txn):
        txn.put(b"meta", b"bad", b"x")
        raise Boom()

    good1 = db.write(lambda txn: txn.put(b"meta", b"good1", b"1"))
    failing = db.write(bad)
    good2 = db.write(lambda txn: txn.put(b"meta", b"good2", b"2"))
    await good1
    with pytest.raises(Boom):
        await failing
    await good2
    with db.read() as txn:
        assert txn.get(b"meta", b"bad") is None
        assert txn.get(b"meta", b"good1") == b"1" and txn.get(b"meta", b"good2") == b"2"


@pytest_twisted.ensureDeferred
async def test_a_full_index_is_insufficient_storage(tmp_path):
    """A write that fills the LMDB map fails as InsufficientStorage (452 4.3.1, try later), not
    as a raw LMDB error, and the index keeps working for writes that fit."""
    database = Database.open(str(tmp_path / "small"), map_size=1 << 20, reactor=reactor)
    try:
        with pytest.raises(InsufficientStorage) as raised:
            await database.write(lambda txn: txn.put(b"meta", b"big", b"x" * (2 << 20)))
        assert (raised.value.code, raised.value.enhanced) == (452, "4.3.1")
        await database.write(lambda txn: txn.put(b"meta", b"small", b"1"))
        with database.read() as txn:
            assert txn.get(b"meta", b"small") == b"1" and txn.get(b"meta", b"big") is None
    finally:
        await database.close()


@pytest_twisted.ensureDeferred
async def test_after_commit_runs_only_on_success(db):
    """Post-commit actions run after a successful write and never after a failed one."""
    ran = []

    def ok(txn):
        txn.after_commit(lambda: ran.append("ok"))

    def bad(txn):
        txn.after_commit(lambda: ran.append("bad"))
        raise Boom()

    await db.write(ok)
    with pytest.raises(Boom):
        await db.write(bad)
    assert ran == ["ok"]


@pytest_twisted.ensureDeferred
async def test_close_finishes_queued_writes(db):
    """close() waits for queued writes; later writes fail with StoreUnavailable."""
    pending = db.write(lambda txn: txn.put(b"meta", b"last", b"1"))
    closing = db.close()
    with pytest.raises(StoreUnavailable):
        await db.write(lambda txn: None)
    await pending
    await closing
    await db.close()


def test_schema_is_current_and_newer_is_refused(tmp_path):
    """A new index is at SCHEMA_VERSION; an index from a newer program is refused clearly."""
    db = Database.open(str(tmp_path / "i"), map_size=16 << 20, reactor=reactor)
    assert db.schema_version == schema.SCHEMA_VERSION
    db.write_sync(lambda txn: txn.put_json(b"meta", b"schema_version", schema.SCHEMA_VERSION + 1))
    with pytest.raises(StoreUnavailable) as caught:
        migrate(db.env, db.dbs)
    assert "upgrade mailserver" in str(caught.value)


def test_migrations_run_in_order(tmp_path, monkeypatch):
    """Pending migrations run one by one, each bumping the stored version."""
    calls = []
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 3)
    monkeypatch.setitem(schema.MIGRATIONS, 1, lambda txn, dbs: calls.append(1))
    monkeypatch.setitem(schema.MIGRATIONS, 2, lambda txn, dbs: calls.append(2))
    db = Database.open(str(tmp_path / "i"), map_size=16 << 20, reactor=reactor)
    assert calls == [1, 2]
    assert db.schema_version == 3



def test_snapshot_of_an_older_index_says_to_upgrade(tmp_path) -> None:
    """A read-only snapshot of an index from an older program (here: only the meta sub-db,
    at the previous version) answers with the upgrade to run, not 'cannot read the index'."""
    import lmdb

    from mailserver.db import Snapshot

    path = str(tmp_path / "index")
    env = lmdb.open(path, map_size=1 << 24, max_dbs=4)
    with env.begin(write=True) as txn:
        meta = env.open_db(b"meta", txn=txn)
        txn.put(b"schema_version", schema.dump(schema.SCHEMA_VERSION - 1), db=meta)
    env.close()
    with pytest.raises(StoreUnavailable) as error:
        Snapshot.open(path, map_size=1 << 24)
    assert "run any storage command" in error.value.detail


class CountingReactor:
    """The real reactor, counting the calls handed to it from other threads."""

    def __init__(self) -> None:
        self.from_threads = 0

    def callFromThread(self, function, *args) -> None:
        self.from_threads += 1
        reactor.callFromThread(function, *args)


@pytest_twisted.ensureDeferred
async def test_a_group_commit_wakes_the_reactor_once(tmp_path):
    """The writes of one group commit are answered in one call into the reactor thread,
    each with its own result (or failure) and in the order they were queued."""
    import threading

    counting = CountingReactor()
    database = Database.open(str(tmp_path / "index"), map_size=16 << 20, reactor=counting)
    try:
        gate, running = threading.Event(), threading.Event()
        first = database.write(lambda txn: (running.set(), gate.wait(10))[1])
        assert running.wait(10)  # the writer thread is held inside the first batch
        order: list[int] = []

        def put(n):
            def op(txn):
                if n == 2:
                    raise Boom()
                txn.put(b"meta", b"k%d" % n, b"v")
                return n
            return op

        writes = [database.write(put(n)) for n in range(5)]
        for n, d in enumerate(writes):
            d.addBoth(lambda result, n=n: (order.append(n), result)[1])
        gate.set()
        assert await first is True
        results = await defer.DeferredList(writes, consumeErrors=True)
        assert [ok for ok, _ in results] == [True, True, False, True, True]
        assert [value for ok, value in results if ok] == [0, 1, 3, 4]
        assert order == [0, 1, 2, 3, 4]
        assert counting.from_threads == 2  # the held write's batch, then the other five
    finally:
        await database.close()


@pytest_twisted.ensureDeferred
async def test_submit_queues_a_write_from_another_thread(db):
    """A write submitted from a thread other than the reactor's is committed in a group
    commit and answers its Deferred on the reactor thread."""
    import threading

    answered_on = []
    done = defer.Deferred()
    done.addCallback(lambda result: (answered_on.append(threading.current_thread()), result)[1])
    thread = threading.Thread(
        target=db.submit, args=(lambda txn: (txn.put(b"meta", b"from", b"thread"), 7)[1], done)
    )
    thread.start()
    thread.join()
    assert await done == 7
    assert answered_on == [threading.main_thread()]
    with db.read() as txn:
        assert txn.get(b"meta", b"from") == b"thread"


@pytest_twisted.ensureDeferred
async def test_submit_after_close_fails_with_store_unavailable(db):
    """Once the index is closing, a submitted write is not run: its Deferred fails with
    StoreUnavailable on the reactor thread."""
    closing = db.close()
    done = defer.Deferred()
    db.submit(lambda txn: txn.put(b"meta", b"late", b"1"), done)
    with pytest.raises(StoreUnavailable):
        await done
    await closing


_HOLD_LOCK = """
import sys, lmdb
env = lmdb.open(sys.argv[1], max_dbs=64, map_size=16 << 20)
txn = env.begin(write=True)
print("held", flush=True)
sys.stdin.readline()
txn.abort()
"""


@pytest_twisted.ensureDeferred
async def test_writes_queued_while_another_process_holds_the_lock_join_the_commit(tmp_path):
    """The batch is gathered once the write lock is held: writes queued while another
    process (an SMTP worker) held it share the waiting write's commit and its fsyncs."""
    import subprocess
    import sys

    from twisted.internet import task, threads

    path = str(tmp_path / "index")
    database = Database.open(path, map_size=16 << 20, reactor=reactor)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, path],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert await threads.deferToThread(holder.stdout.readline) == "held\n"

        def record(n):
            def op(txn):
                txn.put(b"meta", b"k%d" % n, b"v")
                return database.env.info()["last_txnid"]  # the commit this write is in
            return op

        first = database.write(record(0))
        while not database._queue.empty():  # the writer has taken it and waits for the lock
            await task.deferLater(reactor, 0.01, lambda: None)
        later = [database.write(record(n)) for n in (1, 2, 3)]
        holder.stdin.write("\n")
        holder.stdin.flush()
        commits = await defer.gatherResults([first, *later])
        assert len(set(commits)) == 1
        with database.read() as txn:
            assert [txn.get(b"meta", b"k%d" % n) for n in range(4)] == [b"v"] * 4
    finally:
        holder.kill()
        holder.wait()
        await database.close()
