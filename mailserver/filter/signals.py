"""Reverse DNS and HELO signals: small scored hints about the client, never refusals.

Design rules:

1. Each signal is a rule with a few points (SpamAssassin's names where it has one); the
   points are configurable (``scores``, merged over :data:`DEFAULT_SCORES`). None of these
   checks refuses mail: a missing PTR or a sloppy HELO is common among legitimate senders,
   so they only tip the balance together with other evidence.
2. The DNS look-ups start as early as possible (the PTR at ``connect()``, the HELO name's
   addresses at ``helo()``) and the verdict is given by ``sender()``, once per message, when
   the client's authentication is known (``Envelope.authenticated_as``): authenticated
   clients get no signals.
3. A DNS failure or timeout (``timeout`` seconds on the reactor's clock) gives no signal: we
   only score what we know. "No such name" and "no records" are knowledge.
4. Clients in ``skip_networks`` (loopback and private networks by default) get no signals;
   tests pass ``skip_networks=()`` to exercise them on 127.x.

Reverse DNS (:class:`ReverseDNSCheck`):

- ``RDNS_NONE``: the client's address has no PTR record.
- ``RDNS_NOT_FCRDNS``: none of the PTR names (at most ``max_names``) resolves back to the
  client's address (forward-confirmed reverse DNS fails).

HELO (:class:`HeloCheck`), RFC 5321 §4.1.1.1 (a FQDN, or an address literal):

- ``HELO_NOT_FQDN``: not a syntactically valid domain with at least two labels, nor an
  address literal (a bare IP address without brackets counts here too).
- ``HELO_IP_MISMATCH``: an address (literal or bare) that is not the client's.
- ``HELO_FORGED_OURS``: one of our own host names (``own_names``) or domains
  (``is_local_domain``) from a client that is not us.
- ``HELO_NO_DNS``: a FQDN with neither A nor AAAA records.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailserver.dns import DNSTemporaryError, Records
from mailserver.filter.addresses import IP, PRIVATE_NETWORKS, client_ip, in_networks, networks_of
from mailserver.filter.session import Abstaining, Pending
from mailserver.interfaces.filter import ICheck
from mailserver.message.address import domain_to_ascii
from mailserver.types import ACCEPT, Envelope, Peer, Verdict

__all__ = [
    "DEFAULT_SCORES",
    "HeloCheck",
    "HeloSession",
    "ReverseDNSCheck",
    "ReverseDNSSession",
    "helo_signals",
]

log = Logger(namespace="mailserver.filter.signals")

#: The points of each signal (small: these are hints).
DEFAULT_SCORES: Mapping[str, float] = {
    "RDNS_NONE": 1.0,
    "RDNS_NOT_FCRDNS": 0.5,
    "HELO_NOT_FQDN": 0.5,
    "HELO_IP_MISMATCH": 1.0,
    "HELO_FORGED_OURS": 2.5,
    "HELO_NO_DNS": 0.5,
}

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")

#: One signal: (rule, reason).
Signal = tuple[str, str]


def _scores(given: Mapping[str, float] | None) -> dict[str, float]:
    scores = dict(DEFAULT_SCORES)
    for rule, points in (given or {}).items():
        if rule not in scores:
            raise ValueError(f"unknown signal {rule!r} (known: {', '.join(DEFAULT_SCORES)})")
        scores[rule] = float(points)
    return scores


class _Signals:
    """What both checks share: scores, skips, the timeout and turning signals into a verdict."""

    name = ""
    honours_allow_list = True

    def __init__(
        self,
        reactor: Any,
        resolver: Any,
        scores: Mapping[str, float] | None,
        timeout: float,
        skip_networks: Sequence[str],
    ) -> None:
        self.reactor = reactor
        self.resolver = resolver
        self.timeout = timeout
        self.scores = _scores(scores)
        self._skip = networks_of(skip_networks)

    def client(self, peer: Peer) -> IP | None:
        """The client's address when it gets signals; None when skipped."""
        ip = client_ip(peer.address)
        if ip is None or in_networks(ip, self._skip):
            return None
        return ip

    def run(self, coroutine: Coroutine[Any, Any, list[Signal]], what: str) -> Deferred[Verdict]:
        """The verdict of ``coroutine``'s signals, within ``timeout``; never fails."""
        d = Deferred.fromCoroutine(coroutine)
        d.addTimeout(self.timeout, self.reactor)
        d.addErrback(self._failed, what)
        return d.addCallback(self.verdict)

    def verdict(self, signals: list[Signal] | None) -> Verdict:
        if not signals:
            return ACCEPT
        return Verdict(
            check=self.name,
            rule=",".join(rule for rule, _ in signals),
            score=round(sum(self.scores[rule] for rule, _ in signals), 3),
            reason="; ".join(reason for _, reason in signals),
        )

    def _failed(self, failure: Failure, what: str) -> None:
        if failure.check(TimeoutError, CancelledError):
            log.info("{check}: no DNS answer for {what} within {timeout}s; no signal",
                     check=self.name, what=what, timeout=self.timeout)
        elif failure.check(DNSTemporaryError):
            log.info("{check}: {error}; no signal", check=self.name, error=failure.value)
        else:
            log.failure("{check}: checking {what} failed", failure, check=self.name, what=what)
        return None

    async def addresses(self, name: str, rdtypes: Iterable[str]) -> set[IP] | None:
        """The addresses of ``name`` (of each type in ``rdtypes``); None when a look-up
        failed and nothing was found (we cannot tell)."""
        results: list[Records | None] = await gatherResults(
            [self._lookup(name, rdtype) for rdtype in rdtypes]
        )
        found = {
            ip for records in results if records is not None for v in records.values
            if (ip := client_ip(v)) is not None
        }
        if not found and any(r is None for r in results):
            return None
        return found

    def _lookup(self, name: str, rdtype: str) -> Deferred[Records | None]:
        d: Deferred[Records | None] = self.resolver.lookup(name, rdtype)

        def failed(failure: Failure) -> None:
            failure.trap(DNSTemporaryError)
            log.info("{check}: {error}", check=self.name, error=failure.value)
            return None

        return d.addErrback(failed)


# -- reverse DNS -----------------------------------------------------------------------------


@implementer(ICheck)
class ReverseDNSCheck(_Signals):
    """``RDNS_NONE`` and ``RDNS_NOT_FCRDNS`` through ``resolver`` (a
    :class:`mailserver.dns.Resolver`); ``reactor`` gives the clock for ``timeout``."""

    name = "rdns"

    def __init__(
        self,
        reactor: Any,
        resolver: Any,
        *,
        scores: Mapping[str, float] | None = None,
        timeout: float = 5.0,
        skip_networks: Sequence[str] = PRIVATE_NETWORKS,
        max_names: int = 10,
    ) -> None:
        super().__init__(reactor, resolver, scores, timeout, skip_networks)
        self.max_names = max_names

    def session(self, peer: Peer) -> ReverseDNSSession:
        return ReverseDNSSession(self, peer)

    def check_address(self, address: IP) -> Deferred[Verdict]:
        """The reverse DNS signals of ``address`` (never fails)."""
        return self.run(self._signals(address), f"the PTR of {address}")

    async def _signals(self, address: IP) -> list[Signal]:
        ptr = await self.resolver.lookup(address.reverse_pointer, "PTR")
        names = [n for n in dict.fromkeys(ptr.values) if n][: self.max_names]
        if not names:
            return [("RDNS_NONE", f"no PTR record for {address}")]
        rdtype = "A" if address.version == 4 else "AAAA"
        unknown = False
        for name in names:
            found = await self.addresses(name, (rdtype,))
            if found is None:
                unknown = True
            elif address in found:
                return []
        if unknown:
            return []  # a forward look-up failed: we cannot tell (rule 3)
        return [("RDNS_NOT_FCRDNS",
                 f"PTR {', '.join(names)} of {address} does not resolve back to it")]


class ReverseDNSSession(Abstaining):
    """The PTR look-up starts at connect(); each MAIL gets the verdict."""

    def __init__(self, check: ReverseDNSCheck, peer: Peer) -> None:
        self._check = check
        self._peer = peer
        self._address = check.client(peer)
        self._pending: Pending[Verdict] | None = None

    def connect(self) -> Verdict:
        if not self._peer.authenticated_as:
            self._start()
        return ACCEPT

    def sender(self, envelope: Envelope) -> Deferred[Verdict] | Verdict:
        if envelope.authenticated_as or self._peer.authenticated_as:
            return ACCEPT
        pending = self._start()
        return ACCEPT if pending is None else pending.get()

    def _start(self) -> Pending[Verdict] | None:
        if self._pending is None and self._address is not None:
            self._pending = Pending(self._check.check_address(self._address))
        return self._pending


# -- HELO ------------------------------------------------------------------------------------


def helo_signals(
    name: str, client: IP, own_names: Iterable[str] = (),
    is_local_domain: Callable[[str], bool] | None = None,
) -> tuple[list[Signal], str | None]:
    """The signals ``name`` gives without DNS, and the domain to look up (None: none).

    Address literals per RFC 5321 §4.1.3: ``[192.0.2.1]``, ``[IPv6:2001:db8::1]``.
    """
    if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None:
        client = client.ipv4_mapped
    name = name.strip()
    shown = name[:80]
    if name.startswith("[") and name.endswith("]"):
        inner = name[1:-1]
        literal: IP
        try:
            if inner[:5].lower() == "ipv6:":
                literal = ipaddress.IPv6Address(inner[5:])
                literal = literal.ipv4_mapped or literal
            else:
                literal = ipaddress.IPv4Address(inner)
        except ValueError:
            return [("HELO_NOT_FQDN", f"HELO {shown} is not a valid address literal")], None
        if literal != client:
            return [("HELO_IP_MISMATCH", f"HELO {shown} is not the client's address {client}")
                    ], None
        return [], None
    bare = client_ip(name) if ":" in name or name.replace(".", "").isdigit() else None
    if bare is not None:
        signals = [("HELO_NOT_FQDN", f"HELO {shown} is an address without brackets")]
        if bare != client:
            signals.append(("HELO_IP_MISMATCH", f"HELO {shown} is not the client's address "
                                                f"{client}"))
        return signals, None
    domain = _domain(name)
    if domain is None:
        return [("HELO_NOT_FQDN", f"HELO {shown} is not a fully qualified domain name")], None
    ours = {n.lower().rstrip(".") for n in own_names}
    if domain in ours or (is_local_domain is not None and is_local_domain(domain)):
        return [("HELO_FORGED_OURS", f"HELO {domain} is our own name, from {client}")], None
    return [], domain


def _domain(name: str) -> str | None:
    """``name`` as a lower-case A-label FQDN (two labels or more, a non-numeric top label);
    None when it is not one."""
    try:
        domain = domain_to_ascii(name.rstrip(".")).lower()
    except ValueError:
        return None
    labels = domain.split(".")
    if len(domain) > 253 or len(labels) < 2 or labels[-1].isdigit():
        return None
    if not all(_LABEL.fullmatch(label) for label in labels):
        return None
    return domain


@implementer(ICheck)
class HeloCheck(_Signals):
    """``HELO_NOT_FQDN``, ``HELO_IP_MISMATCH``, ``HELO_FORGED_OURS``, ``HELO_NO_DNS``.

    ``own_names`` are this server's host names; ``is_local_domain(domain)`` says whether a
    domain is one we serve (e.g. the user directory's ``has_domain``; must not block).
    """

    name = "helo"

    def __init__(
        self,
        reactor: Any,
        resolver: Any,
        *,
        own_names: Iterable[str] = (),
        is_local_domain: Callable[[str], bool] | None = None,
        scores: Mapping[str, float] | None = None,
        timeout: float = 5.0,
        skip_networks: Sequence[str] = PRIVATE_NETWORKS,
    ) -> None:
        super().__init__(reactor, resolver, scores, timeout, skip_networks)
        self.own_names = tuple(n.lower().rstrip(".") for n in own_names)
        self.is_local_domain = is_local_domain

    def session(self, peer: Peer) -> HeloSession:
        return HeloSession(self, peer)

    def check_helo(self, name: str, client: IP) -> Deferred[Verdict]:
        """The signals of HELO ``name`` from ``client`` (never fails)."""
        return self.run(self._signals(name, client), f"HELO {name[:80]}")

    async def _signals(self, name: str, client: IP) -> list[Signal]:
        signals, domain = helo_signals(name, client, self.own_names, self.is_local_domain)
        if domain is not None:
            found = await self.addresses(domain, ("A", "AAAA"))
            if found is not None and not found:
                signals.append(("HELO_NO_DNS", f"HELO {domain} has no A or AAAA record"))
        return signals


class HeloSession(Abstaining):
    """The HELO name's look-ups start at helo(); each MAIL gets the verdict for the last
    greeting (the envelope's ``helo`` when the session saw none)."""

    def __init__(self, check: HeloCheck, peer: Peer) -> None:
        self._check = check
        self._peer = peer
        self._address = check.client(peer)
        self._name: str | None = None
        self._pending: Pending[Verdict] | None = None

    def helo(self, name: str) -> Verdict:
        self._start(name)
        return ACCEPT

    def sender(self, envelope: Envelope) -> Deferred[Verdict] | Verdict:
        if envelope.authenticated_as or self._peer.authenticated_as:
            return ACCEPT
        name = self._name if self._name is not None else (envelope.helo or self._peer.helo)
        pending = self._start(name)
        return ACCEPT if pending is None else pending.get()

    def _start(self, name: str) -> Pending[Verdict] | None:
        if self._address is None or not name or self._peer.authenticated_as:
            return None
        if name != self._name or self._pending is None:
            self._name = name
            self._pending = Pending(self._check.check_helo(name, self._address))
        return self._pending
