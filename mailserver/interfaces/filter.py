"""The filter's contracts: checks that see each SMTP phase, and the user's spam judgements.

A check (:class:`ICheck`) opens one :class:`ICheckSession` per SMTP connection and answers
each phase with a :class:`~mailserver.types.Verdict` (or a Deferred of one): connect, HELO,
MAIL (``sender``), each RCPT (``recipient``) and the message (``body``). The pipeline
(``mailserver.filter.pipeline``) runs the checks in order, merges their verdicts and wraps an
:class:`~mailserver.interfaces.IDeliveryTarget`; it provides :class:`ISessionFilter`, which is
all the SMTP server knows of filtering.

:class:`IJunkFeedback` is how a user's spam judgement reaches the filter: moving (or copying)
a message into the Junk folder says "this is spam", moving it out of Junk into anything but
Trash says "this is not". IMAP (and later the web API) call it; the spam classifiers learn
from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from collections.abc import Iterable

    from twisted.internet.defer import Deferred

    from mailserver.interfaces.delivery import IDelivery
    from mailserver.interfaces.store import IAccount
    from mailserver.types import Address, Envelope, Peer, Verdict

__all__ = ["ICheck", "ICheckSession", "IFilterSession", "IJunkFeedback", "ISessionFilter"]


class ICheck(Interface):
    """One filter check (DNSBL, greylisting, rate limits, lists, spam, viruses, ...)."""

    name = Attribute("Short lower-case name, used in logs and in the X-Spam-Status header.")
    honours_allow_list = Attribute(
        "True when an allow-listed (trusted) sender skips this check; a virus scan says False."
    )

    def session(peer: Peer) -> ICheckSession:
        """A new session for one SMTP connection from ``peer`` (a
        :class:`mailserver.types.Peer`). Must not block."""


class ICheckSession(Interface):
    """One check's view of one SMTP connection. Each method returns a Verdict or a Deferred
    firing with one; a failure counts as ACCEPT and is logged (a broken check never loses
    mail; a check that must fail closed returns TEMPFAIL itself)."""

    def connect() -> Verdict | Deferred[Verdict]:
        """The client connected. TEMPFAIL here closes the connection with 421; REJECT is
        remembered and given to every RCPT (like Postfix's ``smtpd_delay_reject``)."""

    def helo(name: str) -> Verdict | Deferred[Verdict]:
        """The client said HELO/EHLO ``name``. REJECT/TEMPFAIL are given to every RCPT."""

    def sender(envelope: Envelope) -> Verdict | Deferred[Verdict]:
        """MAIL FROM (a :class:`mailserver.types.Envelope`). Verdicts are given at RCPT."""

    def recipient(envelope: Envelope, address: Address) -> Verdict | Deferred[Verdict]:
        """RCPT TO ``address`` (a :class:`mailserver.types.Address`). REJECT or TEMPFAIL
        refuses this recipient only."""

    def body(
        envelope: Envelope, recipients: tuple[Address, ...], message: bytes
    ) -> Verdict | Deferred[Verdict]:
        """The whole message (header and body, as received) for the accepted
        ``recipients`` (a tuple of Address). A check that does CPU
        work here runs it on the thread pool itself (this is called on the reactor)."""


class IFilterSession(Interface):
    """What the SMTP server holds for one connection when its avatar filters mail."""

    def connect() -> Deferred[tuple[int, str, str] | None]:
        """Deferred firing with None, or with a (code, enhanced, text) tuple: the client
        is refused now (421) and the connection closes."""

    def helo(name: str) -> None:
        """The client greeted as ``name``; checks run in the background."""

    def start(envelope: Envelope) -> IDelivery:
        """As :meth:`IDeliveryTarget.start`: an IDelivery whose recipients and body go
        through the checks first."""


class ISessionFilter(Interface):
    """A delivery target (an SMTP avatar) that filters: it opens a session per connection."""

    def open(peer: Peer) -> IFilterSession:
        """A filter session for one SMTP connection from ``peer`` (a Peer)."""


class IJunkFeedback(Interface):
    """Receives the user's spam judgements."""

    def judged(
        account: IAccount, folder: str, uids: Iterable[int], is_spam: bool
    ) -> Deferred[None]:
        """The user put the messages ``uids`` (UIDs in ``folder`` of ``account``, an
        IAccount, where they are now) into Junk (``is_spam``) or took them out of it.
        Deferred; the caller logs a failure and never shows it to the client."""
