"""Local or remote: one delivery transaction that sends each recipient where it belongs.

Recipients in a domain served here go to the ``local`` target (the store, which may refuse
unknown users); all others go to the ``remote`` target (the spool). The message is handed
to each inner transaction that has recipients; ``commit`` commits the local part first,
then the spool, and only then fires, so the client's 250 covers both. (The two commits are
separate fsyncs: a crash between them delivers the local copies and the client, which got
no 250, sends again: the usual SMTP at-least-once.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from zope.interface import implementer

from mailserver.errors import MailError
from mailserver.interfaces import IDelivery, IDeliveryTarget, IUserDirectory
from mailserver.types import Address, Envelope

__all__ = ["Router"]


@implementer(IDeliveryTarget)
class Router:
    """Routes by recipient domain; ``queued`` is called after mail entered the spool."""

    def __init__(
        self,
        local: IDeliveryTarget,
        remote: IDeliveryTarget,
        directory: IUserDirectory,
        queued: Callable[[], None] = lambda: None,
    ) -> None:
        self.local = local
        self.remote = remote
        self.directory = directory
        self.queued = queued

    def start(self, envelope: Envelope) -> RoutedDelivery:
        return RoutedDelivery(self, envelope)


@implementer(IDelivery)
class RoutedDelivery:
    def __init__(self, router: Router, envelope: Envelope) -> None:
        self.router = router
        self.envelope = envelope
        self._local: IDelivery | None = None
        self._remote: IDelivery | None = None
        self._used: set[str] = set()  # "local"/"remote" once they accepted a recipient

    def is_local(self, address: Address) -> bool:
        return bool(self.router.directory.has_domain(address.domain))

    def add_recipient(
        self, address: Address, params: Mapping[str, str] | None = None
    ) -> Deferred[None]:
        if self.is_local(address):
            if self._local is None:
                self._local = self.router.local.start(self.envelope)
            kind, inner = "local", self._local
        else:
            if self._remote is None:
                self._remote = self.router.remote.start(self.envelope)
            kind, inner = "remote", self._remote
        adding = maybeDeferred(inner.add_recipient, address, params)
        return adding.addCallback(lambda _: self._used.add(kind))

    def _inner(self) -> list[IDelivery]:
        found = []
        if self._local is not None and "local" in self._used:
            found.append(self._local)
        if self._remote is not None and "remote" in self._used:
            found.append(self._remote)
        return found

    @inlineCallbacks
    def body(self, source: BinaryIO) -> Any:
        inner = self._inner()
        if not inner:
            raise MailError("no valid recipients", detail="body before any accepted recipient")
        for delivery in inner:
            source.seek(0)
            yield delivery.body(source)

    @inlineCallbacks
    def commit(self) -> Any:
        results = []
        for delivery in self._inner():
            results.append((yield delivery.commit()))
        if "remote" in self._used:
            self.router.queued()
        return results

    @inlineCallbacks
    def abort(self) -> Any:
        for delivery in (self._local, self._remote):
            if delivery is not None:
                yield maybeDeferred(delivery.abort)
