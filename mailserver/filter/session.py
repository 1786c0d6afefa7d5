"""What the checks' sessions share.

- :class:`Abstaining`, the base of every check's session, answers ACCEPT in every phase.
  Most checks act in one or two SMTP phases (clamd only on the message, greylisting only at
  RCPT); a session class overrides those phases and inherits "nothing to say" for the rest,
  so what a check does is what its session class spells out.
- :class:`Pending`: one result (a DNS look-up started at connect, the early verdicts of a
  transaction) that several later phases wait on; each waiter gets its own Deferred, so no
  caller can change the result another one sees.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from mailserver.interfaces import ICheckSession
from mailserver.types import ACCEPT, Envelope, Verdict

__all__ = ["Abstaining", "Pending"]

T = TypeVar("T")


@implementer(ICheckSession)
class Abstaining:
    """An ICheckSession with no opinion in any phase."""

    def connect(self) -> Any:
        return ACCEPT

    def helo(self, name: str) -> Any:
        return ACCEPT

    def sender(self, envelope: Envelope) -> Any:
        return ACCEPT

    def recipient(self, envelope: Envelope, address: Any) -> Any:
        return ACCEPT

    def body(self, envelope: Envelope, recipients: Any, message: bytes) -> Verdict | Any:
        return ACCEPT


class Pending(Generic[T]):
    """The result ``d`` will give, for any number of waiters (``d`` must not fail)."""

    def __init__(self, d: Deferred[T]) -> None:
        self.done = False
        self.result: T | None = None
        self._waiting: list[Deferred[T]] = []
        d.addCallback(self._fire)

    def _fire(self, result: T) -> None:
        self.done, self.result = True, result
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(result)

    def get(self) -> Deferred[T]:
        """A new Deferred firing with the result (at once when it is in)."""
        if self.done:
            return succeed(self.result)  # type: ignore[arg-type]
        d: Deferred[T] = Deferred()
        self._waiting.append(d)
        return d
