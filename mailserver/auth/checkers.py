"""Credential checkers for the portal: account passwords, app passwords and bearer tokens.

Every checker returns the canonical address as the avatar id, or fails with
UnauthorizedLogin without saying whether the user exists: an unknown user costs the same
bcrypt as a wrong password (a dummy hash), and both get the same generic failure.

**Two-factor accounts.** When a user has TOTP on (:mod:`mailserver.auth.credentials`), mail
protocols cannot ask for a code, so the account password alone is refused there with
:class:`SecondFactorRequired`, whose text tells the user to log in with an app password.
That failure is raised only *after* the password checked, so it tells nothing to someone
who does not know the password (the accepted practice: the second factor is revealed only
to a holder of the first). A login that carries a code (:attr:`MailLogin.otp`, the web login)
passes with a valid TOTP or recovery code. Protocols map it as: SMTP ``535 5.7.8 <text>``,
IMAP ``NO [AUTHENTICATIONFAILED] <text>``, POP3 ``-ERR [AUTH] <text>``.

**Portal recipe** (one portal per listener, ``protocol`` naming the listener)::

    key = load_or_create_secret(secret_path(config.server.data_path))   # at start-up
    credentials = CredentialStore(db, reactor, key, issuer=config.server.hostname)
    portal = Portal(realm, mail_checkers(directory, credentials, "smtp"))  # or imap, pop3, api

``mail_checkers`` gives ``[FirstOf(AppPasswordChecker, PasswordChecker), TokenChecker]``: a
password is tried as an app password first (one HMAC per stored app password), then as the
account password (bcrypt); a bearer token (OAUTHBEARER, or ``Authorization: Bearer`` for the
API) goes to the token checker. Protocols mark credentials with where they came from,
``with_context(credentials, "smtp", peer_ip)`` from :mod:`mailserver.smtp.sasl`, before
``portal.login``, so the client address is recorded as the last use. An API that accepts
only tokens uses ``Portal(realm, [TokenChecker(directory, credentials, "api")])``.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.python.failure import Failure
from zope.interface import implementer

from mailserver.auth.credentials import CredentialStore
from mailserver.auth.directory import canonical_address
from mailserver.errors import InvalidName
from mailserver.interfaces import IUserDirectory
from mailserver.smtp.sasl import BearerToken, IBearerToken, MailLogin, with_context

#: BearerToken, IBearerToken, MailLogin and with_context are re-exported from
#: mailserver.smtp.sasl, so callers need only this module.
__all__ = [
    "AppPasswordChecker",
    "BearerToken",
    "FirstOf",
    "IBearerToken",
    "MailLogin",
    "PasswordChecker",
    "SecondFactorRequired",
    "TokenChecker",
    "mail_checkers",
    "with_context",
]

#: The failure text of every refused login.
FAILED = "authentication failed"


class SecondFactorRequired(UnauthorizedLogin):
    """The account password was right, but the account uses two-factor authentication and
    the login carried no valid code: the user must log in with an app password (mail) or
    add a code (web). ``str()`` is the text to show the user (``tell_user``; protocols
    cannot import this module, so they look for the attribute)."""

    tell_user = True

    def __init__(
        self,
        message: str = "this account uses two-factor authentication: log in with an app password",
    ) -> None:
        super().__init__(message)


def _decode(credentials: Any) -> tuple[str, str]:
    """(user name, password) as text; ("", "") when either is not UTF-8."""
    try:
        return credentials.username.decode("utf-8"), credentials.password.decode("utf-8")
    except (UnicodeDecodeError, AttributeError):
        return "", ""


def _protocol(configured: str | None, credentials: Any) -> str:
    """The listener's protocol when the checker was given one, else the credentials'."""
    return configured or str(getattr(credentials, "protocol", "") or "")


@implementer(ICredentialsChecker)
class PasswordChecker:
    """User name and account password against the directory's bcrypt hashes.

    With a ``credentials`` store it is TOTP-aware: for a user with TOTP on, a right password
    still fails, with :class:`SecondFactorRequired`, unless the credentials carry a valid
    code (``otp``). Without a store, TOTP is not looked at (tests, tools).
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(
        self, directory: IUserDirectory, credentials: CredentialStore | None = None
    ) -> None:
        self.directory = directory
        self.credentials = credentials

    @inlineCallbacks
    def requestAvatarId(self, credentials: Any) -> Any:
        username, password = _decode(credentials)
        ok = yield self.directory.check_password(username, password)
        user = self.directory.get_user(username) if ok else None
        if user is None:
            raise UnauthorizedLogin(FAILED)
        address = str(user.address)
        if self.credentials is not None and self.credentials.totp_enabled(address):
            code = getattr(credentials, "otp", None)
            if not code:
                raise SecondFactorRequired()
            passed = yield self.credentials.verify_second_factor(address, code)
            if not passed:
                raise SecondFactorRequired("the two-factor code is wrong or was used already")
        return address


class _SecondCredentialChecker:
    """What the app-password and token checkers share: the directory their users must be in,
    the credential store, and the protocol a login is for (None: the credentials say)."""

    def __init__(
        self,
        directory: IUserDirectory,
        credentials: CredentialStore,
        protocol: str | None = None,
    ) -> None:
        self.directory = directory
        self.credentials = credentials
        self.protocol = protocol


@implementer(ICredentialsChecker)
class AppPasswordChecker(_SecondCredentialChecker):
    """User name and app password: the password must be one of the user's app passwords,
    unexpired, with the login's protocol in its scopes (``protocol`` given here wins over the
    one the credentials carry; with neither, no app password passes). The client's ``ip``
    (from :class:`MailLogin`) is recorded as the last use. Fails fast (no bcrypt): put it
    before :class:`PasswordChecker` in a :class:`FirstOf`, which then pays the bcrypt."""

    credentialInterfaces = (IUsernamePassword,)

    @inlineCallbacks
    def requestAvatarId(self, credentials: Any) -> Any:
        username, password = _decode(credentials)
        user = self.directory.get_user(username) if username else None
        protocol = _protocol(self.protocol, credentials)
        # Compared even for an unknown user (no stored hashes: nothing matches).
        address = str(user.address) if user is not None else username
        ip = str(getattr(credentials, "ip", "") or "")
        ok = yield self.credentials.check_app_password(address, password, protocol, ip)
        if not ok or user is None:
            raise UnauthorizedLogin(FAILED)
        return address


@implementer(ICredentialsChecker)
class TokenChecker(_SecondCredentialChecker):
    """A bearer token (:class:`IBearerToken`): known, unexpired, with the protocol in its
    scopes; and when the client named a user (the GS2 authzid), the token's owner must be
    that user. The owner must still exist in the directory."""

    credentialInterfaces = (IBearerToken,)

    @inlineCallbacks
    def requestAvatarId(self, credentials: Any) -> Any:
        protocol = _protocol(self.protocol, credentials)
        if not protocol:
            raise UnauthorizedLogin(FAILED)
        ip = str(getattr(credentials, "ip", "") or "")
        owner = yield self.credentials.check_token(str(credentials.token), protocol, ip)
        if owner is None or self.directory.get_user(owner) is None:
            raise UnauthorizedLogin(FAILED)
        hint = str(getattr(credentials, "user_hint", "") or "")
        if hint:
            try:
                claimed = canonical_address(hint)
            except InvalidName:
                raise UnauthorizedLogin(FAILED) from None
            if claimed != owner:
                raise UnauthorizedLogin(FAILED)
        return str(owner)


@implementer(ICredentialsChecker)
class FirstOf:
    """Try ``checkers`` in order (a Portal keeps only one checker per credentials
    interface): the first avatar id wins; when all refuse, the *last* refusal is reported
    (so :class:`SecondFactorRequired` from a final PasswordChecker reaches the protocol).
    An error that is not UnauthorizedLogin stops the chain at once."""

    def __init__(self, *checkers: Any) -> None:
        if not checkers:
            raise ValueError("FirstOf needs at least one checker")
        self.checkers = checkers
        interfaces: list[Any] = []
        for checker in checkers:
            for interface in checker.credentialInterfaces:
                if interface not in interfaces:
                    interfaces.append(interface)
        self.credentialInterfaces = tuple(interfaces)

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        usable = [
            c
            for c in self.checkers
            if any(i.providedBy(credentials) for i in c.credentialInterfaces)
        ]
        if not usable:
            return fail(UnauthorizedLogin(FAILED))
        return self._try(usable, credentials)

    @inlineCallbacks
    def _try(self, checkers: list[Any], credentials: Any) -> Any:
        refusal: Failure | None = None
        for checker in checkers:
            try:
                avatar_id = yield checker.requestAvatarId(credentials)
            except UnauthorizedLogin:
                refusal = Failure()
            else:
                return avatar_id
        assert refusal is not None
        refusal.raiseException()


def mail_checkers(
    directory: IUserDirectory, credentials: CredentialStore, protocol: str
) -> list[ICredentialsChecker]:
    """The checkers of one listener's portal: app password, then account password (TOTP
    aware), for IUsernamePassword; the token checker for IBearerToken."""
    passwords = FirstOf(
        AppPasswordChecker(directory, credentials, protocol),
        PasswordChecker(directory, credentials),
    )
    return [passwords, TokenChecker(directory, credentials, protocol)]
