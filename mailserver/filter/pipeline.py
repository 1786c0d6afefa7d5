"""The filter pipeline: runs the checks phase by phase and wraps a delivery target.

Design rules:

1. One :class:`FilterSession` per SMTP connection opens one session of every check
   (:class:`~mailserver.interfaces.ICheck`); the pipeline is the SMTP avatar and provides
   :class:`~mailserver.interfaces.ISessionFilter`, which is all the SMTP server knows.
2. Checks of one phase run concurrently, each bounded by ``policy.timeout``; a check that
   fails or times out counts as ACCEPT and is logged: a broken check never loses or refuses
   mail (a check that must fail closed returns TEMPFAIL itself, e.g. the virus scanner).
3. Early verdicts (connect, HELO, MAIL) are given at RCPT, as Postfix's
   ``smtpd_delay_reject`` does: a client refused at connect still learns why, per
   recipient, and clients that mishandle a refusal before RCPT are not confused. Only a
   TEMPFAIL at connect (rate limits) closes the connection at once with 421.
4. Recipient checks run before the wrapped delivery sees the recipient (IDelivery has no
   way to take a recipient back), so a refused recipient is never delivered.
5. At the end of DATA the message is read once, in a thread; the body checks run on it, the
   merged outcome (:mod:`mailserver.filter.outcome`) refuses it, files it into Junk, or lets
   it through with X-Spam-Status; the classifier's verdict goes to the store
   (:class:`~mailserver.interfaces.IClassified`) and to ``record`` (the
   ``spam_classifications`` log).
6. Checks that honour allow lists are not even asked once a trusted verdict is in. Trust
   from connect or MAIL (a server allow list, a trusted DNSWL) covers the whole message;
   trust from one recipient's own list covers that recipient's checks, and the message
   only when every recipient trusts the sender.
7. RFC 5321 §4.3.2 lists 550, not 554, among the refusals of RCPT, so a 554 verdict (a
   DNSBL or block-list hit in Postfix's wording) is given as 550 there; at the end of DATA
   554 stays (RFC 5321 §4.2.5, RFC 3463 5.7.1 for a virus).
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailserver.filter.outcome import (
    FilterPolicy,
    FilterRefused,
    Outcome,
    add_headers,
    counted,
    decide,
    refusal,
    status_headers,
)
from mailserver.filter.session import Pending
from mailserver.interfaces import (
    ICheck,
    ICheckSession,
    IClassified,
    IDelivery,
    IDeliveryTarget,
    IFilterSession,
    IFolderChoice,
    ISessionFilter,
)
from mailserver.observe.events import VERDICT
from mailserver.types import ACCEPT, Action, Address, Envelope, Peer, SpecialUse, Verdict
from mailserver.wrapping import WrappingDelivery

__all__ = ["FilteringTarget", "FilterSession", "FilteredDelivery"]

log = Logger(namespace="mailserver.filter")

#: Messages up to this size are kept in memory after the filter adds its headers.
SPOOL_IN_MEMORY = 1 << 20

#: ``record(entry)``: keeps one classification (a dict) in the spam_classifications log.
Recorder = Callable[[dict[str, Any]], Any]


@implementer(IDeliveryTarget, ISessionFilter)
class FilteringTarget:
    """The pipeline: ``checks`` in order in front of ``inner``."""

    def __init__(
        self,
        inner: IDeliveryTarget,
        checks: Sequence[ICheck],
        reactor: Any,
        policy: FilterPolicy | None = None,
        record: Recorder | None = None,
    ) -> None:
        self.inner = inner
        self.checks = tuple(checks)
        self.reactor = reactor
        self.policy = policy or FilterPolicy()
        self.record = record
        self.honours = {c.name: bool(c.honours_allow_list) for c in self.checks}

    def open(self, peer: Peer) -> FilterSession:
        return FilterSession(self, peer)

    def start(self, envelope: Envelope) -> FilteredDelivery:
        """A transaction without a connection phase (an embedder calling start directly)."""
        peer = Peer(
            envelope.client_address,
            envelope.helo,
            authenticated_as=envelope.authenticated_as,
        )
        return self.open(peer).start(envelope)


@implementer(IFilterSession)
class FilterSession:
    """One SMTP connection through the pipeline."""

    def __init__(self, owner: FilteringTarget, peer: Peer) -> None:
        self.owner = owner
        self.peer = peer
        self.sessions: list[tuple[ICheck, ICheckSession]] = [
            (check, check.session(peer)) for check in owner.checks
        ]
        self._connect: list[Deferred[Verdict]] = []
        self._helo: list[Deferred[Verdict]] = []

    def run(
        self, phase: str, *args: Any, trusted: bool = False
    ) -> list[Deferred[Verdict]]:
        """Start ``phase`` on every check session (rule 6: not on checks that honour allow
        lists once ``trusted``); each Deferred fires with a Verdict, never fails."""
        started = []
        for check, session in self.sessions:
            if trusted and check.honours_allow_list:
                continue
            started.append(self._ask(check, session, phase, args))
        return started

    def _ask(
        self, check: ICheck, session: ICheckSession, phase: str, args: tuple[Any, ...]
    ) -> Deferred[Verdict]:
        owner = self.owner
        d: Deferred[Verdict] = maybeDeferred(getattr(session, phase), *args)
        d.addTimeout(owner.policy.timeout, owner.reactor)

        def named(verdict: Verdict | None) -> Verdict:
            if verdict is None:
                return ACCEPT
            if not verdict.check:
                verdict = replace(verdict, check=check.name)
            return verdict

        def broken(failure: Failure) -> Verdict:
            log.failure(
                "filter check {check} failed in {phase} for {peer}; counted as accept",
                failure, check=check.name, phase=phase, peer=self.peer.address,
            )
            return ACCEPT

        return d.addCallbacks(named, broken)

    # -- IFilterSession ------------------------------------------------------------------

    def connect(self) -> Deferred[tuple[int, str, str] | None]:
        self._connect = self.run("connect")
        waiting: Deferred[list[Verdict]] = gatherResults(list(self._connect))

        def refused(verdicts: list[Verdict]) -> tuple[int, str, str] | None:
            kept, _trusted = counted(verdicts, self.owner.honours)
            for verdict in kept:
                if verdict.action is Action.TEMPFAIL:
                    log.info(
                        "{peer} refused at connect by {check}: {reason}",
                        peer=self.peer.address, check=verdict.check, reason=verdict.reason,
                    )
                    return (
                        421,
                        verdict.enhanced or "4.7.0",
                        verdict.text or "Too busy, try again later",
                    )
            return None

        return waiting.addCallback(refused)

    def helo(self, name: str) -> None:
        self.peer = replace(self.peer, helo=name)
        self._helo = self.run("helo", name)

    def authenticated(self, user: str) -> None:
        """The client authenticated: later phases see it (checks exempt such senders)."""
        self.peer = replace(self.peer, authenticated_as=user)

    def start(self, envelope: Envelope) -> FilteredDelivery:
        inner = self.owner.inner.start(envelope)
        return FilteredDelivery(self, envelope, inner)

    def early(self) -> list[Deferred[Verdict]]:
        return self._connect + self._helo


@implementer(IDelivery)
class FilteredDelivery(WrappingDelivery):
    """One message through the pipeline (rules 3-5)."""

    def __init__(self, session: FilterSession, envelope: Envelope, inner: IDelivery) -> None:
        self.session = session
        self.envelope = envelope
        self.inner = inner
        self.recipients: list[Address] = []
        #: The connect, HELO and MAIL verdicts, then each accepted recipient's own.
        self.verdicts: list[Verdict] = []
        self.per_recipient: list[list[Verdict]] = []
        self.outcome: Outcome | None = None
        sender = session.run("sender", envelope)
        # The connect, HELO and MAIL verdicts (they never fail: see ``_ask``).
        everything: Deferred[list[Verdict]] = gatherResults(session.early() + sender)
        self._early = Pending(everything.addCallback(self._keep))

    def _keep(self, verdicts: list[Verdict]) -> list[Verdict]:
        self.verdicts.extend(verdicts)
        return verdicts

    @property
    def trusted(self) -> bool:
        """Rule 6: trusted from connect/MAIL, or by every accepted recipient."""
        if any(v.trusted for v in self.verdicts):
            return True
        return bool(self.per_recipient) and all(
            any(v.trusted for v in verdicts) for verdicts in self.per_recipient
        )

    def message_verdicts(self) -> list[Verdict]:
        """What counts for the message: the early verdicts, and the recipients' own except
        a trust that not every recipient shares."""
        everyone = self.trusted
        out = list(self.verdicts)
        for verdicts in self.per_recipient:
            out.extend(v for v in verdicts if everyone or not v.trusted)
        return out

    def add_recipient(
        self, address: Address, params: Mapping[str, str] | None = None
    ) -> Deferred[None]:
        return Deferred.fromCoroutine(self._add_recipient(address, params))

    async def _add_recipient(self, address: Address, params: Mapping[str, str] | None) -> None:
        session = self.session
        honours = session.owner.honours
        early = await self._early.get()
        policy = FilterPolicy(quarantine_score=1e9)  # early points wait for the message
        outcome = decide(early, honours, policy)
        if outcome.refusal is not None:
            raise at_rcpt(refusal(outcome.refusal))
        message_trusted = any(v.trusted for v in early)
        asked = session.run("recipient", self.envelope, address, trusted=message_trusted)
        verdicts: list[Verdict] = await gatherResults(asked)
        outcome = decide(list(early) + verdicts, honours, policy)
        if outcome.refusal is not None:
            log.info(
                "{peer}: recipient {rcpt} refused by {check}: {reason}",
                peer=session.peer.address, rcpt=str(address),
                check=outcome.refusal.check, reason=outcome.refusal.reason,
            )
            raise at_rcpt(refusal(outcome.refusal))
        await self.inner.add_recipient(address, params)  # type: ignore[misc]
        self.recipients.append(address)
        kept, _trusted = counted(verdicts, honours)
        self.per_recipient.append([v for v in kept if v is not ACCEPT])

    def body(self, source: BinaryIO) -> Deferred[None]:
        return Deferred.fromCoroutine(self._body(source))

    async def _body(self, source: BinaryIO) -> None:
        session = self.session
        owner = session.owner
        reactor = owner.reactor
        message: bytes = await deferToThreadPool(reactor, reactor.getThreadPool(), source.read)
        recipients = tuple(self.recipients)
        asked = session.run("body", self.envelope, recipients, message, trusted=self.trusted)
        verdicts: list[Verdict] = await gatherResults(asked)
        outcome = decide(self.message_verdicts() + verdicts, owner.honours, owner.policy)
        self.outcome = outcome
        self._log(outcome, message)
        spam = outcome.spam
        if spam is not None:
            if IClassified.providedBy(self.inner):
                self.inner.classified(spam)
            self._record(outcome, message)
        if outcome.refusal is not None:
            raise refusal(outcome.refusal)
        if outcome.action is Action.QUARANTINE and IFolderChoice.providedBy(self.inner):
            self.inner.file_into(SpecialUse.JUNK)
        if owner.policy.add_headers:
            headers = status_headers(outcome, owner.policy)
            message = await deferToThreadPool(
                reactor, reactor.getThreadPool(), add_headers, message, headers
            )
        marked = _spooled(message)
        try:
            await self.inner.body(marked)  # type: ignore[misc]
        finally:
            marked.close()

    def _log(self, outcome: Outcome, message: bytes) -> None:
        rules = ",".join(f"{v.rule}({v.score:+.1f})" for v in outcome.verdicts if v.rule)
        log.info(
            "filter {peer} from=<{sender}> to={count} recipient(s): {action} "
            "score={score:.1f} rules={rules}",
            peer=self.session.peer.address,
            sender=str(self.envelope.sender or ""),
            count=len(self.recipients),
            action=outcome.action.name.lower(),
            score=outcome.score,
            rules=rules or "none",
            mail_event=VERDICT,  # joined to the SMTP mail log line (mailserver.observe.maillog)
            queue_id=self.envelope.queue_id,
            message_id=_message_id(message),  # the trace finds a refused message by it
        )

    def _record(self, outcome: Outcome, message: bytes) -> None:
        record = self.session.owner.record
        spam = outcome.spam
        if record is None or spam is None:
            return
        entry = {
            "source": "filter",
            "message_id": _message_id(message),
            "sender": str(self.envelope.sender or ""),
            "recipients": [str(r) for r in self.recipients],
            "client": self.session.peer.address,
            "score": outcome.score,
            "action": outcome.action.name.lower(),
            "is_spam": spam.is_spam,
            "classifier": spam.classifier,
            "probability": spam.score,
            "reasons": list(spam.reasons),
            "rules": [[v.rule, v.score] for v in outcome.verdicts if v.rule],
        }
        d = maybeDeferred(record, entry)
        d.addErrback(lambda f: log.failure("recording a spam classification failed", f))

    def commit(self) -> Deferred[Any]:
        result: Deferred[Any] = self.inner.commit()  # type: ignore[assignment]
        return result

    def abort(self) -> Deferred[None]:
        result: Deferred[None] = self.inner.abort()  # type: ignore[assignment]
        return result


def at_rcpt(error: FilterRefused) -> FilterRefused:
    """Rule 7: 554 is not a reply to RCPT; 550 says the same there."""
    if error.code == 554:
        error.code = 550
    return error


def _spooled(message: bytes) -> BinaryIO:
    if len(message) <= SPOOL_IN_MEMORY:
        return io.BytesIO(message)
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
    spool.write(message)
    spool.seek(0)
    return spool  # type: ignore[return-value]


def _message_id(message: bytes) -> str:
    """The Message-ID field's value, '' when absent (bounded scan of the header block)."""
    head = message[: message.find(b"\n\n") if b"\n\n" in message[:65536] else 65536]
    for line in head.replace(b"\r\n", b"\n").split(b"\n"):
        if line[:11].lower() == b"message-id:":
            return line[11:].strip().decode("utf-8", "replace")[:998]
    return ""


