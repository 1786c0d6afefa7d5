"""The realm: what each kind of login may do (DESIGN decision 3: the avatar is the authority).

Port 25 logs in anonymously and gets :class:`MXTarget`, a delivery target that accepts only
recipients in domains served here that resolve to local accounts, so relaying is impossible
by construction: there is no code path from an anonymous session to a remote recipient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.cred.checkers import ANONYMOUS
from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred, fail
from zope.interface import implementer

from mailserver.errors import RelayDenied
from mailserver.interfaces import IAccount, IDelivery, IDeliveryTarget, IUserDirectory
from mailserver.types import Address, Envelope
from mailserver.wrapping import WrappingDelivery


@implementer(IDeliveryTarget)
class MXTarget:
    """The anonymous (port 25) avatar: local recipients only, everything else is refused with
    ``550 5.7.1`` before the wrapped target sees it."""

    def __init__(self, target: IDeliveryTarget, directory: IUserDirectory, postmaster: str):
        self.target = target
        self.directory = directory
        self.postmaster = postmaster

    def start(self, envelope: Envelope) -> MXDelivery:
        return MXDelivery(self, self.target.start(envelope))


@implementer(IDelivery)
class MXDelivery(WrappingDelivery):
    def __init__(self, owner: MXTarget, inner: IDelivery) -> None:
        self.owner = owner
        self.inner = inner
        self.envelope = inner.envelope

    def add_recipient(
        self, address: Address, params: Mapping[str, str] | None = None
    ) -> Deferred[None]:
        if not address.domain and address.local.lower() == "postmaster":
            # RFC 5321 §4.1.1.3: <Postmaster> without a domain must be accepted.
            local, _, domain = self.owner.postmaster.rpartition("@")
            address = Address(local, domain)
        if not self.owner.directory.has_domain(address.domain):
            return fail(RelayDenied(detail=str(address)))
        result: Deferred[None] = self.inner.add_recipient(address, params)
        return result

    def body(self, source: Any) -> Deferred[None]:
        result: Deferred[None] = self.inner.body(source)
        return result

    def commit(self) -> Deferred[Any]:
        result: Deferred[Any] = self.inner.commit()
        return result

    def abort(self) -> Deferred[None]:
        result: Deferred[None] = self.inner.abort()
        return result


@implementer(IRealm)
class MailRealm:
    """Hands out avatars: the MX target for anonymous SMTP logins, the submission target of
    an authenticated user, and the user's mail account (:class:`IAccount`) for IMAP and POP3
    when ``imap_account`` is given (POP3 serves the account's INBOX; each listener has its own
    realm, so one hook serves both).

    ``imap_account(address)`` is called with the checker's avatar id (the canonical address)
    and returns that user's account, e.g. ``store.account``; anonymous logins never get one.
    """

    def __init__(
        self,
        mx_target: Callable[[], IDeliveryTarget] | None,
        submission_target: Callable[[str], IDeliveryTarget] | None = None,
        imap_account: Callable[[str], IAccount] | None = None,
    ) -> None:
        self._mx_target = mx_target
        self._submission_target = submission_target
        self._imap_account = imap_account

    def requestAvatar(
        self, avatarId: Any, mind: Any, *interfaces: Any
    ) -> tuple[Any, Any, Callable[[], None]]:
        if IDeliveryTarget in interfaces:
            if avatarId is ANONYMOUS and self._mx_target is not None:
                return IDeliveryTarget, self._mx_target(), lambda: None
            if self._submission_target is not None and isinstance(avatarId, str):
                return IDeliveryTarget, self._submission_target(avatarId), lambda: None
        if IAccount in interfaces and self._imap_account is not None:
            user = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else avatarId
            if isinstance(user, str):  # ANONYMOUS is not a str: no account for it
                return IAccount, self._imap_account(user), lambda: None
        raise NotImplementedError("no avatar for this login and interface")
