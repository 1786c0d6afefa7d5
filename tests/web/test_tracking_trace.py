"""Message tracking from the trace log: with ``context.trace`` set, GET /admin/track answers
from the records the store, the spool and the scheduler logged (through the trace observer
on the global log publisher), so the delivery attempts outlive the queue entry, DSNs are
linked to it, and nothing is scanned; a message the trace does not know falls back to the
scans and says so. Real index, maildir store, spool, router and scheduler; the courier is
scripted (remote delivery over real sockets is tests/e2e/test_tracking.py)."""

from __future__ import annotations

import time
from io import BytesIO
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed

from mailserver.auth.roles import Action, Actor, require
from mailserver.spool.queue import LmdbSpool
from mailserver.spool.remote import Outcome
from mailserver.spool.router import Router
from mailserver.spool.scheduler import Scheduler
from mailserver.store.local import LocalDeliveryTarget
from mailserver.trace import TraceLog, TraceService
from mailserver.types import Address, Envelope, RecipientState, Role
from mailserver.web.api import tracking
from mailserver.web.api.context import ApiContext
from mailserver.web.api.routing import Call, Problem

ADMIN, ALICE, BOB = "root@example.org", "alice@example.org", "bob@example.org"
SMTP_ID = "0A1B2C3D4E5F"
MESSAGE = (b"From: alice@example.org\r\nTo: bob@example.org, carol@remote.test\r\n"
           b"Subject: both ways\r\nMessage-ID: <both@example.org>\r\n\r\nHello.\r\n")


class FailingCourier:
    """Every remote recipient is refused for good by mx.remote.test."""

    def deliver(self, entry: Any, domain: str, recipients: Any, open_message: Any) -> Any:
        return succeed({r.address: Outcome(RecipientState.FAILED, "550 5.1.1 no such user",
                                           "5.1.1", "mx.remote.test") for r in recipients})


@pytest.fixture
def world(storage, tmp_path):
    directory = storage.directory
    wait = pytest_twisted.blockon
    wait(directory.add_domain("example.org"))
    for address, role in ((ADMIN, Role.ADMIN), (ALICE, Role.USER), (BOB, Role.USER)):
        wait(directory.add_user(address, "secret", [role]))
        wait(storage.store.create_account(address))
    spool = LmdbSpool(storage.db, str(tmp_path / "spool"), reactor, fsync=False)
    router = Router(LocalDeliveryTarget(storage.store, directory), spool, directory)
    scheduler = Scheduler(spool, FailingCourier(), reactor, hostname="mail.example.org",
                          bounces=router)
    trace = TraceLog(storage.db, reactor, flush_interval=0.05)
    service = TraceService(trace)
    service.startService()

    def authorize(user: str, action: str, target: str | None) -> None:
        require(Actor.of(directory.get_user(user)), Action(action), target)

    context = ApiContext(reactor=reactor, credentials=None, directory=directory,
                         authenticate=lambda *a, **k: Deferred(), authorize=authorize,
                         store=storage.store, spool=spool, trace=trace)

    class World:
        pass

    w = World()
    w.spool, w.router, w.scheduler, w.trace, w.context = spool, router, scheduler, trace, context
    yield w
    wait(service.stopService())


async def track(world: Any, **query: str) -> dict[str, Any]:
    call = Call(None, world.context, ADMIN, frozenset({"api"}), {},
                {k: [v] for k, v in query.items()}, None, "127.0.0.1")
    return await tracking.track(call)


async def submit(world: Any) -> str:
    """As the submission port would: one transaction for a local and a remote recipient."""
    envelope = Envelope(sender=Address("alice", "example.org"), helo="client.example",
                        client_address="192.0.2.7", authenticated_as=ALICE,
                        received_at=time.time(), queue_id=SMTP_ID)
    delivery = world.router.start(envelope)
    await delivery.add_recipient(Address("bob", "example.org"))
    await delivery.add_recipient(Address("carol", "remote.test"))
    await delivery.body(BytesIO(MESSAGE))
    await delivery.commit()
    [entry] = world.spool.entries()
    return entry.queue_id


@pytest_twisted.ensureDeferred
async def test_the_path_survives_the_queue_entry_and_links_the_dsn(world):
    """Stored for bob, queued for carol, refused by her MX, bounced to alice: after the
    entry left the queue, one query by Message-ID (or by either id) still shows the
    mailbox, the attempt (MX host, reply, status) and where the DSN went."""
    queue_id = await submit(world)
    await world.scheduler.attempt(queue_id)
    assert world.spool.get(queue_id) is None  # every recipient final: the entry is gone
    body = await track(world, message_id="<both@example.org>")
    assert body["trace"]["recorded"] is True and body["trace"]["records"] >= 4
    assert body["message_id"] == "<both@example.org>"
    [place] = body["storage"]["locations"]
    assert (place["account"], place["folder"], place["present"]) == (BOB, "INBOX", True)
    assert body["queue"]["queue_ids"] == [queue_id] and body["queue"]["entries"] == []
    [attempt] = body["queue"]["attempts"]
    assert (attempt["rcpt"], attempt["relay"], attempt["status"], attempt["result"]) == (
        "carol@remote.test", "mx.remote.test", "5.1.1", "failed")
    assert attempt["reply"] == "550 5.1.1 no such user"
    [dsn] = body["dsns"]
    assert (dsn["dsn_for"], dsn["account"], dsn["folder"]) == (queue_id, ALICE, "INBOX")
    assert "no SMTP session record" in " ".join(body["gaps"])
    for query in ({"queue_id": queue_id}, {"queue_id": SMTP_ID.lower()}):
        again = await track(world, **query)
        assert again["queue"]["attempts"] == body["queue"]["attempts"], query
        assert again["storage"]["locations"] == body["storage"]["locations"], query


@pytest_twisted.ensureDeferred
async def test_a_copy_moved_since_is_reported_not_present(world):
    """The trace keeps where the message was delivered; a copy moved away since (IMAP MOVE)
    is shown with ``present: false``, found by one UID look-up, not a scan."""
    await submit(world)
    inbox = world.context.store.account(BOB).folder("INBOX")
    [uid] = list(inbox.uids())
    await inbox.move([uid], "Trash")
    body = await track(world, message_id="both@example.org")
    [place] = body["storage"]["locations"]
    assert (place["account"], place["folder"], place["uid"]) == (BOB, "INBOX", uid)
    assert place["present"] is False and body["storage"]["scanned"] == 0


@pytest_twisted.ensureDeferred
async def test_a_message_the_trace_does_not_know_falls_back_to_the_scans(world):
    await world.context.store.account(BOB).folder("INBOX").append(
        BytesIO(b"Message-ID: <old@example.org>\r\nSubject: before\r\n\r\nx\r\n"))
    body = await track(world, message_id="<old@example.org>")
    assert body["trace"] == {"recorded": True, "records": 0, "complete": True}
    assert body["gaps"][0] == tracking.NOT_TRACED
    assert [p["account"] for p in body["storage"]["locations"]] == [BOB]
    assert body["storage"]["scanned"] == 1


@pytest_twisted.ensureDeferred
async def test_a_bad_queue_id_is_refused_before_the_trace_is_read(world):
    with pytest.raises(Problem) as refused:
        await track(world, queue_id="not hex")
    assert refused.value.status == 400
