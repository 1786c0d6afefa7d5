"""The submission avatar: who may send as whom, From checks, Date/Message-ID added."""

from __future__ import annotations

from io import BytesIO

import pytest
import pytest_twisted
from twisted.internet import reactor

from mailserver.auth.submission import SenderNotOwned, SubmissionTarget
from mailserver.spool.router import Router
from mailserver.testing import MemoryDeliveryTarget, MemoryDirectory, MemoryStore
from mailserver.types import Address, Envelope
from tests.lines import populate


class Recording:
    """A remote target that keeps what it got (stands in for the spool in these tests)."""

    def __init__(self):
        self.got = []

    def start(self, envelope):
        owner = self

        class Delivery:
            def __init__(self):
                self.envelope, self.rcpts, self.data = envelope, [], None

            def add_recipient(self, address, params=None):
                self.rcpts.append(str(address))

            def body(self, source):
                self.data = source.read()

            def commit(self):
                owner.got.append(self)

            def abort(self):
                pass

        return Delivery()


@pytest.fixture
def world():
    store, directory = MemoryStore(), MemoryDirectory()
    wait = pytest_twisted.blockon
    populate(store, directory, "pw")
    wait(directory.add_alias("sales@example.org", ["alice@example.org", "bob@example.org"]))
    remote = Recording()
    queued = []
    router = Router(MemoryDeliveryTarget(store, directory), remote, directory,
                    queued=lambda: queued.append(1))
    target = SubmissionTarget("alice@example.org", directory, router, "mail.example.org", reactor)
    return target, store, remote, queued


def inbox(store, user):
    folder = store.account(f"{user}@example.org").folder("INBOX")
    return [folder.message(uid).open().read() for uid in folder.uids()]


def test_ownership(world):
    target = world[0]
    assert target.owns("alice@example.org") and target.owns("Alice+tag@EXAMPLE.org")
    assert target.owns("sales@example.org")  # an alias that reaches alice
    assert not target.owns("bob@example.org") and not target.owns("alice@elsewhere.test")
    with pytest.raises(SenderNotOwned) as refused:
        target.start(Envelope(sender=Address("bob", "example.org")))
    assert (refused.value.code, refused.value.enhanced) == (553, "5.7.1")
    assert target.start(Envelope(sender=None)).envelope.authenticated_as == "alice@example.org"


@pytest_twisted.ensureDeferred
async def test_routes_local_and_remote_and_adds_missing_fields(world):
    target, store, remote, queued = world
    delivery = target.start(Envelope(sender=Address("alice", "example.org")))
    await delivery.add_recipient(Address("bob", "example.org"))
    await delivery.add_recipient(Address("carol", "remote.test"))
    body = b"Received: from x\r\n\tby y; now\r\nFrom: alice@example.org\r\nSubject: s\r\n\r\nhi\r\n"
    await delivery.body(BytesIO(body))
    await delivery.commit()
    [bob] = inbox(store, "bob")
    [sent] = remote.got
    assert sent.rcpts == ["carol@remote.test"] and sent.data.endswith(b"\r\n\r\nhi\r\n")
    assert queued == [1]
    head = sent.data.split(b"\r\n\r\n")[0]
    assert head.startswith(b"Received: from x\r\n\tby y; now\r\nDate: ")  # after the trace
    assert b"\r\nMessage-ID: <" in head and head.count(b"Date:") == 1
    assert bob.endswith(b"Subject: s\r\n\r\nhi\r\n")


@pytest_twisted.ensureDeferred
async def test_from_header_must_be_owned(world):
    target = world[0]
    delivery = target.start(Envelope(sender=Address("alice", "example.org")))
    await delivery.add_recipient(Address("bob", "example.org"))
    with pytest.raises(SenderNotOwned):
        await delivery.body(BytesIO(b"From: Bob <bob@example.org>\r\n\r\nx\r\n"))


@pytest_twisted.ensureDeferred
async def test_existing_date_and_message_id_are_kept(world):
    target, _store, remote, _queued = world
    delivery = target.start(Envelope(sender=Address("alice", "example.org")))
    await delivery.add_recipient(Address("carol", "remote.test"))
    body = (
        b"From: alice@example.org\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        b"Message-ID: <a@b>\r\n\r\nx\r\n"
    )
    await delivery.body(BytesIO(body))
    await delivery.commit()
    assert remote.got[0].data == body


@pytest_twisted.ensureDeferred
async def test_unknown_local_recipient_is_refused_and_spoils_nothing(world):
    target, _store, remote, _queued = world
    delivery = target.start(Envelope(sender=Address("alice", "example.org")))
    with pytest.raises(Exception) as caught:
        await delivery.add_recipient(Address("nobody", "example.org"))
    assert caught.value.code == 550
    await delivery.add_recipient(Address("carol", "remote.test"))
    await delivery.body(BytesIO(b"From: alice@example.org\r\n\r\nx\r\n"))
    await delivery.commit()
    assert remote.got[0].rcpts == ["carol@remote.test"]
