"""Credential checkers for the portal: account passwords (bcrypt, in the thread pool).

Issue 5 adds app passwords, TOTP and tokens here; the contract stays the same: a checker
returns the canonical address as the avatar id, or fails with UnauthorizedLogin without
saying whether the user exists.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from zope.interface import implementer

from mailserver.interfaces import IUserDirectory

__all__ = ["PasswordChecker"]


@implementer(ICredentialsChecker)
class PasswordChecker:
    """User name and password against the directory's bcrypt hashes."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, directory: IUserDirectory) -> None:
        self.directory = directory

    def requestAvatarId(self, credentials: Any) -> Deferred[str]:
        try:
            username = credentials.username.decode("utf-8")
            password = credentials.password.decode("utf-8")
        except UnicodeDecodeError:
            username, password = "", ""
        checking: Deferred[bool] = self.directory.check_password(username, password)

        def checked(ok: bool) -> str:
            user = self.directory.get_user(username) if ok else None
            if user is None:
                raise UnauthorizedLogin("authentication failed")
            return str(user.address)

        return checking.addCallback(checked)
