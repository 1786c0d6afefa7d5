"""DMARC (RFC 7489): does an authenticated identifier align with the From domain, and what does
the From domain's owner ask us to do when none does?

Design rules:

1. Policy discovery (§6.6.3) looks up ``_dmarc.<From domain>``, then ``_dmarc.<organisational
   domain>``; the organisational domain comes from the Public Suffix List bundled with the
   ``publicsuffixlist`` package (§3.2), never downloaded at run time.
2. SPF and DKIM results come in as :class:`AuthResult` values; DMARC only checks alignment
   (§3.1, relaxed or strict per ``aspf``/``adkim``) and never repeats their DNS work.
3. The outcome carries both the DMARC result (for Authentication-Results) and the policy to
   apply to a failing message, after ``sp`` for subdomains and ``pct`` sampling (§6.6.4, the
   random source a parameter) — the caller decides what refusing or quarantining means.
4. A DNS failure is ``temperror``, and so is a failure whose aligned SPF or DKIM check had a
   temporary error (our trouble is no evidence against the sender); a record that is there
   but unusable is ``permerror``; no record is ``none``. None of them asks for any action.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from publicsuffixlist import PublicSuffixList
from twisted.internet.defer import Deferred

from mailserver.dns import DNSTemporaryError
from mailserver.msgauth.results import AuthResult

__all__ = ["DMARCEvaluator", "DMARCOutcome", "DMARCRecord", "organizational_domain", "parse_record"]

POLICIES = ("none", "quarantine", "reject")


@dataclass(frozen=True)
class DMARCRecord:
    """A parsed ``v=DMARC1`` record (§6.3), defaults filled in."""

    p: str
    sp: str | None = None
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()


@dataclass(frozen=True)
class DMARCOutcome:
    """The DMARC result and what to do: ``policy`` is ``"none"`` unless the message failed and
    the owner asked for ``quarantine`` or ``reject`` (after ``sp`` and ``pct``)."""

    result: AuthResult
    policy: str = "none"
    record: DMARCRecord | None = None
    policy_domain: str = ""

    @property
    def reject(self) -> bool:
        return self.policy == "reject"


class DMARCRecordError(ValueError):
    """The record cannot be used (§6.6.3 step 6)."""


def parse_record(text: str) -> DMARCRecord:
    """Parse a DMARC record (§6.3, §6.4 ABNF); DMARCRecordError if it cannot be used.

    Unknown tags are ignored; a bad ``sp``, ``adkim``, ``aspf`` or ``pct`` falls back to its
    default; a missing or bad ``p`` is ``none`` when there is a usable ``rua`` (§6.6.3 step 6).
    """
    tags: dict[str, str] = {}
    for index, part in enumerate(text.split(";")):
        part = part.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not eq:
            raise DMARCRecordError(f"tag without value: {part!r}")
        if index == 0 and (name != "v" or value != "DMARC1"):
            raise DMARCRecordError("record does not start with v=DMARC1")
        tags.setdefault(name, value)
    rua = _uris(tags.get("rua", ""))
    p = tags.get("p", "").lower()
    if p not in POLICIES:
        if not rua:
            raise DMARCRecordError(f"no valid p= tag ({tags.get('p')!r})")
        p = "none"
    sp = tags.get("sp", "").lower()
    pct = tags.get("pct", "100")
    return DMARCRecord(
        p=p,
        sp=sp if sp in POLICIES else None,
        adkim="s" if tags.get("adkim", "r").lower() == "s" else "r",
        aspf="s" if tags.get("aspf", "r").lower() == "s" else "r",
        pct=int(pct) if pct.isascii() and pct.isdigit() and int(pct) <= 100 else 100,
        rua=rua,
        ruf=_uris(tags.get("ruf", "")),
    )


def _uris(text: str) -> tuple[str, ...]:
    """§6.4 dmarc-uri list: comma-separated URIs with an optional !size suffix."""
    uris = []
    for item in text.split(","):
        uri = item.strip().split("!", 1)[0]
        scheme, colon, rest = uri.partition(":")
        if colon and rest and scheme.isalpha():
            uris.append(uri)
    return tuple(uris)


def organizational_domain(domain: str, psl: PublicSuffixList) -> str:
    """§3.2: the public suffix plus one label (the domain itself when it is a suffix)."""
    domain = domain.lower().rstrip(".")
    return psl.privatesuffix(domain) or domain


def aligned(a: str, b: str, mode: str, psl: PublicSuffixList) -> bool:
    """§3.1: strict is equality; relaxed is the same organisational domain."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if mode == "s":
        return a == b
    return organizational_domain(a, psl) == organizational_domain(b, psl)


class DMARCEvaluator:
    """RFC 7489 evaluation through ``resolver`` (a :class:`mailserver.dns.Resolver`).

    ``psl`` defaults to the list bundled with publicsuffixlist; ``random`` returns a float in
    [0, 1) for ``pct`` sampling.
    """

    def __init__(
        self,
        resolver: Any,
        *,
        psl: PublicSuffixList | None = None,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.resolver = resolver
        self.psl = psl if psl is not None else PublicSuffixList()
        self.random = random

    def evaluate(
        self, header_from_domain: str, spf: AuthResult | None, dkim: Sequence[AuthResult]
    ) -> Deferred[DMARCOutcome]:
        """The DMARC outcome for a message whose From domain is ``header_from_domain``."""
        return Deferred.fromCoroutine(self._evaluate(header_from_domain, spf, dkim))

    async def _discover(self, domain: str) -> tuple[DMARCRecord | None, str, str]:
        """§6.6.3: (record, the domain it was found at, why not) — at the From domain first,
        then at the organisational domain."""
        org = organizational_domain(domain, self.psl)
        candidates = [domain] if org == domain else [domain, org]
        for candidate in candidates:
            answer = await self.resolver.lookup(f"_dmarc.{candidate}", "TXT")
            texts = [t for t in answer.values if t.strip().startswith("v=DMARC1")]
            if not texts:
                continue
            if len(texts) > 1:
                return None, candidate, f"{len(texts)} DMARC records at _dmarc.{candidate}"
            try:
                return parse_record(texts[0]), candidate, ""
            except DMARCRecordError as error:
                return None, candidate, f"_dmarc.{candidate}: {error}"
        return None, "", f"no DMARC record for {domain}"

    async def _evaluate(
        self, domain: str, spf: AuthResult | None, dkim: Sequence[AuthResult]
    ) -> DMARCOutcome:
        domain = domain.lower().rstrip(".")
        props = (("header.from", domain),)
        if not _plausible(domain):
            return DMARCOutcome(AuthResult("dmarc", "none", props, reason="no usable From domain"))
        try:
            record, found_at, why = await self._discover(domain)
        except DNSTemporaryError as error:
            return DMARCOutcome(AuthResult("dmarc", "temperror", props, reason=str(error)))
        if record is None:
            result = "permerror" if found_at else "none"
            return DMARCOutcome(
                AuthResult("dmarc", result, props, reason=why), "none", None, found_at
            )
        spf_ok = self._spf_aligned(domain, spf, record)
        dkim_ok = any(
            r.method == "dkim"
            and r.result == "pass"
            and aligned(r.get("header.d") or "", domain, record.adkim, self.psl)
            for r in dkim
        )
        requested = record.p
        if found_at != domain and record.sp is not None:
            requested = record.sp  # §6.3 sp: the policy for subdomains of the org domain
        if spf_ok or dkim_ok:
            return DMARCOutcome(AuthResult("dmarc", "pass", props), "none", record, found_at)
        if self._transient(domain, spf, dkim, record):
            # Our own look-up trouble is no evidence against the sender: no policy applies.
            reason = "an aligned SPF or DKIM check had a temporary error"
            return DMARCOutcome(
                AuthResult("dmarc", "temperror", props, reason=reason), "none", record, found_at
            )
        policy = requested
        if policy != "none" and record.pct < 100 and self.random() * 100 >= record.pct:
            # §6.6.4: outside the sampled percentage the next weaker policy applies.
            policy = "quarantine" if policy == "reject" else "none"
        return DMARCOutcome(
            AuthResult("dmarc", "fail", props, reason=f"p={requested} dis={policy}"),
            policy,
            record,
            found_at,
        )

    def _transient(
        self, domain: str, spf: AuthResult | None, dkim: Sequence[AuthResult], record: DMARCRecord
    ) -> bool:
        """A temperror from SPF or DKIM whose identifier is unknown or would have aligned."""

        def could_align(identifier: str | None, mode: str) -> bool:
            return not identifier or aligned(identifier, domain, mode, self.psl)

        if spf is not None and spf.result == "temperror":
            identity = spf.get("smtp.mailfrom") or spf.get("smtp.helo")
            if could_align(identity.rpartition("@")[2] if identity else None, record.aspf):
                return True
        return any(
            r.method == "dkim"
            and r.result == "temperror"
            and could_align(r.get("header.d"), record.adkim)
            for r in dkim
        )

    def _spf_aligned(self, domain: str, spf: AuthResult | None, record: DMARCRecord) -> bool:
        if spf is None or spf.result != "pass":
            return False
        identity = spf.get("smtp.mailfrom") or spf.get("smtp.helo") or ""
        identity = identity.rpartition("@")[2]
        return bool(identity) and aligned(identity, domain, record.aspf, self.psl)


def _plausible(domain: str) -> bool:
    labels = domain.split(".")
    return bool(domain) and all(0 < len(label) <= 63 for label in labels) and len(domain) <= 253
