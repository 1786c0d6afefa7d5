"""The LMDB spool: durable enqueue through the delivery transaction, per-recipient state,
the schedule, hold/release, removal, recovery of crash leftovers."""

from __future__ import annotations

import os
from io import BytesIO

import pytest
import pytest_twisted
from twisted.internet import reactor

from mailserver.db import Database
from mailserver.errors import MailError
from mailserver.spool.queue import LmdbSpool
from mailserver.types import Address, Envelope, QueuedRecipient, RecipientState

MESSAGE = b"From: a@example.org\r\nTo: x@remote.test\r\nSubject: out\r\n\r\nbody\r\n"


@pytest.fixture
def spool(tmp_path):
    db = Database.open(str(tmp_path / "index"), map_size=32 << 20, reactor=reactor, sync=False)
    yield LmdbSpool(db, str(tmp_path / "spool"), reactor, fsync=False)
    pytest_twisted.blockon(db.close())


SENDER = Address("a", "example.org")


async def enqueue(spool, recipients=("x@remote.test",), sender=SENDER, params=None):
    delivery = spool.start(Envelope(sender=sender, params=params or {"RET": "HDRS"},
                                    authenticated_as="a@example.org"))
    for r in recipients:
        local, domain = r.split("@")
        await delivery.add_recipient(Address(local, domain), {"NOTIFY": "FAILURE"})
    await delivery.body(BytesIO(MESSAGE))
    return await delivery.commit()


@pytest_twisted.ensureDeferred
async def test_enqueue_makes_an_entry_and_a_file(spool):
    queue_id = await enqueue(spool, ["x@remote.test", "y@other.test"])
    entry = spool.get(queue_id)
    assert entry.sender == "a@example.org" and entry.size == len(MESSAGE)
    assert [r.address for r in entry.recipients] == ["x@remote.test", "y@other.test"]
    assert entry.recipients[0].params == {"NOTIFY": "FAILURE"}
    assert entry.params == {"RET": "HDRS"} and entry.authenticated_as == "a@example.org"
    assert all(r.state is RecipientState.PENDING for r in entry.recipients)
    with spool.open_message(queue_id) as f:
        assert f.read() == MESSAGE
    assert spool.due(reactor.seconds() + 1) == [queue_id]
    assert spool.count() == 1


@pytest_twisted.ensureDeferred
async def test_null_sender_and_abort(spool):
    queue_id = await enqueue(spool, sender=None)
    assert spool.get(queue_id).sender == ""
    delivery = spool.start(Envelope(sender=None))
    await delivery.add_recipient(Address("x", "remote.test"))
    await delivery.body(BytesIO(MESSAGE))
    await delivery.abort()
    assert not os.path.exists(spool.message_path(delivery.queue_id))
    assert spool.get(delivery.queue_id) is None


@pytest_twisted.ensureDeferred
async def test_body_needs_a_recipient(spool):
    delivery = spool.start(Envelope(sender=None))
    with pytest.raises(MailError):
        await delivery.body(BytesIO(MESSAGE))


@pytest_twisted.ensureDeferred
async def test_update_keeps_pending_and_reschedules(spool):
    queue_id = await enqueue(spool, ["x@remote.test", "y@other.test"])
    now = reactor.seconds()
    done = QueuedRecipient("x@remote.test", state=RecipientState.DELIVERED,
                           last_reply="250 2.0.0 ok", attempts=1, updated=now)
    later = QueuedRecipient("y@other.test", state=RecipientState.DEFERRED,
                            last_reply="451 4.3.0 busy", attempts=1, updated=now)
    entry = await spool.update(queue_id, {"x@remote.test": done, "y@other.test": later}, now + 600)
    assert [r.address for r in entry.pending] == ["y@other.test"]
    assert entry.attempts == 1
    assert spool.due(now + 1) == []
    assert spool.due(now + 601) == [queue_id]
    assert spool.next_due() == pytest.approx(now + 600, abs=0.002)


@pytest_twisted.ensureDeferred
async def test_entry_and_file_removed_when_nothing_is_pending(spool):
    queue_id = await enqueue(spool)
    failed = QueuedRecipient("x@remote.test", state=RecipientState.FAILED, last_reply="550 no")
    assert await spool.update(queue_id, {"x@remote.test": failed}, 0) is None
    assert spool.get(queue_id) is None and spool.due(reactor.seconds() + 10) == []
    assert not os.path.exists(spool.message_path(queue_id))


@pytest_twisted.ensureDeferred
async def test_hold_release_reschedule_remove(spool):
    first = await enqueue(spool)
    second = await enqueue(spool)
    now = reactor.seconds()
    await spool.set_held(first, True)
    assert spool.due(now + 10) == [second]
    await spool.set_held(first, False)
    await spool.reschedule(second, now + 3600)
    assert spool.due(now + 10) == [first]
    await spool.remove(first)
    assert spool.get(first) is None and [e.queue_id for e in spool.entries()] == [second]
    with pytest.raises(MailError):
        await spool.remove(first)


@pytest_twisted.ensureDeferred
async def test_entries_page_in_id_order(spool):
    ids = [await enqueue(spool) for _ in range(5)]
    assert ids == sorted(ids)
    page = spool.entries(limit=2)
    assert [e.queue_id for e in page] == ids[:2]
    assert [e.queue_id for e in spool.entries(after=ids[1], limit=10)] == ids[2:]


@pytest_twisted.ensureDeferred
async def test_recover_removes_orphans_and_reports_missing(spool):
    kept = await enqueue(spool)
    lost = await enqueue(spool)
    os.unlink(spool.message_path(lost))
    with open(spool.message_path("0000ORPHAN"), "wb") as f:
        f.write(b"half")
    with open(os.path.join(spool.root, "tmp", "partial"), "wb") as f:
        f.write(b"half")
    removed, missing = await spool.recover()
    assert removed == 1 and missing == [lost]
    assert os.path.exists(spool.message_path(kept))
    assert not os.path.exists(spool.message_path("0000ORPHAN"))
    assert os.listdir(os.path.join(spool.root, "tmp")) == []
    assert spool.get(lost) is not None  # never silently dropped
