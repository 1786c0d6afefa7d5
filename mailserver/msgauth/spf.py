"""SPF (RFC 7208): is the client IP allowed to send for the MAIL FROM (or HELO) domain?

Design rules:

1. Our own evaluator on :class:`mailserver.dns.Resolver`, so every query is cached and off the
   reactor thread; :meth:`SPFChecker.check_host` is the RFC's ``check_host()`` function (§4).
2. A record is parsed whole (:mod:`mailserver.msgauth.spf_record`) before anything is
   evaluated: any syntax error anywhere is ``permerror`` (§4.6), macros (§7) included.
3. Limits from §4.6.4 are part of the evaluation state shared by includes and redirects: ten
   DNS-querying terms, two void look-ups, ten MX or PTR names per mechanism.
4. DNS failures are ``temperror`` except where the RFC says a mechanism just does not match
   (``ptr``, §5.5); the explanation (``exp=``, §6.2) never changes the result.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred

from mailserver.dns import DNSTemporaryError, Records
from mailserver.message.address import domain_to_ascii
from mailserver.msgauth.results import AuthResult
from mailserver.msgauth.spf_record import (
    IP,
    Macro,
    MacroString,
    Record,
    SPFError,
    Term,
    expand_macros,
    parse_macro_string,
    parse_record,
    truncate,
    valid_domain,
)

__all__ = [
    "SPFChecker",
    "SPFError",
    "SPFVerdict",
    "expand_macros",
    "parse_macro_string",
    "parse_record",
]

#: §4.6.4 limits.
MAX_DNS_TERMS = 10
MAX_VOID_LOOKUPS = 2
MAX_NAMES = 10


class _TempError(Exception):
    """A DNS failure that makes the whole evaluation ``temperror``."""


@dataclass(frozen=True)
class SPFVerdict:
    """The result of ``check_host()``: an RFC 7208 §2.6 result and, for ``fail``, the
    explanation; ``detail`` says why, for the log and the Authentication-Results reason."""

    result: str
    explanation: str = ""
    detail: str = ""


# -- evaluation ------------------------------------------------------------------------------


@dataclass
class _State:
    """One top-level check_host(): the client, the identity and the shared §4.6.4 counters."""

    ip: IP
    sender: str
    helo: str
    terms: int = 0
    voids: int = 0
    validated: dict[str, str] = field(default_factory=dict)

    def count_term(self) -> None:
        self.terms += 1
        if self.terms > MAX_DNS_TERMS:
            raise SPFError(f"more than {MAX_DNS_TERMS} DNS-querying terms (RFC 7208 §4.6.4)")

    def count_void(self, records: Records) -> None:
        if not records.values:
            self.voids += 1
            if self.voids > MAX_VOID_LOOKUPS:
                raise SPFError(f"more than {MAX_VOID_LOOKUPS} void lookups (RFC 7208 §4.6.4)")


class SPFChecker:
    """RFC 7208 checks through ``resolver`` (a :class:`mailserver.dns.Resolver`).

    ``receiver`` is our host name, for the %{r} macro in explanations; ``clock`` gives
    %{t} (an ``IReactorTime``; the wall clock by default).
    """

    def __init__(self, resolver: Any, *, receiver: str = "unknown", clock: Any = None) -> None:
        self.resolver = resolver
        self.receiver = receiver
        self._now: Callable[[], float] = clock.seconds if clock is not None else time.time

    def check(self, ip: str, sender: str | None, helo: str) -> Deferred[AuthResult]:
        """The SPF result for one SMTP transaction, as an AuthResult.

        ``sender`` is the MAIL FROM address (or just its domain); for the null sender the
        HELO identity is checked instead (§2.4), reported as ``smtp.helo``.
        """
        return Deferred.fromCoroutine(self._check(ip, sender, helo))

    async def _check(self, ip: str, sender: str | None, helo: str) -> AuthResult:
        helo = (helo or "").strip().lower()
        if sender:
            local, at, domain = sender.rpartition("@")
            if not at:
                local, domain = "", sender
            prop = "smtp.mailfrom"
        else:
            local, domain, prop = "", helo, "smtp.helo"
        domain = _a_labels(domain.lower().rstrip("."))
        identity = f"{local or 'postmaster'}@{domain}"
        verdict = await self.check_host(ip, domain, identity, helo)
        reason = verdict.explanation if verdict.result == "fail" else ""
        if verdict.result in ("permerror", "temperror"):
            reason = verdict.detail
        return AuthResult("spf", verdict.result, ((prop, domain),), reason=reason)

    def check_host(self, ip: str, domain: str, sender: str, helo: str = "") -> Deferred[SPFVerdict]:
        """RFC 7208 §4 ``check_host(<ip>, <domain>, <sender>)``."""
        return Deferred.fromCoroutine(self._check_host(ip, domain, sender, helo))

    async def _check_host(self, ip: str, domain: str, sender: str, helo: str) -> SPFVerdict:
        try:
            address = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            return SPFVerdict("none", detail=f"not an IP address: {ip!r}")
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        state = _State(address, sender, helo)
        try:
            return await self._evaluate(state, _a_labels(domain.lower().rstrip(".")), top=True)
        except SPFError as error:
            return SPFVerdict("permerror", detail=str(error))
        except (_TempError, DNSTemporaryError) as error:
            return SPFVerdict("temperror", detail=str(error))

    async def _lookup(self, name: str, rdtype: str) -> Records:
        try:
            return await self.resolver.lookup(name, rdtype)
        except DNSTemporaryError as error:
            raise _TempError(str(error)) from None

    async def _record(self, domain: str) -> Record | None:
        """§4.4-4.5: the one SPF record at ``domain``; None when there is none."""
        answer = await self._lookup(domain, "TXT")
        texts = [
            t for t in answer.values if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")
        ]
        if not texts:
            return None
        if len(texts) > 1:
            raise SPFError(f"{domain} has {len(texts)} SPF records (RFC 7208 §4.5)")
        return parse_record(texts[0])

    async def _evaluate(self, state: _State, domain: str, top: bool = False) -> SPFVerdict:
        if not valid_domain(domain):
            return SPFVerdict("none", detail=f"{domain!r} is not a valid domain (RFC 7208 §4.3)")
        record = await self._record(domain)
        if record is None:
            return SPFVerdict("none", detail=f"no SPF record at {domain}")
        for term in record.mechanisms:
            if await self._matches(state, term, domain):
                explanation = ""
                if term.qualifier == "fail" and record.exp is not None:
                    explanation = await self._explain(state, record.exp, domain)
                return SPFVerdict(term.qualifier, explanation, f"matched {term.name} at {domain}")
        if record.redirect is not None:
            # §6.1: a redirect counts as a DNS term; a target without a record is permerror.
            state.count_term()
            target = await self._target(state, record.redirect, domain)
            if not valid_domain(target):
                raise SPFError(f"redirect to invalid domain {target!r}")
            verdict = await self._evaluate(state, target)
            if verdict.result == "none":
                raise SPFError(f"redirect target {target} has no SPF record")
            return verdict
        return SPFVerdict("neutral", detail=f"no mechanism matched at {domain}")

    async def _target(self, state: _State, spec: MacroString | None, domain: str) -> str:
        if spec is None:
            return domain
        name = await self._expand(state, spec, domain)
        return truncate(name.lower())

    async def _expand(self, state: _State, spec: MacroString, domain: str) -> str:
        """``spec`` with its macros expanded for this check (RFC 7208 §7); the %{p} macro
        costs a validated-name lookup, so it is made only when the string uses it."""
        validated = "unknown"
        if any(isinstance(p, Macro) and p.letter == "p" for p in spec):
            validated = await self._validated_name(state, domain)
        return expand_macros(
            spec,
            sender=state.sender,
            domain=domain,
            ip=state.ip,
            helo=state.helo,
            validated=validated,
            receiver=self.receiver,
            now=self._now(),
        )

    async def _matches(self, state: _State, term: Term, domain: str) -> bool:
        name = term.name
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            return state.ip.version == term.network.version and state.ip in term.network
        state.count_term()
        target = await self._target(state, term.target, domain)
        if not valid_domain(target):
            if name == "include":
                raise SPFError(f"include of invalid domain {target!r}")
            return False
        if name == "include":
            verdict = await self._evaluate(state, target)
            if verdict.result == "pass":
                return True
            if verdict.result in ("fail", "softfail", "neutral"):
                return False
            if verdict.result == "none":
                raise SPFError(f"included domain {target} has no SPF record (RFC 7208 §5.2)")
            raise SPFError(verdict.detail)  # permerror propagates
        if name == "exists":
            answer = await self._lookup(target, "A")  # §5.7: always A, even for IPv6
            state.count_void(answer)
            return bool(answer.values)
        if name == "a":
            answer = await self._lookup(target, self._address_type(state))
            state.count_void(answer)
            return self._in_addresses(state, answer.values, term)
        if name == "mx":
            return await self._mx_matches(state, term, target)
        return await self._ptr_matches(state, target)

    @staticmethod
    def _address_type(state: _State) -> str:
        return "A" if state.ip.version == 4 else "AAAA"

    @staticmethod
    def _in_addresses(state: _State, values: tuple[Any, ...], term: Term) -> bool:
        prefix = term.cidr4 if state.ip.version == 4 else term.cidr6
        for value in values:
            try:
                network = ipaddress.ip_network(f"{value}/{prefix}", strict=False)
            except ValueError:
                continue
            if network.version == state.ip.version and state.ip in network:
                return True
        return False

    async def _mx_matches(self, state: _State, term: Term, target: str) -> bool:
        answer = await self._lookup(target, "MX")
        state.count_void(answer)
        exchanges = [name for _, name in sorted(answer.values) if name not in ("", ".", "@")]
        if len(exchanges) > MAX_NAMES:
            raise SPFError(f"{target} has more than {MAX_NAMES} MX names (RFC 7208 §4.6.4)")
        for exchange in exchanges:
            addresses = await self._lookup(exchange, self._address_type(state))
            if self._in_addresses(state, addresses.values, term):
                return True
        return False

    async def _validated_names(self, state: _State) -> list[str]:
        """§5.5: PTR names of the client whose A/AAAA records lead back to it (first ten)."""
        reverse = ipaddress.ip_address(state.ip).reverse_pointer
        try:
            answer = await self.resolver.lookup(reverse, "PTR")
        except DNSTemporaryError:
            return []  # §5.5: a DNS error on the PTR look-up is no match
        state.count_void(answer)
        names: list[str] = []
        for name in list(answer.values)[:MAX_NAMES]:
            try:
                addresses = await self.resolver.lookup(name, self._address_type(state))
            except DNSTemporaryError:
                continue  # §5.5: that name is skipped
            if any(_same_ip(value, state.ip) for value in addresses.values):
                names.append(name)
        return names

    async def _ptr_matches(self, state: _State, target: str) -> bool:
        for name in await self._validated_names(state):
            if name == target or name.endswith("." + target):
                return True
        return False

    async def _validated_name(self, state: _State, domain: str) -> str:
        """%{p} (§7.3): the target itself, else a subdomain of it, else any validated name."""
        if domain in state.validated:
            return state.validated[domain]
        try:
            names = await self._validated_names(state)
        except SPFError:
            names = []
        chosen = "unknown"
        for name in names:
            if name == domain:
                chosen = name
                break
            if name.endswith("." + domain) and chosen == "unknown":
                chosen = name
        if chosen == "unknown" and names:
            chosen = names[0]
        state.validated[domain] = chosen
        return chosen

    async def _explain(self, state: _State, spec: MacroString, domain: str) -> str:
        """§6.2: the explanation string; any problem just means no explanation."""
        try:
            target = await self._target(state, spec, domain)
            if not valid_domain(target):
                return ""
            answer = await self.resolver.lookup(target, "TXT")
            if len(answer.values) != 1:
                return ""
            text = parse_macro_string(answer.values[0], exp=True)
            explanation = await self._expand(state, text, domain)
        except (SPFError, DNSTemporaryError, _TempError):
            return ""
        return explanation if explanation.isascii() else ""


def _a_labels(domain: str) -> str:
    """§4.3: internationalised names are looked up by their A-labels (as given if invalid:
    check_host() then says none)."""
    if domain.isascii():
        return domain
    try:
        return domain_to_ascii(domain)
    except ValueError:
        return domain


def _same_ip(value: str, ip: IP) -> bool:
    try:
        return ipaddress.ip_address(value) == ip
    except ValueError:
        return False
