"""Where to deliver mail for a domain: RFC 5321 §5.1 with null MX (RFC 7505).

:func:`find_routes` returns the hosts to try in order, each with its addresses:

- MX records sorted by preference, in random order among equal preferences (§5.1);
- no MX records (NODATA) means the domain itself is the one host, "implicit MX" (§5.1);
- NXDOMAIN, or a null MX (a single ``0 .`` record), fails permanently (RFC 7505 §3);
- an address literal (``[192.0.2.1]``) is delivered to as it stands;
- when one of our own names appears among the MX hosts, that host and every less preferred
  one are dropped, so we never loop mail to ourselves (§5.1);
- for each host the A and AAAA records (IPv4 first); a host without any is skipped.

DNS failures raise :class:`mailserver.dns.DNSTemporaryError`: the caller defers and retries.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import inlineCallbacks

from mailserver.dns import Resolver
from mailserver.errors import MailError

__all__ = ["NoRoute", "Route", "find_routes"]


class NoRoute(MailError):
    """The domain has no mail hosts: permanent (RFC 7505 null MX, NXDOMAIN, no addresses)."""

    code = 550
    enhanced = "5.1.2"
    text = "Domain does not accept mail"


class NullMX(NoRoute):
    code = 556
    enhanced = "5.1.10"  # RFC 7505 §4.2
    text = "Recipient domain has null MX (RFC 7505): it accepts no mail"


@dataclass(frozen=True, slots=True)
class Route:
    """One host to try: its name, MX preference (0 for implicit MX) and addresses."""

    host: str
    preference: int
    addresses: tuple[str, ...]


def _literal(domain: str) -> str | None:
    """The address inside ``[192.0.2.1]`` / ``[IPv6:2001:db8::1]``, or None."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner.lower().startswith("ipv6:"):
        inner = inner[5:]
    return str(ipaddress.ip_address(inner))


def order_mx(
    records: Iterable[tuple[int, str]], own_names: Iterable[str], rng: random.Random
) -> list[tuple[int, str]]:
    """Preference order, shuffled among equals, truncated before our own names (§5.1)."""
    by_preference: dict[int, list[str]] = {}
    for preference, host in records:
        by_preference.setdefault(preference, []).append(host.lower().rstrip("."))
    own = {name.lower().rstrip(".") for name in own_names}
    ordered: list[tuple[int, str]] = []
    for preference in sorted(by_preference):
        hosts = by_preference[preference]
        rng.shuffle(hosts)
        if own & set(hosts):
            break  # we are an MX here: only more preferred hosts may be used
        ordered.extend((preference, host) for host in hosts)
    return ordered


@inlineCallbacks
def find_routes(
    resolver: Resolver,
    domain: str,
    *,
    own_names: Iterable[str] = (),
    rng: random.Random | None = None,
) -> Any:
    """Deferred[list[Route]] for ``domain`` (an A-label domain or an address literal)."""
    literal = _literal(domain)
    if literal is not None:
        return [Route(domain, 0, (literal,))]
    rng = rng or random.Random()
    answer = yield resolver.mx(domain)
    if not answer.exists:
        raise NoRoute(detail=f"{domain}: no such domain (NXDOMAIN)")
    if any(host in ("", ".") for _pref, host in answer.values):
        # RFC 7505 §3: a null MX is a single record; with others beside it, it is still
        # a statement that the domain takes no mail, so never fall back to A/AAAA.
        raise NullMX(detail=domain)
    if answer.values:
        hosts = order_mx(answer.values, own_names, rng)
        if not hosts:
            raise NoRoute(
                "Mail loops back to me (MX points to this host)", detail=f"{domain}: own MX"
            )
    else:
        hosts = [(0, domain.lower())]  # implicit MX
    routes = []
    for preference, host in hosts:
        addresses = yield _addresses(resolver, host)
        if addresses:
            routes.append(Route(host, preference, addresses))
    if not routes:
        raise NoRoute(detail=f"{domain}: no A/AAAA records for its mail hosts")
    return routes


@inlineCallbacks
def _addresses(resolver: Resolver, host: str) -> Any:
    """IPv4 then IPv6 addresses of ``host``; an NXDOMAIN host has none."""
    literal = _literal(host)
    if literal is not None:
        return (literal,)
    a = yield resolver.lookup(host, "A")
    aaaa = yield resolver.lookup(host, "AAAA")
    return tuple(a.values) + tuple(aaaa.values)
