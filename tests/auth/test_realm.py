"""The realm: anonymous SMTP logins get an avatar that cannot relay."""

from __future__ import annotations

import io

import pytest
import pytest_twisted
from twisted.cred.checkers import ANONYMOUS, AllowAnonymousAccess
from twisted.cred.credentials import Anonymous, UsernamePassword
from twisted.cred.error import UnhandledCredentials
from twisted.cred.portal import Portal
from zope.interface.verify import verifyObject

from mailserver.auth.realm import MailRealm, MXTarget
from mailserver.errors import NoSuchUser, RelayDenied
from mailserver.interfaces import IDelivery, IDeliveryTarget
from mailserver.testing import MemoryDeliveryTarget, MemoryDirectory, MemoryStore
from mailserver.types import Address, Envelope


@pytest.fixture
def parts():
    store, directory = MemoryStore(), MemoryDirectory()
    pytest_twisted.blockon(directory.add_domain("example.org"))
    pytest_twisted.blockon(directory.add_user("alice@example.org", "pw"))
    pytest_twisted.blockon(store.create_account("alice@example.org"))
    target = MXTarget(MemoryDeliveryTarget(store, directory), directory, "alice@example.org")
    return store, directory, target


@pytest_twisted.ensureDeferred
async def test_anonymous_login_gets_the_mx_target(parts):
    """An anonymous portal login for IDeliveryTarget yields the MX avatar."""
    _store, _directory, target = parts
    portal = Portal(MailRealm(lambda: target), [AllowAnonymousAccess()])
    interface, avatar, logout = await portal.login(Anonymous(), None, IDeliveryTarget)
    assert interface is IDeliveryTarget and avatar is target
    assert verifyObject(IDeliveryTarget, avatar)
    assert verifyObject(IDelivery, avatar.start(Envelope(sender=None)))
    logout()


@pytest_twisted.ensureDeferred
async def test_other_logins_get_nothing_yet(parts):
    """Credentials with no checker are refused by the portal."""
    portal = Portal(MailRealm(lambda: parts[2]), [AllowAnonymousAccess()])
    with pytest.raises(UnhandledCredentials):
        await portal.login(UsernamePassword(b"a", b"b"), None, IDeliveryTarget)
    with pytest.raises(NotImplementedError):
        MailRealm(lambda: parts[2]).requestAvatar("alice", None, IDeliveryTarget)
    assert MailRealm(lambda: parts[2]).requestAvatar(ANONYMOUS, None, IDeliveryTarget)


@pytest_twisted.ensureDeferred
async def test_mx_target_refuses_foreign_domains(parts):
    """Foreign domains are relay attempts (5.7.1); unknown local users are 5.1.1."""
    store, _directory, target = parts
    delivery = target.start(Envelope(sender=Address("x", "example.net")))
    with pytest.raises(RelayDenied):
        await delivery.add_recipient(Address("someone", "example.net"))
    with pytest.raises(NoSuchUser):
        await delivery.add_recipient(Address("nobody", "example.org"))
    await delivery.add_recipient(Address("postmaster", ""))
    await delivery.body(io.BytesIO(b"Subject: x\r\n\r\nx\r\n"))
    await delivery.commit()
    assert store.account("alice@example.org").folder("INBOX").info().exists == 1
