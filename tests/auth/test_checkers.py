"""The portal's checkers: account password (TOTP-aware), app password, bearer token, and the
chain a mail listener uses. Every checker answers a wrong secret and an unknown user alike."""

from __future__ import annotations

import pyotp
import pytest
import pytest_twisted
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.cred.portal import IRealm, Portal
from twisted.internet import reactor
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mailserver.auth import directory as directory_module
from mailserver.auth.checkers import (
    AppPasswordChecker,
    BearerToken,
    FirstOf,
    IBearerToken,
    MailLogin,
    PasswordChecker,
    SecondFactorRequired,
    TokenChecker,
    mail_checkers,
    with_context,
)
from mailserver.auth.credentials import TOTP_STEP, CredentialStore
from mailserver.auth.directory import LmdbDirectory
from tests.auth.conftest import T0

ALICE = "alice@example.org"
PASSWORD = "account password"


@pytest.fixture
def setup(storage, clock):
    """(directory, credential store) with example.org and alice (password PASSWORD)."""
    pytest_twisted.blockon(storage.directory.add_domain("example.org"))
    pytest_twisted.blockon(storage.directory.add_user(ALICE, PASSWORD))
    return storage.directory, CredentialStore(storage.db, clock, bytes(32))


def login(user: str, password: str, protocol: str = "smtp", ip: str = "192.0.2.1", otp=None):
    return MailLogin(user.encode(), password.encode(), protocol, ip, otp)


async def refusal(checker, credentials) -> UnauthorizedLogin:
    """The UnauthorizedLogin the checker fails with (the test fails if it succeeds)."""
    with pytest.raises(UnauthorizedLogin) as caught:
        await checker.requestAvatarId(credentials)
    return caught.value


async def enable_totp(creds, clock) -> str:
    enrolment = await creds.enable_totp(ALICE)
    code = pyotp.TOTP(enrolment.secret).at(int(clock.seconds()))
    assert await creds.confirm_totp(ALICE, code)
    return enrolment.secret


class CheckerContract:
    """What every checker guarantees. Subclasses give ``make(directory, creds)`` and
    ``good(directory, creds)`` (awaitable: credentials that must pass for alice), and
    ``wrong`` / ``unknown`` credentials built from a good one."""

    async def make_and_good(self, setup):
        directory, creds = setup
        return self.make(directory, creds), await self.good(directory, creds)

    def test_provides_interface(self, setup):
        assert verifyObject(ICredentialsChecker, self.make(*setup))

    @pytest_twisted.ensureDeferred
    async def test_right_credentials_give_canonical_address(self, setup):
        """Right credentials give the canonical address (the avatar id), whatever case the
        client typed."""
        checker, good = await self.make_and_good(setup)
        assert await checker.requestAvatarId(good) == ALICE
        assert await checker.requestAvatarId(self.recased(good)) == ALICE

    @pytest_twisted.ensureDeferred
    async def test_wrong_and_unknown_fail_alike(self, setup):
        """A wrong secret and an unknown user both fail with the same plain refusal (no
        SecondFactorRequired, same text): replies do not tell who exists."""
        checker, good = await self.make_and_good(setup)
        wrong = await refusal(checker, self.wrong(good))
        unknown = await refusal(checker, self.unknown(good))
        assert type(wrong) is type(unknown) is UnauthorizedLogin
        assert str(wrong) == str(unknown)


class PasswordLikeContract(CheckerContract):
    def recased(self, good):
        return with_context(
            UsernamePassword(good.username.upper(), good.password), good.protocol, good.ip
        )

    def wrong(self, good):
        return login(ALICE, "wrong" + good.password.decode())

    def unknown(self, good):
        return login("nobody@example.org", good.password.decode())


class TestPasswordChecker(PasswordLikeContract):
    def make(self, directory, creds):
        return PasswordChecker(directory, creds)

    async def good(self, directory, creds):
        return login(ALICE, PASSWORD)


class TestAppPasswordChecker(PasswordLikeContract):
    def make(self, directory, creds):
        return AppPasswordChecker(directory, creds, "smtp")

    async def good(self, directory, creds):
        _, password = await creds.add_app_password(ALICE, "phone", {"smtp"})
        return login(ALICE, password)


class TestMailChain(PasswordLikeContract):
    """The IUsernamePassword checker of mail_checkers: app password, then account password."""

    def make(self, directory, creds):
        return mail_checkers(directory, creds, "smtp")[0]

    async def good(self, directory, creds):
        return login(ALICE, PASSWORD)


class TestTokenChecker(CheckerContract):
    def make(self, directory, creds):
        return TokenChecker(directory, creds, "api")

    async def good(self, directory, creds):
        return BearerToken(await creds.issue_token(ALICE), "", "api", "192.0.2.1")

    def recased(self, good):
        return BearerToken(good.token, ALICE.upper(), good.protocol, good.ip)

    def wrong(self, good):
        return BearerToken(good.token[:-2] + "xx", "", "api")

    def unknown(self, good):
        return BearerToken("never-issued-token", "nobody@example.org", "api")


# -- account password and TOTP ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_totp_user_gets_second_factor_required_only_with_right_password(setup, clock):
    """With TOTP on, the right account password fails with SecondFactorRequired (the reply
    tells the user to use an app password); a wrong one fails like any other."""
    directory, creds = setup
    await enable_totp(creds, clock)
    checker = PasswordChecker(directory, creds)
    told = await refusal(checker, login(ALICE, PASSWORD))
    assert isinstance(told, SecondFactorRequired)
    assert "app password" in str(told)
    wrong = await refusal(checker, login(ALICE, "guess"))
    assert type(wrong) is UnauthorizedLogin


@pytest_twisted.ensureDeferred
async def test_password_with_a_code_passes_once(setup, clock):
    """A login that carries a TOTP code (the web login) passes; the same code again does not."""
    directory, creds = setup
    secret = await enable_totp(creds, clock)
    clock.advance(TOTP_STEP)
    code = pyotp.TOTP(secret).at(int(clock.seconds()))
    checker = PasswordChecker(directory, creds)
    assert await checker.requestAvatarId(login(ALICE, PASSWORD, "api", otp=code)) == ALICE
    again = await refusal(checker, login(ALICE, PASSWORD, "api", otp=code))
    assert isinstance(again, SecondFactorRequired)


@pytest_twisted.ensureDeferred
async def test_without_a_store_totp_is_not_looked_at(setup, clock):
    directory, creds = setup
    await enable_totp(creds, clock)
    assert await PasswordChecker(directory).requestAvatarId(login(ALICE, PASSWORD)) == ALICE


@pytest_twisted.ensureDeferred
async def test_undecodable_credentials_fail(setup):
    directory, creds = setup
    bad = UsernamePassword(b"\xff@example.org", b"\xfe")
    for checker in (
        PasswordChecker(directory, creds),
        AppPasswordChecker(directory, creds, "smtp"),
    ):
        assert type(await refusal(checker, bad)) is UnauthorizedLogin


# -- app passwords ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_imap_only_app_password_is_refused_for_smtp(setup):
    directory, creds = setup
    _, password = await creds.add_app_password(ALICE, "phone", {"imap"})
    imap = AppPasswordChecker(directory, creds, "imap")
    smtp = AppPasswordChecker(directory, creds, "smtp")
    assert await imap.requestAvatarId(login(ALICE, password)) == ALICE
    await refusal(smtp, login(ALICE, password, "imap"))  # the listener's protocol wins


@pytest_twisted.ensureDeferred
async def test_protocol_comes_from_credentials_when_checker_has_none(setup):
    directory, creds = setup
    _, password = await creds.add_app_password(ALICE, "phone", {"pop3"})
    checker = AppPasswordChecker(directory, creds)
    assert await checker.requestAvatarId(login(ALICE, password, "pop3")) == ALICE
    await refusal(checker, login(ALICE, password, "imap"))
    await refusal(checker, UsernamePassword(ALICE.encode(), password.encode()))


@pytest_twisted.ensureDeferred
async def test_app_password_expiry_and_last_use(setup, clock):
    """The checker records the client address; an expired app password is refused."""
    directory, creds = setup
    _, password = await creds.add_app_password(ALICE, "guest", expires=T0 + 60)
    checker = AppPasswordChecker(directory, creds, "smtp")
    assert await checker.requestAvatarId(login(ALICE, password, ip="203.0.113.5")) == ALICE
    [entry] = creds.list_app_passwords(ALICE)
    assert (entry.last_used, entry.last_ip) == (T0, "203.0.113.5")
    clock.advance(60)
    await refusal(checker, login(ALICE, password))


@pytest_twisted.ensureDeferred
async def test_app_password_of_a_deleted_user_is_refused(setup):
    directory, creds = setup
    _, password = await creds.add_app_password(ALICE, "phone")
    await directory.remove_user(ALICE)
    await refusal(AppPasswordChecker(directory, creds, "smtp"), login(ALICE, password))


@pytest_twisted.ensureDeferred
async def test_chain_lets_app_passwords_past_totp(setup, clock):
    """With TOTP on, the mail chain takes an app password and refuses the account password
    with SecondFactorRequired."""
    directory, creds = setup
    await enable_totp(creds, clock)
    _, password = await creds.add_app_password(ALICE, "phone")
    chain = mail_checkers(directory, creds, "smtp")[0]
    assert await chain.requestAvatarId(login(ALICE, password)) == ALICE
    assert isinstance(await refusal(chain, login(ALICE, PASSWORD)), SecondFactorRequired)
    assert type(await refusal(chain, login(ALICE, "nope"))) is UnauthorizedLogin


def test_first_of_needs_checkers_and_merges_interfaces(setup):
    directory, creds = setup
    with pytest.raises(ValueError):
        FirstOf()
    chain = FirstOf(PasswordChecker(directory), TokenChecker(directory, creds, "api"))
    assert chain.credentialInterfaces == (IUsernamePassword, IBearerToken)


@pytest_twisted.ensureDeferred
async def test_first_of_stops_at_an_error_that_is_not_a_refusal(setup):
    directory, _ = setup

    @implementer(ICredentialsChecker)
    class Broken:
        credentialInterfaces = (IUsernamePassword,)

        def requestAvatarId(self, credentials):
            raise RuntimeError("index gone")

    with pytest.raises(RuntimeError):
        await FirstOf(Broken(), PasswordChecker(directory)).requestAvatarId(login(ALICE, PASSWORD))


# -- tokens ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_token_scope_and_claimed_user(setup):
    """An API token does not open IMAP; a token claimed for another user is refused."""
    directory, creds = setup
    token = await creds.issue_token(ALICE, {"api", "smtp"})
    smtp = TokenChecker(directory, creds, "smtp")
    assert await smtp.requestAvatarId(BearerToken(token, ALICE)) == ALICE
    await refusal(TokenChecker(directory, creds, "imap"), BearerToken(token))
    await refusal(smtp, BearerToken(token, "bob@example.org"))
    await refusal(smtp, BearerToken(token, "not an address"))
    await refusal(TokenChecker(directory, creds), BearerToken(token))  # no protocol at all
    assert (
        await TokenChecker(directory, creds).requestAvatarId(BearerToken(token, "", "api")) == ALICE
    )


@pytest_twisted.ensureDeferred
async def test_token_expiry_and_deleted_owner(setup, clock):
    directory, creds = setup
    token = await creds.issue_token(ALICE, ttl=60)
    checker = TokenChecker(directory, creds, "api")
    clock.advance(60)
    await refusal(checker, BearerToken(token))
    fresh = await creds.issue_token(ALICE)
    await directory.remove_user(ALICE)
    await refusal(checker, BearerToken(fresh))


# -- the portal as the integrator builds it ---------------------------------------------------


@implementer(IRealm)
class EchoRealm:
    def requestAvatar(self, avatarId, mind, *interfaces):
        return interfaces[0], avatarId, lambda: None


@pytest_twisted.ensureDeferred
async def test_portal_recipe(setup, clock):
    """Portal(realm, mail_checkers(...)) takes app passwords, account passwords and bearer
    tokens, with the session's protocol and address added by with_context."""
    directory, creds = setup
    portal = Portal(EchoRealm(), mail_checkers(directory, creds, "imap"))
    _, password = await creds.add_app_password(ALICE, "phone", {"imap"})
    token = await creds.issue_token(ALICE, {"imap"})
    for credentials in (
        UsernamePassword(ALICE.encode(), password.encode()),
        UsernamePassword(ALICE.encode(), PASSWORD.encode()),
        BearerToken(token, ALICE),
    ):
        marked = with_context(credentials, "imap", "198.51.100.4")
        _, avatar, _ = await portal.login(marked, None, IUsernamePassword)
        assert avatar == ALICE
    assert creds.list_app_passwords(ALICE)[0].last_ip == "198.51.100.4"
    assert creds.list_tokens(ALICE)[0].last_ip == "198.51.100.4"
    with pytest.raises(UnhandledCredentials):
        await portal.login(object(), None, IUsernamePassword)


# -- timing: an unknown user costs a bcrypt too ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_unknown_user_runs_a_dummy_bcrypt(setup, monkeypatch):
    """Through the whole chain, an unknown user still verifies a password hash (a dummy one),
    exactly once, like a wrong password."""
    directory, creds = setup
    calls = []
    real = directory_module.verify_password

    def spy(password, stored, cost=12):
        calls.append(stored)
        return real(password, stored, cost)

    monkeypatch.setattr(directory_module, "verify_password", spy)
    chain = mail_checkers(directory, creds, "smtp")[0]
    await refusal(chain, login("nobody@example.org", "pw"))
    await refusal(chain, login(ALICE, "pw"))
    assert len(calls) == 2
    assert calls[0] is None and calls[1].startswith("$2")


@pytest_twisted.ensureDeferred
async def test_unknown_user_costs_one_bcrypt_of_the_same_cost(storage, clock, monkeypatch):
    """Refusing an unknown user does the same work as refusing a wrong password: one bcrypt
    check against a hash of the configured cost (counted, not timed: timing belongs in
    bench/, and the shared machines make it noisy)."""
    import bcrypt

    from mailserver.auth import passwords

    directory = LmdbDirectory(storage.db, reactor, bcrypt_cost=9)
    await directory.add_domain("example.org")
    await directory.add_user(ALICE, PASSWORD)
    creds = CredentialStore(storage.db, clock, bytes(32))
    chain = mail_checkers(directory, creds, "smtp")[0]
    costs: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        costs.append(hashed.split(b"$")[2])  # $2b$<cost>$...
        return real(password, hashed)

    monkeypatch.setattr(passwords.bcrypt, "checkpw", counting)
    await refusal(chain, login("nobody@example.org", "pw"))
    unknown = list(costs)
    costs.clear()
    await refusal(chain, login(ALICE, "pw"))
    assert unknown == costs == [b"09"]
