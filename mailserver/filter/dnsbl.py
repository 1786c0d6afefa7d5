"""DNS block and allow lists (RFC 5782): is the client's address (or the sender's domain) listed?

Design rules:

1. The look-ups start at ``connect()`` and every configured zone is asked at once, so the
   answers are usually in by the time the client says MAIL. ``connect()`` itself answers ACCEPT
   at once (the greeting never waits for a list); the verdict is given by ``sender()``, once
   per message: its points count once per message and a REJECT is given at RCPT by the
   pipeline (like Postfix's ``reject_rbl_client`` under ``smtpd_delay_reject``).
2. A client is listed when a zone answers an A record in 127.0.0.0/8 (RFC 5782 §2.1) that
   matches the zone's return-code pattern (Postfix syntax, ``127.0.0.[2..11]``; any code by
   default). Answers in 127.255.255.0/24 are the list's error codes (Spamhaus answers
   ``127.255.255.254`` to queries through public resolvers) and answers outside 127/8 come from
   a broken or hijacked zone: both count as not listed and are logged.
3. A zone that times out (``timeout`` per zone, on the reactor's clock) or fails (SERVFAIL, no
   server) counts as not listed, is logged and is not cached: mail is never refused because a
   list is down.
4. Answers are cached per (zone, address) for the answer's TTL, in a bounded LRU cache, on the
   reactor's clock (the resolver caches the raw records too; this cache also keeps the TXT
   reason and saves re-matching). The resolver gives an answer's full TTL even from its own
   cache, so an answer may be kept up to twice its TTL.
5. Skipped: authenticated clients (``Peer.authenticated_as`` or ``Envelope.authenticated_as``),
   addresses in ``skip_networks`` (loopback and private networks by default: lists know nothing
   about them) and anything that is not an IP address.
6. Allow lists (DNSWL) give negative points; a zone marked ``trusted`` also sets
   ``Verdict.trusted`` (the pipeline then skips later checks that honour allow lists) and
   overrides a reject zone's listing: a DNSWL exists to protect against block-list mistakes.
7. Domain lists (RHSBL, e.g. ``dbl.spamhaus.org``) are asked about the MAIL FROM domain at
   ``sender()``.
8. Every zone is self-tested with RFC 5782 §5's test entries, at ``start()`` (or the first
   connection) and every ``selftest_interval`` seconds; a zone that lists a must-not entry is
   *broken*: not asked, and its listings give no points and no refusal until a self-test
   passes. Verdicts wait for the first self-test while it runs. The rules are in
   :mod:`mailserver.filter.dnsbl_selftest`, which holds the self-tests for this check.

Several listings in one verdict add their points and join their rule names with commas
(``DNSBL_ZEN_TEST,DNSWL_WL_TEST``), the way SpamAssassin lists its tests. Reading the
client's address and the reversed query form are :mod:`mailserver.filter.addresses`'s.
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    TimeoutError,
    gatherResults,
    succeed,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailserver.dns import DNSTemporaryError
from mailserver.filter.addresses import (
    IP,
    PRIVATE_NETWORKS,
    client_ip,
    in_networks,
    networks_of,
    reversed_name,
)
from mailserver.filter.dnsbl_selftest import DNSBLSelfTests, ZoneSelfTests, zone_probes
from mailserver.filter.session import Abstaining, Pending
from mailserver.interfaces.filter import ICheck
from mailserver.message.address import domain_to_ascii
from mailserver.types import ACCEPT, Action, Envelope, Peer, Verdict

__all__ = [
    "DNSBLCheck",
    "DNSBLSelfTests",
    "DNSBLSession",
    "Zone",
    "combine",
    "parse_pattern",
    "parse_zone",
]

log = Logger(namespace="mailserver.filter.dnsbl")

_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
_ERROR_CODES = ipaddress.ip_network("127.255.255.0/24")
_MAX_TXT = 200


# -- zones -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Zone:
    """One list: its DNS ``name``, the points a listing scores (negative for an allow list),
    whether a listing refuses the mail (block lists) or trusts the client (allow lists), the
    return codes that count (a Postfix pattern such as ``127.0.0.[2..11]``; empty: any code in
    127/8) and the rule name (default ``DNSBL_``/``DNSWL_``/``RHSBL_`` + the zone's name)."""

    name: str
    score: float = 1.0
    reject: bool = False
    trusted: bool = False
    codes: str = ""
    rule: str = ""


def parse_zone(text: str, default_score: float = 1.0) -> Zone:
    """A zone from its config form ``NAME[=PATTERN][*SCORE][ reject][ trusted]``, e.g.
    ``zen.spamhaus.org=127.0.0.[2..11]*3 reject`` or ``list.dnswl.org*-2 trusted`` (the
    ``=``/``*`` syntax is Postfix postscreen's). ValueError says what is wrong."""
    words = text.split()
    if not words:
        raise ValueError("empty DNS list zone")
    spec, flags = words[0], [w.lower() for w in words[1:]]
    unknown = [f for f in flags if f not in ("reject", "trusted")]
    if unknown:
        raise ValueError(f"{text!r}: unknown flag {unknown[0]!r} (use 'reject' or 'trusted')")
    score = default_score
    if "*" in spec:
        spec, _, weight = spec.rpartition("*")
        try:
            score = float(weight)
        except ValueError:
            raise ValueError(f"{text!r}: the points after '*' are not a number") from None
    name, _, codes = spec.partition("=")
    name = name.strip(".").lower()
    if not re.fullmatch(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)+",
                        name):
        raise ValueError(f"{text!r}: {name!r} is not a DNS zone name")
    if codes:
        parse_pattern(codes)
    return Zone(name, score, "reject" in flags, "trusted" in flags, codes)


def parse_pattern(pattern: str) -> tuple[frozenset[int], ...]:
    """A Postfix return-code pattern: four dot-separated octets, each a number or a bracketed
    list of numbers and ``a..b`` ranges separated by ``;`` (``127.0.0.[2..11;20]``)."""
    octets = re.split(r"\.(?![^\[]*\])", pattern)  # dots outside brackets
    if len(octets) != 4:
        raise ValueError(f"return-code pattern {pattern!r} does not have four octets")
    result = []
    for octet in octets:
        items = octet[1:-1].split(";") if octet.startswith("[") and octet.endswith("]") else [
            octet
        ]
        allowed: set[int] = set()
        for item in items:
            low, dots, high = item.partition("..")
            try:
                first, last = int(low), int(high if dots else low)
            except ValueError:
                raise ValueError(f"return-code pattern {pattern!r}: bad octet {octet!r}") from None
            if not 0 <= first <= last <= 255:
                raise ValueError(f"return-code pattern {pattern!r}: bad octet {octet!r}")
            allowed.update(range(first, last + 1))
        result.append(frozenset(allowed))
    return tuple(result)


def rule_name(prefix: str, zone: Zone) -> str:
    """``DNSBL_ZEN_SPAMHAUS_ORG``: the zone's name upper-cased, anything else as ``_``."""
    return zone.rule or prefix + re.sub(r"[^A-Z0-9]+", "_", zone.name.upper()).strip("_")


@dataclass(frozen=True, slots=True)
class _Answer:
    """One zone's answer about one name: the matching codes (empty: not listed) and TXT."""

    listed: tuple[str, ...]
    txt: str = ""


@dataclass(frozen=True, slots=True)
class _Kind:
    prefix: str
    zones: tuple[Zone, ...]


def combine(check: str, verdicts: Sequence[Verdict]) -> Verdict:
    """One verdict for several signals of one check: points added, rules and reasons joined,
    the strongest action with its reply; a trusted signal drops a REJECT."""
    verdicts = [v for v in verdicts if v.rule or v.action is not Action.ACCEPT or v.trusted]
    if not verdicts:
        return ACCEPT
    trusted = any(v.trusted for v in verdicts)
    strongest = max(verdicts, key=lambda v: v.action.value)
    if trusted and strongest.action is Action.REJECT:
        strongest = Verdict()
    return Verdict(
        action=strongest.action,
        check=check,
        rule=",".join(v.rule for v in verdicts if v.rule),
        score=round(sum(v.score for v in verdicts), 3),
        reason="; ".join(v.reason for v in verdicts if v.reason),
        code=strongest.code,
        enhanced=strongest.enhanced,
        text=strongest.text,
        trusted=trusted,
    )


# -- the check -------------------------------------------------------------------------------


@implementer(ICheck)
class DNSBLCheck:
    """DNSBL, DNSWL and RHSBL look-ups through ``resolver`` (a :class:`mailserver.dns.Resolver`).

    ``reactor`` gives the clock (cache expiry) and the per-zone ``timeout``. ``zones`` are
    block lists for the client's address, ``allow_zones`` allow lists for it, ``domain_zones``
    block lists for the MAIL FROM domain. ``txt`` also fetches a listing's TXT record for the
    reason and the reply. ``cache_size`` bounds the answer cache (entries of zone x name).

    ``selftest_interval`` is the time between the zones' self-tests (rule 8; None or 0: never
    self-test, every zone stays "unchecked" and is used). The self-tests start at ``start()``
    or at the first connection, and ``stop()`` ends them (:class:`DNSBLSelfTests` does both
    as a service).
    """

    name = "dnsbl"
    honours_allow_list = True

    def __init__(
        self,
        reactor: Any,
        resolver: Any,
        zones: Sequence[Zone] = (),
        *,
        allow_zones: Sequence[Zone] = (),
        domain_zones: Sequence[Zone] = (),
        timeout: float = 5.0,
        skip_networks: Sequence[str] = PRIVATE_NETWORKS,
        txt: bool = True,
        cache_size: int = 10000,
        selftest_interval: float | None = 3600.0,
    ) -> None:
        self.reactor = reactor
        self.resolver = resolver
        self.timeout = timeout
        self.txt = txt
        self.cache_size = cache_size
        self._address_kinds = (_Kind("DNSBL_", tuple(zones)), _Kind("DNSWL_", tuple(allow_zones)))
        self._domain_kind = _Kind("RHSBL_", tuple(domain_zones))
        self._patterns = {
            z.name: parse_pattern(z.codes) if z.codes else None
            for z in (*zones, *allow_zones, *domain_zones)
        }
        self._skip = networks_of(skip_networks)
        self._cache: OrderedDict[tuple[str, str], tuple[float, _Answer]] = OrderedDict()
        # Self-tests (rule 8), per zone name: a zone used both ways gets both sets of entries.
        self._selftests = ZoneSelfTests(
            reactor,
            resolver,
            zone_probes((z.name for z in (*zones, *allow_zones)), (z.name for z in domain_zones)),
            listing=self._listing,
            changed=self._forget,
            timeout=timeout,
            interval=selftest_interval,
        )
        self.selftest_interval = self._selftests.interval

    def session(self, peer: Peer) -> DNSBLSession:
        return DNSBLSession(self, peer)

    def skips(self, address: str) -> IP | None:
        """The address to look up, or None when this client is not looked up."""
        ip = client_ip(address)
        if ip is None or in_networks(ip, self._skip):
            return None
        return ip

    def check_address(self, address: IP) -> Deferred[Verdict]:
        """The verdict of every block and allow list about ``address`` (never fails)."""
        key = reversed_name(address)
        looked: list[Deferred[Verdict]] = []
        for kind in self._address_kinds:
            for zone in kind.zones:
                looked.append(self._verdict(kind.prefix, zone, key, f"client [{address}]"))
        return self._gather(looked)

    def check_domain(self, domain: str) -> Deferred[Verdict]:
        """The verdict of every domain list about ``domain`` (never fails)."""
        try:
            name = domain_to_ascii(domain.strip().rstrip(".")).lower()
        except ValueError:  # not a domain we can ask about: nothing to say
            return succeed(ACCEPT)
        if not name or name.startswith("[") or not self._domain_kind.zones:
            return succeed(ACCEPT)
        looked = [
            self._verdict(self._domain_kind.prefix, zone, name, f"sender domain {name}")
            for zone in self._domain_kind.zones
        ]
        return self._gather(looked)

    def _gather(self, looked: list[Deferred[Verdict]]) -> Deferred[Verdict]:
        if not looked:
            return succeed(ACCEPT)
        d: Deferred[list[Verdict]] = gatherResults(looked)
        return d.addCallback(lambda verdicts: combine(self.name, verdicts))

    def _verdict(self, prefix: str, zone: Zone, key: str, who: str) -> Deferred[Verdict]:
        if self.broken(zone.name):
            return succeed(ACCEPT)
        d: Deferred[Any] = Deferred.fromCoroutine(self._ask(zone, key))
        d.addTimeout(self.timeout, self.reactor)
        d.addErrback(self._failed, zone, key)
        first = self._selftests.first_run()
        if first is not None:
            # The first self-test is running: its word on the zone comes before the answer's.
            d = gatherResults([d, first]).addCallback(lambda both: both[0])
        return d.addCallback(self._to_verdict, prefix, zone, who)

    def _failed(self, failure: Failure, zone: Zone, key: str) -> None:
        if failure.check(TimeoutError, CancelledError):
            log.warn("DNS list {zone}: no answer for {key} within {timeout}s; not listed",
                     zone=zone.name, key=key, timeout=self.timeout)
        elif failure.check(DNSTemporaryError):
            log.warn("DNS list {zone}: {error}; not listed", zone=zone.name, error=failure.value)
        else:
            log.failure("DNS list {zone}: look-up of {key} failed", failure, zone=zone.name,
                        key=key)
        return None

    def _to_verdict(self, answer: _Answer | None, prefix: str, zone: Zone, who: str) -> Verdict:
        if answer is None or not answer.listed or self.broken(zone.name):
            return ACCEPT
        rule = rule_name(prefix, zone)
        reason = f"{who} listed on {zone.name} ({', '.join(answer.listed)})"
        if answer.txt:
            reason += f": {answer.txt}"
        if prefix == "DNSWL_":
            return Verdict(check=self.name, rule=rule, score=zone.score, reason=reason,
                           trusted=zone.trusted)
        if not zone.reject:
            return Verdict(check=self.name, rule=rule, score=zone.score, reason=reason)
        text = f"Service unavailable; {who} blocked using {zone.name}"
        if answer.txt:
            text += f"; {answer.txt}"
        return Verdict(Action.REJECT, self.name, rule, zone.score, reason, 554, "5.7.1", text)

    async def _ask(self, zone: Zone, key: str) -> _Answer:
        """One zone's answer about ``key`` (a reversed address or a domain), cached."""
        cache_key = (zone.name, key)
        cached = self._cache.get(cache_key)
        now = self.reactor.seconds()
        if cached is not None:
            if now < cached[0]:
                self._cache.move_to_end(cache_key)
                return cached[1]
            del self._cache[cache_key]
        name = f"{key}.{zone.name}"
        records = await self.resolver.lookup(name, "A")
        listed = tuple(v for v in records.values if self._listing(zone.name, name, v))
        txt = ""
        if listed and self.txt:
            try:
                texts = (await self.resolver.txt(name)).values
            except DNSTemporaryError:
                texts = ()
            txt = _printable(texts[0]) if texts else ""
        answer = _Answer(listed, txt)
        self._cache[cache_key] = (self.reactor.seconds() + records.ttl, answer)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return answer

    def _listing(self, zone: str, name: str, value: str) -> bool:
        """Is this A record a listing (RFC 5782 §2.1), given the zone's pattern?"""
        try:
            code = ipaddress.IPv4Address(value)
        except ValueError:
            return False
        if code in _ERROR_CODES:
            log.warn("DNS list {zone} answered error code {code} for {name} (query refused?); "
                     "not listed", zone=zone, code=value, name=name)
            return False
        if code not in _LOOPBACK:
            log.warn("DNS list {zone} answered {code} for {name}, outside 127.0.0.0/8 "
                     "(RFC 5782 §2.1); not listed", zone=zone, code=value, name=name)
            return False
        pattern = self._patterns.get(zone)
        if pattern is None:
            return True
        return all(int(o) in allowed for o, allowed in zip(value.split("."), pattern))

    def _forget(self, zone: str) -> None:
        """Drop the cached answers of ``zone`` (its self-test state changed)."""
        for key in [k for k in self._cache if k[0] == zone]:
            del self._cache[key]

    # -- self-tests (rule 8, mailserver.filter.dnsbl_selftest) --------------------------------

    def zone_status(self) -> dict[str, str]:
        """Each zone's self-test state: "unchecked", "ok", "no test entry: ... not listed"
        (used) or "broken: ... listed" (ignored)."""
        return self._selftests.zone_status()

    def broken(self, zone: str) -> bool:
        """Is ``zone``'s last self-test result "broken" (its listings ignored)?"""
        return self._selftests.broken(zone)

    def start(self) -> Deferred[dict[str, str]]:
        """Self-test every zone now and then every ``selftest_interval`` seconds; fires with
        zone_status() when the first self-test is done (at once when there is nothing to do).
        Calling it again while running only waits for the running self-test."""
        return self._selftests.start()

    def stop(self) -> None:
        """Stop the self-tests: nothing stays scheduled on the reactor and a running self-test
        is cancelled (zone states stay as they were). A later connection does not restart
        them; ``start()`` does."""
        self._selftests.stop()

    def selftest(self) -> Deferred[dict[str, str]]:
        """Self-test every zone now (or wait for the self-test already running); fires with
        zone_status() and never fails."""
        return self._selftests.selftest()

    def _autostart(self) -> None:
        """The first connection starts the self-tests when nobody called start()."""
        self._selftests.autostart()


def _printable(text: str) -> str:
    """A TXT reason fit for a reply line: printable ASCII, bounded."""
    cleaned = "".join(c if " " <= c <= "~" else " " for c in text).strip()
    return cleaned[:_MAX_TXT]


class DNSBLSession(Abstaining):
    """One connection: the address look-ups start at connect(); sender() gives the verdict
    (with the domain lists' verdict about the MAIL FROM domain) for each message."""

    def __init__(self, check: DNSBLCheck, peer: Peer) -> None:
        self._check = check
        self._peer = peer
        self._address = check.skips(peer.address)
        self._pending: Pending[Verdict] | None = None

    def connect(self) -> Verdict:
        if not self._peer.authenticated_as:
            self._start()
        return ACCEPT

    def sender(self, envelope: Envelope) -> Deferred[Verdict] | Verdict:
        if envelope.authenticated_as or self._peer.authenticated_as:
            return ACCEPT
        self._start()
        assert self._pending is not None
        looked = [self._pending.get()]
        if envelope.sender is not None:
            looked.append(self._check.check_domain(envelope.sender.domain))
        d: Deferred[list[Verdict]] = gatherResults(looked)
        return d.addCallback(lambda verdicts: combine(self._check.name, verdicts))

    def _start(self) -> None:
        if self._pending is not None:
            return
        self._check._autostart()
        if self._address is None:
            self._pending = Pending(succeed(ACCEPT))
            return
        self._pending = Pending(self._check.check_address(self._address))

