"""RewritingDelivery: a delivery that hands each step on to an inner delivery, except that the
message body is first rewritten, on a thread, into a new file (submission's header checks and
fixes, DKIM signing).

Design rules:
- The rewrite blocks (it reads the whole source), so it runs on the reactor's thread pool;
  the rewritten file is closed once the inner delivery has taken the body, whatever happens.
- Recipients, commit and abort pass through unchanged; a subclass only says how to rewrite.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from mailserver.interfaces import IDelivery
from mailserver.types import Address, Envelope
from mailserver.wrapping import WrappingDelivery

__all__ = ["RewritingDelivery"]


@implementer(IDelivery)
class RewritingDelivery(WrappingDelivery):
    """One transaction through a rewriting target ``owner`` (which has a ``reactor``)."""

    def __init__(self, owner: Any, envelope: Envelope, inner: IDelivery) -> None:
        self.owner = owner
        self.envelope = envelope
        self.inner = inner

    def add_recipient(
        self, address: Address, params: Mapping[str, str] | None = None
    ) -> Deferred[None]:
        return maybeDeferred(self.inner.add_recipient, address, params)

    @inlineCallbacks
    def body(self, source: BinaryIO) -> Any:
        reactor = self.owner.reactor
        rewritten = yield deferToThreadPool(reactor, reactor.getThreadPool(), self.rewrite, source)
        try:
            yield self.inner.body(rewritten)
        finally:
            rewritten.close()

    def rewrite(self, source: BinaryIO) -> BinaryIO:
        """Blocking: the message of ``source`` as it goes on, in a new seekable file."""
        raise NotImplementedError

    def commit(self) -> Deferred[Any]:
        return maybeDeferred(self.inner.commit)

    def abort(self) -> Deferred[None]:
        return maybeDeferred(self.inner.abort)
