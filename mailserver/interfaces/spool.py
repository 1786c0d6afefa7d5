"""The outbound spool as an interface (DESIGN: ISpool).

A spool is also an :class:`~mailserver.interfaces.delivery.IDeliveryTarget` (submission puts
remote recipients into it with the ordinary delivery transaction); this interface is what
the scheduler, the couriers and the ``mailserver queue`` command use afterwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Interface

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import BinaryIO

    from twisted.internet.defer import Deferred

    from mailserver.types import QueuedRecipient, QueueEntry


class ISpool(Interface):
    """Durable queue of outbound messages with per-recipient state."""

    def get(queue_id: str) -> QueueEntry | None:
        """The :class:`mailserver.types.QueueEntry` for ``queue_id``, or None."""

    def entries(after: str = "", limit: int = 100) -> list[QueueEntry]:
        """Up to ``limit`` entries with ids greater than ``after``, in id order (paging)."""

    def due(now: float, limit: int = 100) -> list[str]:
        """Ids of up to ``limit`` entries not held whose next attempt is at or before ``now``,
        earliest first."""

    def next_due() -> float | None:
        """The earliest next-attempt time of any entry not held, or None when empty."""

    def open_message(queue_id: str) -> BinaryIO:
        """A binary file with the message bytes (the caller closes it)."""

    def update(
        queue_id: str, recipients: Mapping[str, QueuedRecipient], next_attempt: float
    ) -> Deferred[QueueEntry | None]:
        """Record delivery results: ``recipients`` maps addresses to QueuedRecipient values
        that replace the stored ones; ``next_attempt`` is the new schedule. When no
        recipient is left pending the entry and its message are removed. Deferred, durable
        when it fires."""

    def set_held(queue_id: str, held: bool) -> Deferred[QueueEntry | None]:
        """Hold (never due) or release an entry; Deferred."""

    def reschedule(queue_id: str, when: float) -> Deferred[QueueEntry | None]:
        """Make an entry due at ``when`` (``queue retry``/``flush``); Deferred."""

    def remove(queue_id: str) -> Deferred[None]:
        """Delete an entry and its message (``queue delete``); Deferred."""
