"""The SMTP transaction as an interface (DESIGN decision 4).

Local store, outbound spool and the filter pipeline all provide :class:`IDeliveryTarget`,
and pipelines nest: a target may wrap another target.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, BinaryIO

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from collections.abc import Mapping

    from twisted.internet.defer import Deferred

    from mailserver.types import Address, Envelope, SpamVerdict, SpecialUse


class IDeliveryTarget(Interface):
    """Something that accepts messages: the final store, the spool, or a filter in front."""

    def start(envelope: Envelope) -> IDelivery:
        """Begin one transaction for ``envelope`` (a :class:`mailserver.types.Envelope`).

        Must not block and must not commit anything: nothing is visible until
        :meth:`IDelivery.commit` succeeds.
        """


class IDelivery(Interface):
    """One message transaction: recipients, then the body, then commit or abort.

    A provider guarantees all-or-nothing: after ``commit`` fires its callback the message is
    durable (fsynced) for every accepted recipient; after ``abort``, or a failed commit, no
    recipient sees it. Errors are :class:`mailserver.errors.MailError` instances carrying the
    reply to give the peer.
    """

    envelope = Attribute("The Envelope given to start().")

    def add_recipient(address: Address, params: Mapping[str, str] | None = None) -> Deferred[None]:
        """Accept or refuse one recipient (a :class:`mailserver.types.Address`).

        ``params`` maps validated RCPT parameters (RFC 3461 ``NOTIFY``, ``ORCPT``) to their
        values; a provider that forwards or bounces keeps them with the recipient.

        Returns a Deferred firing with ``None`` when accepted, or failing with a MailError
        (e.g. NoSuchUser) when refused. A refused recipient does not spoil the transaction.
        """

    def body(source: BinaryIO) -> Deferred[None]:
        """Take the message (header and body bytes, CRLF or LF line ends) from ``source``,
        a seekable binary file positioned at its start.

        Returns a Deferred. The provider may read ``source`` in a worker thread and must be
        done with it when the Deferred fires. Fails with MailError if there is no accepted
        recipient or the message is refused (e.g. QuotaExceeded).
        """

    def commit() -> Deferred[Any]:
        """Make the message durable for every accepted recipient.

        Returns a Deferred that fires only after the bytes and their index entries are on
        stable storage. The transaction is finished either way.
        """

    def abort() -> Deferred[None]:
        """Drop the transaction and every temporary file it made. Idempotent; returns a
        Deferred."""


class IFolderChoice(Interface):
    """A delivery that can file the message somewhere other than each recipient's INBOX
    (a filter quarantining a message uses it; the final store provides it)."""

    def file_into(special_use: SpecialUse) -> None:
        """Deliver to each recipient's folder with this special use (a
        :class:`mailserver.types.SpecialUse`, e.g. ``SpecialUse.JUNK``) instead of INBOX;
        a recipient without such a folder gets it in INBOX. Call before ``body``."""


class IClassified(Interface):
    """A delivery that keeps the filter's spam verdict with the stored message (the final
    store provides it; IMAP and the API show it, and the trainers read it)."""

    def classified(verdict: SpamVerdict) -> None:
        """Store ``verdict`` (a :class:`mailserver.types.SpamVerdict`) with the message for
        every recipient. Call before ``body``."""
