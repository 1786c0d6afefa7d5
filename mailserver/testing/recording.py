"""RecordingTarget: a delivery target that keeps what it is given instead of sending it (import
it from :mod:`mailserver.testing`; this module's path is private).

:class:`mailserver.testing.MailSystem` puts one where the outbound spool would be, so mail
that a test's users send to other domains is captured, not delivered; an embedder can put one
behind any SMTP factory to see exactly what the server accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from mailserver.errors import MailError
from mailserver.interfaces import IDelivery, IDeliveryTarget
from mailserver.types import Address, Envelope

__all__ = ["CapturedMessage", "DeliveryTimeout", "RecordingDelivery", "RecordingTarget"]


class DeliveryTimeout(Exception):
    """What a test waited for did not happen in time; the text says what was seen instead."""


@dataclass(frozen=True)
class CapturedMessage:
    """One committed transaction: the envelope, the accepted recipients (in RCPT order, with
    their RCPT parameters) and the message bytes exactly as the target was given them."""

    envelope: Envelope
    recipients: tuple[Address, ...]
    data: bytes
    params: tuple[Mapping[str, str], ...] = field(default=(), compare=False)

    @property
    def sender(self) -> str:
        """The reverse-path as text ("" for the null sender ``<>``)."""
        return "" if self.envelope.sender is None else str(self.envelope.sender)

    @property
    def to(self) -> list[str]:
        """The recipients as text."""
        return [str(address) for address in self.recipients]


@implementer(IDeliveryTarget)
class RecordingTarget:
    """Accepts every recipient (or those ``accept`` approves: the others are refused with
    ``refusal``) and appends a :class:`CapturedMessage` to :attr:`messages` at each commit.
    While :attr:`commit_error` is set, every commit fails with it and records nothing (a
    relay that is down: ``MailError`` with a 4xx code, or refusing: 5xx).

    Guarantees: nothing is recorded before ``commit``; an aborted transaction leaves no trace;
    the waiters of :meth:`wait_for` fire in the order the messages were committed.
    """

    def __init__(
        self,
        accept: Callable[[Address], bool] | None = None,
        refusal: Callable[[Address], MailError] | None = None,
    ) -> None:
        self.accept = accept
        self.refusal = refusal
        #: When set, commits fail with this error (and record nothing).
        self.commit_error: MailError | None = None
        #: Every committed message, oldest first.
        self.messages: list[CapturedMessage] = []
        self._waiters: list[tuple[int, Deferred[list[CapturedMessage]]]] = []

    def start(self, envelope: Envelope) -> RecordingDelivery:
        return RecordingDelivery(self, envelope)

    def wait_for(
        self, count: int = 1, timeout: float = 10.0, reactor: IReactorTime | None = None
    ) -> Deferred[list[CapturedMessage]]:
        """A Deferred firing with :attr:`messages` once at least ``count`` were committed (at
        once if they already were), or failing with :class:`DeliveryTimeout` after
        ``timeout`` seconds of ``reactor`` time."""
        if len(self.messages) >= count:
            return succeed(list(self.messages))
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor  # type: ignore[assignment]
        assert reactor is not None
        waiting: Deferred[list[CapturedMessage]] = Deferred()
        entry = (count, waiting)
        self._waiters.append(entry)

        def expire() -> None:
            if entry in self._waiters:
                self._waiters.remove(entry)
                waiting.errback(
                    DeliveryTimeout(
                        f"{len(self.messages)} outbound message(s) captured after {timeout}s,"
                        f" expected {count}"
                    )
                )

        timer = reactor.callLater(timeout, expire)
        waiting.addBoth(_cancel_timer(timer))
        return waiting

    def _record(self, message: CapturedMessage) -> None:
        self.messages.append(message)
        ready = [w for w in self._waiters if len(self.messages) >= w[0]]
        for entry in ready:
            self._waiters.remove(entry)
            entry[1].callback(list(self.messages))


def _cancel_timer(timer: Any) -> Callable[[Any], Any]:
    def cancel(result: Any) -> Any:
        if timer.active():
            timer.cancel()
        return result

    return cancel


@implementer(IDelivery)
class RecordingDelivery:
    """One transaction of a :class:`RecordingTarget`."""

    def __init__(self, target: RecordingTarget, envelope: Envelope) -> None:
        self.target = target
        self.envelope = envelope
        self._recipients: list[Address] = []
        self._params: list[Mapping[str, str]] = []
        self._data: bytes | None = None
        self._done = False

    def add_recipient(
        self, address: Address, params: Mapping[str, str] | None = None
    ) -> Deferred[None]:
        accept = self.target.accept
        if accept is not None and not accept(address):
            refusal = self.target.refusal
            error = refusal(address) if refusal is not None else MailError(
                "Recipient refused", detail=str(address)
            )
            return fail(error)
        self._recipients.append(address)
        self._params.append(dict(params or {}))
        return succeed(None)

    def body(self, source: BinaryIO) -> Deferred[None]:
        if not self._recipients:
            return fail(MailError("no valid recipients"))
        self._data = source.read()
        return succeed(None)

    def commit(self) -> Deferred[None]:
        if self._done or self._data is None:
            return fail(MailError("no message to commit"))
        self._done = True
        if self.target.commit_error is not None:
            self._data = None
            return fail(self.target.commit_error)
        captured = CapturedMessage(
            self.envelope, tuple(self._recipients), self._data, tuple(self._params)
        )
        self.target._record(captured)
        return succeed(None)

    def abort(self) -> Deferred[None]:
        self._done = True
        self._data = None
        return succeed(None)
