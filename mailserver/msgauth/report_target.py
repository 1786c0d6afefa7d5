"""Record the DMARC aggregate reports delivered to our report address.

Design rules:

1. A delivery-target wrapper (DESIGN decision 4) on the port-25 path: recipients, body and
   abort pass straight through; a message with a recipient whose local part is the report
   address (``[msgauth] report_address``, e.g. ``dmarc-reports@example.org``, the ``rua`` of
   ``mailserver dns``) is kept in memory until its commit.
2. Only after the commit succeeded is the report parsed (in a worker thread) and recorded in
   the index. Any failure there is logged and never changes the delivery: the message is in
   the mailbox either way, and ``mailserver dmarc import`` can pick it up again. The commit
   (and so the 250) waits for the recording, so a report is queryable once it is accepted;
   the parser's limits bound that wait (a report at the 20 MB XML cap, 45,000 records,
   parses in about 6.5 s on one core).
3. A report is recorded only for a domain served here (or a subdomain of one): anyone can
   send mail to the report address, but nobody can fill the index with other domains'
   reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from mailserver.interfaces import IDelivery, IDeliveryTarget
from mailserver.msgauth.report_store import ReportStore
from mailserver.msgauth.reports import NoReport, ReportError, find_report
from mailserver.types import Address, Envelope
from mailserver.wrapping import WrappingDelivery

__all__ = ["ReportRecordingTarget", "served_domain"]

log = Logger()


def served_domain(domain: str, has_domain: Callable[[str], bool]) -> bool:
    """Whether ``domain`` or one of its parents is served here (``has_domain``)."""
    labels = domain.lower().rstrip(".").split(".")
    return any(has_domain(".".join(labels[i:])) for i in range(len(labels) - 1))


@implementer(IDeliveryTarget)
class ReportRecordingTarget:
    """Wraps ``target``; records reports sent to ``local_part@`` any domain in ``reports``.
    ``has_domain(name)`` tells the domains served here."""

    def __init__(
        self,
        target: IDeliveryTarget,
        reports: ReportStore,
        local_part: str,
        has_domain: Callable[[str], bool],
        *,
        reactor: Any,
        threadpool: Any = None,
    ) -> None:
        self.target = target
        self.reports = reports
        self.local_part = local_part.lower()
        self.has_domain = has_domain
        self.reactor = reactor
        self.threadpool = threadpool

    def start(self, envelope: Envelope) -> ReportRecordingDelivery:
        return ReportRecordingDelivery(self, self.target.start(envelope))

    def record(self, message: bytes) -> Deferred[None]:
        """Parse ``message`` in a worker thread and record its report; never fails."""
        return Deferred.fromCoroutine(self._record(message))

    async def _record(self, message: bytes) -> None:
        pool = self.threadpool or self.reactor.getThreadPool()
        try:
            report = await deferToThreadPool(self.reactor, pool, find_report, message)
        except NoReport:
            log.info("DMARC report address: a message without a report")
            return
        except ReportError as error:
            log.warn("DMARC report not recorded: {reason}", reason=error.reason)
            return
        except Exception as error:  # design rule 2: never the delivery's problem
            log.failure("DMARC report parsing failed", error)
            return
        meta, domain = report.metadata, report.policy.domain
        if not served_domain(domain, self.has_domain):
            log.warn("DMARC report from {org} for {domain}: not a domain served here",
                     org=meta.org_name, domain=domain)
            return
        try:
            new = await self.reports.record(report, received=time.time(), via="smtp")
        except Exception as error:
            log.warn("DMARC report from {org} not recorded: {error}",
                     org=meta.org_name, error=error)
            return
        log.info(
            "DMARC report {state} from {org} for {domain}: {messages} message(s) in "
            "{records} record(s), id {id}",
            state="recorded" if new else "already recorded",
            org=meta.org_name, domain=domain, messages=report.messages,
            records=len(report.records), id=meta.report_id,
        )


@implementer(IDelivery)
class ReportRecordingDelivery(WrappingDelivery):
    """One transaction through :class:`ReportRecordingTarget`."""

    def __init__(self, owner: ReportRecordingTarget, inner: IDelivery) -> None:
        self.owner = owner
        self.inner = inner
        self.envelope: Envelope = inner.envelope  # type: ignore[attr-defined]
        self.for_reports = False
        self.message: bytes | None = None

    def add_recipient(
        self, address: Address, params: Mapping[str, str] | None = None
    ) -> Deferred[None]:
        result: Deferred[None] = self.inner.add_recipient(address, params)  # type: ignore[assignment]

        def accepted(value: None) -> None:
            if address.local.lower() == self.owner.local_part:
                self.for_reports = True
            return value

        return result.addCallback(accepted)

    def body(self, source: BinaryIO) -> Deferred[None]:
        """A message for the report address is read (in a worker thread) before the inner
        body; any other message goes straight to the inner delivery (no extra layer)."""
        if not self.for_reports:
            result: Deferred[None] = self.inner.body(source)  # type: ignore[assignment]
            return result
        return Deferred.fromCoroutine(self._body(source))

    async def _body(self, source: BinaryIO) -> None:
        owner = self.owner
        pool = owner.threadpool or owner.reactor.getThreadPool()

        def read() -> bytes:
            data = source.read()
            source.seek(0)
            return data

        self.message = await deferToThreadPool(owner.reactor, pool, read)
        await self.inner.body(source)  # type: ignore[misc]

    def commit(self) -> Deferred[Any]:
        """The inner commit; for a message kept for the report address, then its recording
        (which never fails), before the result is passed on."""
        if self.message is None:
            result: Deferred[Any] = self.inner.commit()  # type: ignore[assignment]
            return result
        return Deferred.fromCoroutine(self._commit())

    async def _commit(self) -> Any:
        result = await self.inner.commit()  # type: ignore[misc]
        message, self.message = self.message, None
        if message is not None:
            await self.owner.record(message)  # design rule 2: never fails
        return result

    def abort(self) -> Deferred[None]:
        self.message = None
        result: Deferred[None] = self.inner.abort()  # type: ignore[assignment]
        return result
