"""The IDeliveryTarget contract, for the store's local delivery and the in-memory one."""

from __future__ import annotations

import io

import pytest
import pytest_twisted
from zope.interface.verify import verifyObject

from mailserver.errors import MailError, NoSuchUser
from mailserver.interfaces import IDelivery, IDeliveryTarget
from mailserver.store.local import LocalDeliveryTarget
from mailserver.testing import MemoryDeliveryTarget, MemoryDirectory, MemoryStore
from mailserver.types import Address, Envelope

BODY = b"From: bob@example.net\r\nSubject: for all\r\n\r\nhello\r\n"


def envelope() -> Envelope:
    return Envelope(sender=Address("bob", "example.net"), received_at=1_700_000_000.0)


class DeliveryContract:
    @pytest.fixture
    def target(self, request):
        store, directory, target = self.make(request)
        wait = pytest_twisted.blockon
        wait(directory.add_domain("example.org"))
        for user in ("alice", "carol"):
            wait(directory.add_user(f"{user}@example.org", "pw"))
            wait(store.create_account(f"{user}@example.org"))
        wait(directory.add_alias("team@example.org", ["alice@example.org", "carol@example.org"]))
        self.store = store
        return target

    def inbox(self, user):
        return self.store.account(f"{user}@example.org").folder("INBOX")

    def test_provides_interfaces(self, target):
        """The target and its transactions provide their interfaces."""
        assert verifyObject(IDeliveryTarget, target)
        assert verifyObject(IDelivery, target.start(envelope()))

    @pytest_twisted.ensureDeferred
    async def test_deliver_to_several(self, target):
        """One transaction reaches every resolved account once, with a Return-Path."""
        delivery = target.start(envelope())
        await delivery.add_recipient(Address("team", "example.org"))
        await delivery.add_recipient(Address("alice+x", "example.org"))
        await delivery.body(io.BytesIO(BODY))
        await delivery.commit()
        for user in ("alice", "carol"):
            inbox = self.inbox(user)
            assert inbox.info().exists == 1
            [uid] = list(inbox.uids())
            message = inbox.message(uid)
            with message.open() as f:
                assert f.read() == b"Return-Path: <bob@example.net>\r\n" + BODY
            assert message.info.internaldate == 1_700_000_000.0
            assert message.info.envelope["subject"] == "for all"

    @pytest_twisted.ensureDeferred
    async def test_unknown_recipient_refused(self, target):
        """An unknown recipient is refused with NoSuchUser and spoils nothing else."""
        delivery = target.start(envelope())
        with pytest.raises(NoSuchUser):
            await delivery.add_recipient(Address("nobody", "example.org"))
        await delivery.add_recipient(Address("carol", "example.org"))
        await delivery.body(io.BytesIO(BODY))
        await delivery.commit()
        assert self.inbox("carol").info().exists == 1

    @pytest_twisted.ensureDeferred
    async def test_body_without_recipient(self, target):
        """A body with no accepted recipient is refused."""
        delivery = target.start(envelope())
        with pytest.raises(MailError):
            await delivery.body(io.BytesIO(BODY))

    @pytest_twisted.ensureDeferred
    async def test_abort_delivers_nothing(self, target):
        """An aborted transaction leaves every mailbox untouched."""
        delivery = target.start(envelope())
        await delivery.add_recipient(Address("alice", "example.org"))
        await delivery.body(io.BytesIO(BODY))
        await delivery.abort()
        await delivery.abort()
        assert self.inbox("alice").info().exists == 0
        with pytest.raises(MailError):
            await delivery.commit()


class TestLocalDelivery(DeliveryContract):
    def make(self, request):
        storage = request.getfixturevalue("storage")
        return (
            storage.store,
            storage.directory,
            LocalDeliveryTarget(storage.store, storage.directory),
        )


class TestMemoryDelivery(DeliveryContract):
    def make(self, request):
        store, directory = MemoryStore(), MemoryDirectory()
        return store, directory, MemoryDeliveryTarget(store, directory)
