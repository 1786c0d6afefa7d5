"""Local delivery of a message held in memory: ``body`` takes the bytes at once and a pool
thread writes, fsyncs and parses them; the commit asked for meanwhile is handed by that
thread straight to the index writer. The transaction keeps its meaning: the commit fires
only once the file, its ``new/`` entry and the index entry are durable; a write that fails
fails the commit and leaves nothing; an abort removes the file whenever it comes.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from mailserver.diskspace import FreeSpace, InsufficientStorage
from mailserver.store.local import LocalDelivery, LocalDeliveryTarget
from mailserver.types import Address, Envelope

ALICE = "alice@example.org"
MESSAGE = b"From: carol@example.net\r\nSubject: s\r\n\r\nhello\r\n"


async def provisioned(storage, reserve: FreeSpace | None = None) -> LocalDeliveryTarget:
    await storage.directory.add_domain("example.org")
    await storage.directory.add_user(ALICE, "pw")
    await storage.store.create_account(ALICE)
    return LocalDeliveryTarget(storage.store, storage.directory, reserve=reserve)


async def started(target: LocalDeliveryTarget) -> LocalDelivery:
    delivery = target.start(Envelope(sender=Address("carol", "example.net"), queue_id="Q1"))
    await delivery.add_recipient(Address("alice", "example.org"))
    return delivery


def inbox_dir(storage, sub: str) -> list[str]:
    inbox = storage.store.account(ALICE).folder("INBOX")
    return sorted(os.listdir(os.path.join(inbox.path, sub)))


class BusyPool:
    """Every thread of the reactor's pool held until :meth:`release`: work queued meanwhile
    (a body's write) waits for a free thread, so a test can act before it runs."""

    def __init__(self) -> None:
        self.pool = reactor.getThreadPool()
        self.gate = threading.Event()
        self.held = 0
        self.lock = threading.Lock()

    async def hold(self) -> None:
        for _ in range(self.pool.max):
            self.pool.callInThread(self._hold)
        await until(lambda: self.held == self.pool.max)  # every thread is taken

    def _hold(self) -> None:
        with self.lock:
            self.held += 1
        self.gate.wait()

    def release(self) -> None:
        self.gate.set()


@pytest.fixture
def busy_pool() -> Iterator[BusyPool]:
    busy = BusyPool()
    yield busy
    busy.release()


async def until(predicate) -> None:
    """Let the reactor turn until ``predicate()`` holds (a pool thread finishing)."""
    while not predicate():
        await task.deferLater(reactor, 0.001, lambda: None)


@pytest_twisted.ensureDeferred
async def test_the_source_may_be_closed_once_the_body_is_taken(storage):
    """A message in memory is read by ``body``: its source may be closed as soon as the
    body's Deferred fires, and the commit stores exactly its bytes after the Return-Path."""
    target = await provisioned(storage)
    delivery = await started(target)
    source = io.BytesIO(MESSAGE)
    await delivery.body(source)
    source.close()
    assert await delivery.commit() == [1]
    with storage.store.account(ALICE).folder("INBOX").message(1).open() as stored:
        assert stored.read() == b"Return-Path: <carol@example.net>\r\n" + MESSAGE
    assert inbox_dir(storage, "tmp") == []


@pytest_twisted.ensureDeferred
async def test_a_commit_asked_for_during_the_write_is_stored(storage, busy_pool):
    """A commit asked for while the body is still waiting to be written fires only once the
    pool thread has written it and the writer has committed it; then it is in the INBOX."""
    target = await provisioned(storage)
    delivery = await started(target)
    await busy_pool.hold()
    await delivery.body(io.BytesIO(MESSAGE))
    committed = delivery.commit()
    assert not committed.called
    assert inbox_dir(storage, "tmp") == [] and inbox_dir(storage, "new") == []
    busy_pool.release()
    assert await committed == [1]
    assert len(list(storage.store.account(ALICE).folder("INBOX").uids())) == 1


@pytest_twisted.ensureDeferred
async def test_a_commit_after_the_write_is_stored(storage):
    """A commit asked for after the pool thread has finished the write is queued by the
    reactor thread itself, with the same result."""
    target = await provisioned(storage)
    delivery = await started(target)
    await delivery.body(io.BytesIO(MESSAGE))
    job = delivery._job
    assert job is not None
    await until(lambda: job.finished)
    assert len(inbox_dir(storage, "tmp")) == 1
    assert await delivery.commit() == [1]
    assert inbox_dir(storage, "tmp") == []


@pytest_twisted.ensureDeferred
async def test_an_abort_during_the_write_removes_the_file(storage, busy_pool):
    """An abort that comes before the write has run fires once the pool thread has written
    and removed the file: nothing stays in tmp/ and nothing is indexed."""
    target = await provisioned(storage)
    delivery = await started(target)
    await busy_pool.hold()
    await delivery.body(io.BytesIO(MESSAGE))
    aborted = delivery.abort()
    assert not aborted.called
    busy_pool.release()
    await aborted
    assert inbox_dir(storage, "tmp") == [] and inbox_dir(storage, "new") == []
    assert list(storage.store.account(ALICE).folder("INBOX").uids()) == []


@pytest_twisted.ensureDeferred
async def test_an_abort_after_the_write_removes_the_file(storage):
    """An abort after the write has finished removes the written file."""
    target = await provisioned(storage)
    delivery = await started(target)
    await delivery.body(io.BytesIO(MESSAGE))
    job = delivery._job
    assert job is not None
    await until(lambda: job.finished)
    await delivery.abort()
    assert inbox_dir(storage, "tmp") == []


@pytest_twisted.ensureDeferred
async def test_a_refused_write_fails_the_commit_and_spoils_nothing_else(storage, tmp_path):
    """Below the free-space reserve the body is taken but the commit fails with
    InsufficientStorage (452 4.3.1), nothing is stored, and the next message, with space
    back, is stored with UID 1."""
    space = FreeSpace(str(tmp_path))
    space.minimum = space.free() + (1 << 30)
    target = await provisioned(storage, reserve=space)
    delivery = await started(target)
    await delivery.body(io.BytesIO(MESSAGE))
    with pytest.raises(InsufficientStorage):
        await delivery.commit()
    await delivery.abort()
    assert inbox_dir(storage, "tmp") == [] and inbox_dir(storage, "new") == []
    space.minimum = 0
    delivery = await started(target)
    await delivery.body(io.BytesIO(MESSAGE))
    assert await delivery.commit() == [1]


@pytest_twisted.ensureDeferred
async def test_a_write_that_fails_fails_only_its_own_commit(storage, busy_pool):
    """Two messages written and committed together, to alice and to bob: alice's file cannot
    be created (her ``tmp/`` is gone), so her commit fails with the OS error and indexes
    nothing, while bob's message is stored."""
    target = await provisioned(storage)
    await storage.directory.add_user("bob@example.org", "pw")
    await storage.store.create_account("bob@example.org")
    to_alice = await started(target)
    to_bob = target.start(Envelope(sender=Address("carol", "example.net"), queue_id="Q2"))
    await to_bob.add_recipient(Address("bob", "example.org"))
    await busy_pool.hold()
    await to_alice.body(io.BytesIO(MESSAGE))
    await to_bob.body(io.BytesIO(MESSAGE))
    alice_inbox = storage.store.account(ALICE).folder("INBOX")
    tmp = os.path.join(alice_inbox.path, "tmp")
    os.rename(tmp, tmp + ".away")
    try:
        failing, stored = to_alice.commit(), to_bob.commit()
        busy_pool.release()
        with pytest.raises(FileNotFoundError):
            await failing
        assert await stored == [1]
    finally:
        os.rename(tmp + ".away", tmp)
    assert list(alice_inbox.uids()) == []
    assert list(storage.store.account("bob@example.org").folder("INBOX").uids()) == [1]


@pytest_twisted.ensureDeferred
async def test_a_file_backed_message_is_written_before_the_body_fires(storage, tmp_path):
    """A source that is a file on disk is read in the pool, never on the reactor thread:
    the body's Deferred fires once the file is in tmp/, as before."""
    target = await provisioned(storage)
    delivery = await started(target)
    path = tmp_path / "message.eml"
    path.write_bytes(MESSAGE)
    with open(path, "rb") as source:
        await delivery.body(source)
    assert delivery._job is None
    assert len(inbox_dir(storage, "tmp")) == 1
    assert await delivery.commit() == [1]
