"""The realm's IMAP avatar: an authenticated login for IAccount gets that user's account."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.cred.checkers import ANONYMOUS, AllowAnonymousAccess
from twisted.cred.credentials import Anonymous, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from zope.interface.verify import verifyObject

from mailserver.auth.checkers import PasswordChecker
from mailserver.auth.realm import MailRealm
from mailserver.interfaces import IAccount, IDeliveryTarget
from mailserver.testing import MemoryDirectory, MemoryStore


@pytest.fixture
def parts():
    store, directory = MemoryStore(), MemoryDirectory(bcrypt_cost=4)
    pytest_twisted.blockon(directory.add_domain("example.org"))
    pytest_twisted.blockon(directory.add_user("alice@example.org", "pw"))
    pytest_twisted.blockon(store.create_account("alice@example.org"))
    return store, directory


@pytest_twisted.ensureDeferred
async def test_password_login_gets_the_account(parts):
    """A password login asking for IAccount yields the user's account from the hook."""
    store, directory = parts
    realm = MailRealm(lambda: None, imap_account=store.account)  # type: ignore[arg-type,return-value]
    portal = Portal(realm, [PasswordChecker(directory)])
    interface, account, logout = await portal.login(
        UsernamePassword(b"Alice@Example.org", b"pw"), None, IAccount
    )
    assert interface is IAccount
    assert verifyObject(IAccount, account)
    assert account.address == "alice@example.org"
    assert account.folder("INBOX").name == "INBOX"
    logout()
    with pytest.raises(UnauthorizedLogin):
        await portal.login(UsernamePassword(b"alice@example.org", b"no"), None, IAccount)


def test_no_account_without_the_hook_or_for_anonymous(parts):
    """Without ``imap_account``, or for an anonymous login, there is no IMAP avatar; the
    SMTP avatars are unchanged."""
    store, _directory = parts
    with pytest.raises(NotImplementedError):
        MailRealm(lambda: None).requestAvatar("alice@example.org", None, IAccount)  # type: ignore[arg-type,return-value]
    realm = MailRealm(lambda: "mx", imap_account=store.account)  # type: ignore[arg-type,return-value]
    with pytest.raises(NotImplementedError):
        realm.requestAvatar(ANONYMOUS, None, IAccount)
    assert realm.requestAvatar(ANONYMOUS, None, IDeliveryTarget)[1] == "mx"
    assert realm.requestAvatar(b"alice@example.org", None, IAccount)[1].address == (
        "alice@example.org"
    )


@pytest_twisted.ensureDeferred
async def test_anonymous_portal_login_gets_no_account(parts):
    """An anonymous portal login asking for IAccount is refused by the realm."""
    store, _directory = parts
    realm = MailRealm(lambda: None, imap_account=store.account)  # type: ignore[arg-type,return-value]
    portal = Portal(realm, [AllowAnonymousAccess()])
    with pytest.raises(NotImplementedError):
        await portal.login(Anonymous(), None, IAccount)
