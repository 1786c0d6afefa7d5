"""Inbound message authentication: SPF, DKIM, ARC and DMARC on mail arriving on port 25.

Design rules:

1. A delivery-target wrapper, like every filter (DESIGN decision 4): recipients, commit and
   abort pass straight through; the work happens once per message, in ``body``.
2. The message is read once, in a worker thread; SPF (the MAIL FROM identity, and the HELO
   identity on its own), DKIM and ARC run concurrently, then DMARC for each From domain.
   Each check has a deadline (RFC 7208 §4.6.4 suggests at least 20 seconds for SPF) and any
   failure of a check becomes its ``temperror``: authentication can refuse a message only
   through a DMARC policy.
3. Every ``Authentication-Results`` field claiming our authserv-id is removed (RFC 8601 §5)
   and exactly one of ours is added at the top (just below our own Received field), so what
   a user reads under our name is ours.
4. DMARC ``p=reject`` failures are refused at the end of DATA with ``550 5.7.1``
   (RFC 7489 §6.6.4 / §7.3) or, when configured, filed into Junk like ``p=quarantine``
   failures; filing needs a wrapped delivery providing :class:`IFolderChoice`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from mailserver.errors import MailError
from mailserver.interfaces import IDelivery, IDeliveryTarget, IFolderChoice
from mailserver.message.envelope import MISSING_DOMAIN, parse_address_list
from mailserver.message.headers import get_headers, parse_headers, split_message
from mailserver.msgauth.dmarc import DMARCOutcome
from mailserver.msgauth.results import (
    AuthResult,
    authentication_results,
    strip_authentication_results,
)
from mailserver.types import Address, Envelope, SpecialUse
from mailserver.wrapping import WrappingDelivery

__all__ = [
    "Assessment",
    "AuthenticatingTarget",
    "DMARCRejected",
    "InboundPolicy",
    "from_domains",
    "insert_results",
]

log = Logger()

DMARC_ACTIONS = ("refuse", "quarantine")
#: From domains evaluated per message: each costs DNS look-ups, and a message may list many.
MAX_FROM_DOMAINS = 5
_STRICTNESS = {"none": 0, "quarantine": 1, "reject": 2}


class DMARCRejected(MailError):
    """The From domain's DMARC policy says reject and the message failed DMARC."""

    code = 550
    enhanced = "5.7.1"
    text = "Message rejected: it fails the sender domain's DMARC policy"


@dataclass(frozen=True)
class InboundPolicy:
    """``authserv_id`` names us in Authentication-Results (our host name); ``dmarc_reject``
    is ``"refuse"`` or ``"quarantine"``; ``timeout`` is each check's deadline in seconds."""

    authserv_id: str
    dmarc_reject: str = "refuse"
    timeout: float = 20.0

    def __post_init__(self) -> None:
        if self.dmarc_reject not in DMARC_ACTIONS:
            raise ValueError(f"dmarc_reject must be one of {DMARC_ACTIONS}")


@dataclass(frozen=True)
class Assessment:
    """What the checks found: every result in header order, the DMARC outcome that decides
    (the strictest over all From domains), the new header field and the action."""

    results: tuple[AuthResult, ...]
    dmarc: DMARCOutcome | None
    header: bytes
    action: str  # "deliver", "quarantine" or "refuse"


def from_domains(header_block: bytes) -> list[str]:
    """The distinct domains of the From field(s) (RFC 7489 §6.6.1), lower-cased, in order."""
    domains: list[str] = []
    for value in get_headers(parse_headers(header_block), "From"):
        for entry in parse_address_list(value):
            local, domain = entry[2], entry[3]
            if local is None or not domain or domain == MISSING_DOMAIN:
                continue
            domain = domain.lower().rstrip(".")
            if domain not in domains:
                domains.append(domain)
    return domains


def insert_results(header_block: bytes, field: bytes) -> bytes:
    """Put ``field`` at the top of ``header_block``, below the Received field our SMTP server
    added when there is one, so the hop's trace fields stay together (RFC 8601 §4, RFC 5322
    §3.6.7: trace fields are prepended)."""
    if not header_block[:9].lower() == b"received:":
        return field + header_block
    lines = header_block.splitlines(keepends=True)
    end = 1
    while end < len(lines) and lines[end][:1] in (b" ", b"\t"):
        end += 1
    return b"".join(lines[:end]) + field + b"".join(lines[end:])


@implementer(IDeliveryTarget)
class AuthenticatingTarget:
    """Wraps ``target``: authenticates each message and records the results in it.

    ``spf`` has ``check(ip, sender, helo)``, ``dkim`` ``verify(message)`` (a list of results),
    ``arc`` (optional) ``verify(message)`` (one result), ``dmarc``
    ``evaluate(domain, spf, dkim)``; each returns a Deferred.
    """

    def __init__(
        self,
        target: IDeliveryTarget,
        policy: InboundPolicy,
        *,
        spf: Any,
        dkim: Any,
        dmarc: Any,
        arc: Any = None,
        reactor: Any,
        threadpool: Any = None,
    ) -> None:
        self.target = target
        self.policy = policy
        self.spf = spf
        self.dkim = dkim
        self.arc = arc
        self.dmarc = dmarc
        self.reactor = reactor
        self.threadpool = threadpool

    def start(self, envelope: Envelope) -> AuthenticatingDelivery:
        return AuthenticatingDelivery(self, self.target.start(envelope))

    def assess(self, message: bytes, envelope: Envelope) -> Deferred[Assessment]:
        """Run every check on ``message`` (as received) and decide what to do with it."""
        return Deferred.fromCoroutine(self._assess(message, envelope))

    def _guard(
        self, method: str, check: Callable[..., Any], *args: Any, many: bool = False
    ) -> Deferred[Any]:
        """Run one check with a deadline; its failure (even a synchronous exception) becomes
        a ``temperror`` result."""
        d = maybeDeferred(check, *args)
        d.addTimeout(self.policy.timeout, self.reactor)

        def failed(failure: Any) -> Any:
            log.warn("{method} check failed: {error}", method=method, error=failure.value)
            result = AuthResult(method, "temperror", reason="check failed or timed out")
            return [result] if many else result

        return d.addErrback(failed)

    async def _assess(self, message: bytes, envelope: Envelope) -> Assessment:
        head, _ = split_message(message)
        sender = str(envelope.sender) if envelope.sender is not None else None
        ip, helo = envelope.client_address, envelope.helo
        checks = [
            self._guard("spf", self.spf.check, ip, sender, helo),
            self._guard("dkim", self.dkim.verify, message, many=True),
        ]
        if self.arc is not None:
            checks.append(self._guard("arc", self.arc.verify, message))
        # RFC 7208 §2.3: the HELO identity is checked on its own too (for <> it is the
        # MAIL FROM identity already); an address literal or a bare name has no SPF.
        check_helo = sender is not None and "." in helo and not helo.startswith("[")
        if check_helo:
            checks.append(self._guard("spf", self.spf.check, ip, None, helo))
        done = await gatherResults(checks, consumeErrors=True)
        spf: AuthResult = done[0]
        dkim: list[AuthResult] = list(done[1])
        arc: list[AuthResult] = [done[2]] if self.arc is not None else []
        helo_spf: list[AuthResult] = [done[-1]] if check_helo else []
        outcomes: list[DMARCOutcome] = []
        domains = from_domains(head)
        if len(domains) > MAX_FROM_DOMAINS:
            reason = f"{len(domains)} From domains; the first {MAX_FROM_DOMAINS} evaluated"
            outcomes.append(DMARCOutcome(AuthResult("dmarc", "permerror", reason=reason)))
        for domain in domains[:MAX_FROM_DOMAINS]:
            outcome = await self._guard("dmarc", self.dmarc.evaluate, domain, spf, dkim)
            if isinstance(outcome, AuthResult):  # the check itself failed
                outcome = DMARCOutcome(outcome)
            outcomes.append(outcome)
        if not domains:
            outcomes.append(DMARCOutcome(AuthResult("dmarc", "none", reason="no From domain")))
        decisive = max(outcomes, key=lambda o: _STRICTNESS.get(o.policy, 0))
        results = (spf, *helo_spf, *dkim, *arc, *(o.result for o in outcomes))
        action = "deliver"
        if decisive.policy == "quarantine":
            action = "quarantine"
        elif decisive.policy == "reject":
            action = "refuse" if self.policy.dmarc_reject == "refuse" else "quarantine"
        header = authentication_results(self.policy.authserv_id, results)
        return Assessment(results, decisive, header, action)


@implementer(IDelivery)
class AuthenticatingDelivery(WrappingDelivery):
    """One transaction through :class:`AuthenticatingTarget`."""

    def __init__(self, owner: AuthenticatingTarget, inner: IDelivery) -> None:
        self.owner = owner
        self.inner = inner
        self.envelope: Envelope = inner.envelope  # type: ignore[attr-defined]
        self.assessment: Assessment | None = None

    def add_recipient(
        self, address: Address, params: Mapping[str, str] | None = None
    ) -> Deferred[None]:
        result: Deferred[None] = self.inner.add_recipient(address, params)  # type: ignore[assignment]
        return result

    def body(self, source: BinaryIO) -> Deferred[None]:
        return Deferred.fromCoroutine(self._body(source))

    async def _body(self, source: BinaryIO) -> None:
        owner = self.owner
        pool = owner.threadpool or owner.reactor.getThreadPool()
        message: bytes = await deferToThreadPool(owner.reactor, pool, source.read)
        assessment = await owner.assess(message, self.envelope)
        self.assessment = assessment
        log.info(
            "authentication from {client}: {results} -> {action}",
            client=self.envelope.client_address,
            results=summary(assessment.results),
            action=assessment.action,
        )
        if assessment.action == "refuse":
            domain = assessment.dmarc.result.get("header.from") if assessment.dmarc else ""
            raise DMARCRejected(detail=f"DMARC p=reject for {domain}")
        if assessment.action == "quarantine" and IFolderChoice.providedBy(self.inner):
            self.inner.file_into(SpecialUse.JUNK)  # type: ignore[attr-defined]
        head, rest = split_message(message)
        head = strip_authentication_results(head, owner.policy.authserv_id)
        marked = insert_results(head, assessment.header)
        await self.inner.body(io.BytesIO(marked + rest))  # type: ignore[misc]

    def commit(self) -> Deferred[Any]:
        result: Deferred[Any] = self.inner.commit()  # type: ignore[assignment]
        return result

    def abort(self) -> Deferred[None]:
        result: Deferred[None] = self.inner.abort()  # type: ignore[assignment]
        return result


def summary(results: Sequence[AuthResult]) -> str:
    """``spf=pass dkim=pass dmarc=pass`` for the mail log."""
    return " ".join(f"{r.method}={r.result}" for r in results)
