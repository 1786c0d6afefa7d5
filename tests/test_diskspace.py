"""Disk full (mailserver/diskspace.py): the free-space reserve refuses new mail with 452 4.3.1
before the disk is full, a write that fails with ENOSPC anyway becomes the same answer and
leaves nothing behind, and the store's APPEND and the delivery targets honour both."""

from __future__ import annotations

import errno
import io
import os
import shutil

import pytest
import pytest_twisted

from mailserver import durable
from mailserver.diskspace import (
    FreeSpace,
    InsufficientStorage,
    ReserveTarget,
    mapped,
    out_of_space,
)
from mailserver.imap.commands.base import result_for_error
from mailserver.smtp.codes import reply_for_error
from mailserver.store.local import LocalDeliveryTarget
from mailserver.types import Address, Envelope
from tests.conftest import Storage

DEV_FULL = "/dev/full"
SUBDIRS = ("cur", "new", "tmp")
needs_dev_full = pytest.mark.skipif(
    not os.path.exists(DEV_FULL), reason="/dev/full not available"
)


def test_insufficient_storage_is_452_4_3_1_and_imap_unavailable():
    """SMTP hears 452 4.3.1 (RFC 3463 X.3.1), IMAP NO [UNAVAILABLE] (RFC 5530)."""
    error = InsufficientStorage(detail="0 bytes free")
    reply = reply_for_error(error)
    assert (reply.code, reply.enhanced) == (452, "4.3.1") and error.temporary
    result = result_for_error(error)
    assert (result.status, result.code) == ("NO", b"UNAVAILABLE")
    assert "bytes free" not in reply.encode().decode()  # the detail is for the log only


def test_reserve_above_the_free_space_refuses(tmp_path):
    """A minimum above what the disk has free refuses; no minimum never refuses."""
    space = FreeSpace(str(tmp_path))
    free = space.free()
    assert free == shutil.disk_usage(tmp_path).free
    space.check(1 << 40)  # minimum 0: nothing is checked
    space.minimum = free + (1 << 30)
    with pytest.raises(InsufficientStorage):
        space.check()
    space.minimum = 1
    space.check(0)
    with pytest.raises(InsufficientStorage):
        space.check(free)  # the incoming message itself would leave less than the minimum


def test_reserve_reads_the_injected_statvfs(tmp_path):
    """The free space is f_bavail * f_frsize of the file system (what a non-root process
    may write), read fresh at every check."""
    real = os.statvfs(tmp_path)
    disks = iter([(10, 4096), (1000, 4096)])

    def statvfs(path: str) -> os.statvfs_result:
        blocks, size = next(disks)
        fields = list(real)
        fields[1], fields[4] = size, blocks  # f_frsize, f_bavail
        return os.statvfs_result(fields)

    space = FreeSpace(str(tmp_path), minimum=100 * 4096, statvfs=statvfs)
    with pytest.raises(InsufficientStorage):
        space.check()
    space.check()  # space came back


@needs_dev_full
def test_a_write_failing_with_enospc_is_mapped():
    """ENOSPC from a real file object (/dev/full) becomes InsufficientStorage; other
    errors pass through."""
    with open(DEV_FULL, "wb", buffering=0) as full:
        with pytest.raises(InsufficientStorage) as raised:
            mapped(shutil.copyfileobj)(io.BytesIO(b"x" * 100), full)
    assert isinstance(raised.value.__cause__, OSError)
    assert out_of_space(raised.value.__cause__)
    with pytest.raises(FileNotFoundError):
        mapped(open)("/nonexistent/file")
    assert not out_of_space(OSError(errno.EACCES, "denied"))


class FillsTheDisk(io.RawIOBase):
    """A message source that yields 64 KiB and then fails as a write on a full disk does
    (OSError ENOSPC), as when the spooled copy it reads from hits the end of the disk."""

    def __init__(self) -> None:
        self.left = 1 << 16

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:
        if self.left <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        return n


def test_durable_write_new_maps_enospc_and_leaves_nothing(tmp_path):
    """durable.write_new (maildir and spool) failing with ENOSPC half-way: the partial file
    is removed and the error is InsufficientStorage (452 4.3.1)."""
    target = tmp_path / "message"
    with pytest.raises(InsufficientStorage):
        durable.write_new(str(target), FillsTheDisk())
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_reserve_target_refuses_the_body_and_stores_nothing(tmp_path):
    """Local delivery behind the reserve: below it the body is refused with
    InsufficientStorage and nothing is stored; with space back the same message arrives."""
    storage = Storage(tmp_path, fsync=True)
    try:
        await storage.directory.add_domain("example.org")
        await storage.directory.add_user("alice@example.org", "pw")
        await storage.store.create_account("alice@example.org")
        from twisted.internet import reactor

        space = FreeSpace(str(tmp_path))
        space.minimum = space.free() + (1 << 30)
        target = ReserveTarget(
            LocalDeliveryTarget(storage.store, storage.directory), space, reactor
        )
        message = b"Subject: hi\r\n\r\nbody\r\n"

        async def deliver() -> None:
            delivery = target.start(Envelope(sender=Address("carol", "example.net")))
            await delivery.add_recipient(Address("alice", "example.org"))
            try:
                await delivery.body(io.BytesIO(message))
                await delivery.commit()
            except BaseException:
                await delivery.abort()
                raise

        with pytest.raises(InsufficientStorage):
            await deliver()
        inbox = storage.store.account("alice@example.org").folder("INBOX")
        assert list(inbox.uids()) == []
        assert not any(os.scandir(os.path.join(inbox.path, "tmp")))
        space.minimum = 0
        await deliver()
        assert len(list(inbox.uids())) == 1
    finally:
        await storage.aclose()


@pytest_twisted.ensureDeferred
async def test_append_below_the_reserve_is_refused(tmp_path):
    """IMAP APPEND goes through the store's own reserve check: refused, nothing stored."""
    storage = Storage(tmp_path, fsync=True)
    try:
        await storage.store.create_account("alice@example.org")
        space = FreeSpace(str(tmp_path))
        storage.store.free_space = space
        inbox = storage.store.account("alice@example.org").folder("INBOX")
        space.minimum = space.free() + (1 << 30)
        with pytest.raises(InsufficientStorage):
            await inbox.append(io.BytesIO(b"Subject: x\r\n\r\ny\r\n"))
        assert list(inbox.uids()) == []
        space.minimum = 0
        await inbox.append(io.BytesIO(b"Subject: x\r\n\r\ny\r\n"))
        assert len(list(inbox.uids())) == 1
    finally:
        await storage.aclose()


@pytest_twisted.ensureDeferred
async def test_a_full_index_is_insufficient_storage(tmp_path):
    """The index reaching its map size ([store] map_size_mb) answers like a full disk:
    InsufficientStorage, and the messages stored before it stay readable."""
    from twisted.internet import reactor

    from mailserver.db import Database
    from mailserver.store.maildir_store import MaildirStore

    db = Database.open(str(tmp_path / "index"), map_size=1 << 20, reactor=reactor)
    store = MaildirStore(db, str(tmp_path / "mail"), reactor=reactor)
    try:
        await store.create_account("alice@example.org")
        inbox = store.account("alice@example.org").folder("INBOX")
        subject = "s" * 60_000  # cached in the index with the envelope
        stored = 0
        with pytest.raises(InsufficientStorage):
            for n in range(100):
                await inbox.append(io.BytesIO(f"Subject: {n} {subject}\r\n\r\nx\r\n".encode()))
                stored += 1
        assert 0 < stored < 100
        assert len(list(inbox.uids())) == stored

        def files() -> int:  # nothing the index refused stays for recovery to pick up
            return sum(len(os.listdir(os.path.join(inbox.path, sub))) for sub in SUBDIRS)

        assert files() == stored
        from mailserver.auth.directory import LmdbDirectory

        directory = LmdbDirectory(db, reactor=reactor, bcrypt_cost=4)
        await directory.add_domain("example.org")
        await directory.add_user("alice@example.org", "pw")
        delivery = LocalDeliveryTarget(store, directory).start(
            Envelope(sender=Address("carol", "example.net"))
        )
        await delivery.add_recipient(Address("alice", "example.org"))
        await delivery.body(io.BytesIO(f"Subject: {subject}\r\n\r\nx\r\n".encode()))
        with pytest.raises(InsufficientStorage):
            await delivery.commit()
        assert files() == stored
        assert await store.recover() == 0
    finally:
        await store.close()
        await db.close()
