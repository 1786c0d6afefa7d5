"""Expunge tombstones for QRESYNC (RFC 7162 §3.2.5-6) and UNCHANGEDSINCE (RFC 7162 §3.1.3).

The behaviour both providers guarantee runs against the maildir + LMDB store and the
in-memory one; pruning, durability and the schema migration are the LMDB index's own.
"""

from __future__ import annotations

import io
import os

import pytest
import pytest_twisted

from mailserver.db import schema
from mailserver.db.schema import u32
from mailserver.store import index
from mailserver.store.reindex import reindex
from mailserver.testing import MemoryStore
from mailserver.types import DELETED, SEEN, FlagMode
from tests.conftest import Storage

ALICE = "alice@example.org"


def data(n: int) -> io.BytesIO:
    return io.BytesIO(b"From: bob@example.net\r\nSubject: %d\r\n\r\nbody\r\n" % n)


@pytest.fixture(params=["maildir", "memory"])
def account(request):
    if request.param == "maildir":
        store = request.getfixturevalue("storage").store
    else:
        store = MemoryStore()
    pytest_twisted.blockon(store.create_account(ALICE))
    return store.account(ALICE)


async def fill(mailbox, count: int) -> list[int]:
    return [await mailbox.append(data(n)) for n in range(count)]


@pytest_twisted.ensureDeferred
async def test_expunge_is_recorded_and_raises_highestmodseq(account):
    """An expunge raises HIGHESTMODSEQ, and expunged_since(m) lists exactly the UIDs removed
    after m, ascending."""
    inbox = account.folder("INBOX")
    uids = await fill(inbox, 5)
    before = inbox.info().highestmodseq
    assert inbox.expunged_since(before) == []
    await inbox.store_flags([uids[3], uids[1]], [DELETED], FlagMode.ADD)
    flagged = inbox.info().highestmodseq
    assert await inbox.expunge() == [uids[1], uids[3]]
    after = inbox.info().highestmodseq
    assert after > flagged > before
    assert inbox.expunged_since(before) == [uids[1], uids[3]]
    assert inbox.expunged_since(flagged) == [uids[1], uids[3]]
    assert inbox.expunged_since(after) == []
    await inbox.expunge([uids[0]])
    assert inbox.expunged_since(after) == [uids[0]]
    assert inbox.expunged_since(before) == [uids[0], uids[1], uids[3]]


@pytest_twisted.ensureDeferred
async def test_move_leaves_tombstones_in_the_source_only(account):
    """MOVE removes from the source (tombstones there) and adds to the target (none)."""
    inbox = account.folder("INBOX")
    uids = await fill(inbox, 3)
    mark = inbox.info().highestmodseq
    archive = account.folder("Archive")
    target_mark = archive.info().highestmodseq
    await inbox.move(uids[:2], "Archive")
    assert inbox.expunged_since(mark) == uids[:2]
    assert archive.expunged_since(target_mark) == []
    assert inbox.info().highestmodseq > mark


@pytest_twisted.ensureDeferred
async def test_conditional_store_leaves_newer_messages_alone(account):
    """conditional_store changes only messages whose modseq is at most UNCHANGEDSINCE and
    names the others; 0 refuses every message (RFC 7162 §3.1.3)."""
    inbox = account.folder("INBOX")
    uids = await fill(inbox, 3)
    mark = inbox.info().highestmodseq
    [touched] = await inbox.store_flags([uids[1]], ["$Work"], FlagMode.ADD)
    changed, refused = await inbox.conditional_store(uids, [SEEN], FlagMode.ADD, mark)
    assert [info.uid for info in changed] == [uids[0], uids[2]]
    assert refused == [uids[1]]
    assert {info.uid: info.flags for info in inbox.flags()}[uids[1]] == {"$Work"}
    changed, refused = await inbox.conditional_store(uids, [DELETED], FlagMode.ADD, 0)
    assert changed == [] and refused == uids
    changed, refused = await inbox.conditional_store(
        [uids[0], uids[2]], [SEEN], FlagMode.ADD, inbox.info().highestmodseq
    )
    assert changed == [] and refused == []  # already set: nothing to do, nothing refused
    assert touched.modseq > mark


# -- the LMDB index ---------------------------------------------------------------------


@pytest.fixture
def alice(storage):
    pytest_twisted.blockon(storage.store.create_account(ALICE))
    return storage.store.account(ALICE)


def tombstones(storage, folder_id: int) -> int:
    with storage.db.read() as txn:
        return sum(1 for _ in txn.prefix(b"vanished", u32(folder_id)))


@pytest_twisted.ensureDeferred
async def test_tombstones_survive_a_restart(tmp_path):
    """Tombstones are written with the expunge, so they are durable like it."""
    storage = Storage(tmp_path)
    await storage.store.create_account(ALICE)
    inbox = storage.store.account(ALICE).folder("INBOX")
    uids = await fill(inbox, 2)
    await inbox.expunge([uids[0]])
    await storage.aclose()
    storage = Storage(tmp_path)
    try:
        assert storage.store.account(ALICE).folder("INBOX").expunged_since(0) == [uids[0]]
    finally:
        await storage.aclose()


@pytest_twisted.ensureDeferred
async def test_pruning_keeps_the_newest_and_raises_the_floor(storage, alice):
    """Beyond the bound the oldest tombstones go; below the floor the answer is None
    (unknown), at or above it the answer is still exact."""
    inbox = alice.folder("INBOX")
    uids = await fill(inbox, 30)
    marks = []
    for uid in uids[:20]:
        marks.append(inbox.info().highestmodseq)
        await storage.db.write(
            lambda txn, u=uid: index.remove_messages(
                txn, index.folder(txn, inbox.folder_id), [u], keep=8
            )
        )
    # 8 kept + 1 slack: the tenth removal pruned down to 8, the rest stayed below 9.
    count = tombstones(storage, inbox.folder_id)
    assert 8 <= count <= 9
    assert inbox.expunged_since(marks[0]) is None
    assert inbox.expunged_since(marks[-1]) == [uids[19]]
    assert inbox.expunged_since(marks[20 - count]) == uids[20 - count : 20]
    with storage.db.read() as txn:
        record = index.folder(txn, inbox.folder_id)
    assert record["tombstones"] == count
    assert inbox.expunged_since(record["vanished_floor"]) == uids[20 - count : 20]
    assert inbox.expunged_since(record["vanished_floor"] - 1) is None


@pytest_twisted.ensureDeferred
async def test_deleted_folder_takes_its_tombstones(storage, alice):
    """Deleting a folder removes its tombstones (folder ids are never reused)."""
    info = await alice.create_folder("Old")
    folder = alice.folder("Old")
    uids = await fill(folder, 3)
    await folder.expunge(uids)
    assert tombstones(storage, info.folder_id) == 3
    await alice.delete_folder("Old")
    assert tombstones(storage, info.folder_id) == 0


@pytest_twisted.ensureDeferred
async def test_reindex_drops_leave_tombstones(storage, alice):
    """A message whose file vanished from disk is dropped by reindex, and a QRESYNC client
    learns of it like any expunge."""
    inbox = alice.folder("INBOX")
    uids = await fill(inbox, 2)
    mark = inbox.info().highestmodseq
    message = inbox.message(uids[0])
    os.unlink(message.path())
    report = await reindex(storage.store, ALICE)
    assert report.messages_dropped == 1
    assert inbox.expunged_since(mark) == [uids[0]]
    assert inbox.info().highestmodseq > mark


@pytest_twisted.ensureDeferred
async def test_migration_from_v3_sets_the_floor(tmp_path):
    """An index from before tombstones: the migration sets each folder's floor to its
    HIGHESTMODSEQ, so older modseqs are unknown (full resync) and newer ones exact."""
    storage = Storage(tmp_path)
    await storage.store.create_account(ALICE)
    inbox = storage.store.account(ALICE).folder("INBOX")
    uids = await fill(inbox, 3)
    early = inbox.info().highestmodseq - 1
    await inbox.expunge([uids[0]])

    def downgrade(txn):
        for key, _ in list(txn.prefix(b"vanished", b"")):
            txn.delete(b"vanished", key)
        for key, value in list(txn.prefix(b"finfo", b"")):
            record = schema.load(value)
            record.pop("vanished_floor", None)
            record.pop("tombstones", None)
            txn.put(b"finfo", key, schema.dump(record))
        txn.put_json(b"meta", b"schema_version", 3)

    await storage.db.write(downgrade)
    await storage.aclose()
    storage = Storage(tmp_path)
    try:
        assert storage.db.schema_version == schema.SCHEMA_VERSION
        inbox = storage.store.account(ALICE).folder("INBOX")
        current = inbox.info().highestmodseq
        assert inbox.expunged_since(early) is None
        assert inbox.expunged_since(current) == []
        await inbox.expunge([uids[1]])
        assert inbox.expunged_since(current) == [uids[1]]
    finally:
        await storage.aclose()
