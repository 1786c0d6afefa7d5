"""The look-ups of local delivery kept per process: the directory's answers (resolve,
has_domain, get_user) and each account's INBOX are used again only while the index's
directory generation is unchanged, and every change to a domain, user, alias, folder or
account, from this process or another one, changes it in the same commit.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted

from mailserver.db.env import current_generation
from mailserver.diskspace import FreeSpace, InsufficientStorage
from mailserver.errors import NoSuchUser
from mailserver.store.local import LocalDeliveryTarget
from mailserver.types import Address, Envelope

ALICE = "alice@example.org"
ROOT = Path(__file__).resolve().parents[2]


async def provisioned(storage) -> LocalDeliveryTarget:
    await storage.directory.add_domain("example.org")
    await storage.directory.add_user(ALICE, "pw")
    await storage.store.create_account(ALICE)
    return LocalDeliveryTarget(storage.store, storage.directory)


async def deliver(target: LocalDeliveryTarget, to: str = ALICE) -> list[int]:
    delivery = target.start(Envelope(sender=Address("carol", "example.net"), queue_id="Q1"))
    await delivery.add_recipient(Address(*to.split("@")))
    await delivery.body(io.BytesIO(b"From: carol@example.net\r\nSubject: s\r\n\r\nhello\r\n"))
    uids: list[int] = await delivery.commit()
    return uids


async def refused(target: LocalDeliveryTarget, to: str = ALICE) -> None:
    delivery = target.start(Envelope(sender=Address("carol", "example.net"), queue_id="Q2"))
    with pytest.raises(NoSuchUser):
        await delivery.add_recipient(Address(*to.split("@")))


@pytest_twisted.ensureDeferred
async def test_deliveries_leave_the_generation_alone(storage):
    """Storing messages (index, quota counters, folder counters) does not change the
    directory generation, so the kept look-ups stay in use from message to message."""
    target = await provisioned(storage)
    before = current_generation(storage.db)
    assert before is not None  # provisioning changed it
    assert await deliver(target) == [1]
    assert await deliver(target) == [2]
    assert current_generation(storage.db) == before


@pytest_twisted.ensureDeferred
async def test_each_directory_or_folder_change_moves_the_generation(storage):
    """Adding an alias, creating a folder and removing a user each change the generation;
    a write that fails changes nothing."""
    target = await provisioned(storage)
    seen = [current_generation(storage.db)]
    await storage.directory.add_alias("info@example.org", [ALICE])
    seen.append(current_generation(storage.db))
    await storage.store.account(ALICE).create_folder("Projects")
    seen.append(current_generation(storage.db))

    def failing(txn):
        txn.put(b"users", b"mallory@example.org", b"{}")
        raise ValueError("rolled back")

    with pytest.raises(ValueError):
        await storage.db.write(failing)
    seen.append(current_generation(storage.db))
    assert len(set(seen)) == 3 and seen[-1] == seen[-2]
    assert storage.directory.get_user("mallory@example.org") is None
    assert await deliver(target, "info@example.org") == [1]


@pytest_twisted.ensureDeferred
async def test_a_removed_user_is_refused_at_once(storage):
    """A user delivered to (so kept) and then removed from the directory is refused with
    NoSuchUser at the next RCPT, and so is one whose store account is deleted."""
    target = await provisioned(storage)
    await deliver(target)
    await storage.directory.remove_user(ALICE)
    await refused(target)
    await storage.directory.add_user(ALICE, "pw")
    assert await deliver(target) == [2]  # the same account again: its second message
    await storage.store.delete_account(ALICE)
    await refused(target)


@pytest_twisted.ensureDeferred
async def test_a_user_removed_by_another_process_is_refused(storage):
    """Another process (as the CLI is) removing the user from the shared index is seen at
    the next look-up: nothing kept in this process answers for a deleted user."""
    target = await provisioned(storage)
    await deliver(target)
    assert storage.directory.resolve(ALICE) == [ALICE]
    script = (
        "import sys\n"
        "from mailserver.db import Database\n"
        "db = Database.open(sys.argv[1], map_size=64 << 20, reactor=None, sync=False)\n"
        "db.write_sync(lambda txn: txn.delete(b'users', sys.argv[2].encode()))\n"
        "db.env.close()\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(storage.root / "index"), ALICE],
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert storage.directory.resolve(ALICE) == []
    await refused(target)


@pytest_twisted.ensureDeferred
async def test_the_reserve_is_checked_before_the_body_is_written(storage, tmp_path):
    """A local target given the free-space reserve refuses a body that would leave less
    free with InsufficientStorage (452 4.3.1) and stores nothing, not even in tmp/; with
    space back the same message arrives."""
    await provisioned(storage)
    space = FreeSpace(str(tmp_path))
    space.minimum = space.free() + (1 << 30)
    target = LocalDeliveryTarget(storage.store, storage.directory, reserve=space)
    with pytest.raises(InsufficientStorage):
        await deliver(target)
    inbox = storage.store.account(ALICE).folder("INBOX")
    assert list(inbox.uids()) == []
    assert not any(os.scandir(os.path.join(inbox.path, "tmp")))
    space.minimum = 0
    assert await deliver(target) == [1]
