"""Client addresses for the checks: reading ``Peer.address``, networks and the DNS list form.

Design rules:

1. ``Peer.address`` is text in whatever spelling the listener gave it (plain, ``[bracketed]``,
   ``IPv6:``-tagged as in an RFC 5321 §4.1.3 address literal, or with a ``%zone`` index):
   :func:`client_ip` reads every one of them and gives None for anything that is not an IP
   address, so a check skips such a client instead of failing. An IPv4-mapped IPv6 address is
   its IPv4 address: a dual-stack listener must not let a client dodge IPv4 lists and limits.
2. Network lists come from configuration: :func:`networks_of` parses them once (a bad one is a
   ValueError naming it) and :func:`in_networks` compares only networks of the address's own
   family.
3. :data:`PRIVATE_NETWORKS` are the addresses no public list or DNS record knows about; checks
   that ask the DNS about the client skip them by default.

Pure functions, no I/O: shared by the DNS lists, the rate limits and the rDNS/HELO signals.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

__all__ = [
    "IP",
    "PRIVATE_NETWORKS",
    "client_ip",
    "in_networks",
    "networks_of",
    "reversed_name",
]

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Addresses no public list knows: loopback, RFC 1918, CGNAT, link-local, ULA, unspecified.
PRIVATE_NETWORKS: tuple[str, ...] = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
)


def client_ip(text: str) -> IP | None:
    """The client's address from ``Peer.address``: plain, ``[bracketed]``, ``IPv6:``-tagged
    or with a zone index; an IPv4-mapped IPv6 address is its IPv4 address. None if not an IP."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    text = text.partition("%")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def in_networks(address: IP, networks: Iterable[Any]) -> bool:
    """True when ``address`` is in one of ``networks`` (ip_network objects of either family)."""
    return any(address.version == n.version and address in n for n in networks)


def networks_of(specs: Iterable[str]) -> tuple[Any, ...]:
    """Parse network specs (``"10.0.0.0/8"``, ``"::1"``); ValueError names a bad one."""
    result = []
    for spec in specs:
        try:
            result.append(ipaddress.ip_network(spec.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP network: {spec!r}") from None
    return tuple(result)


def reversed_name(address: IP) -> str:
    """The address as a list queries it (RFC 5782 §2.1, §2.4): IPv4 octets in reverse order,
    IPv6 as 32 nibbles in reverse order, dot-separated, without a zone."""
    if isinstance(address, ipaddress.IPv4Address):
        return ".".join(reversed(str(address).split(".")))
    return ".".join(reversed(address.exploded.replace(":", "")))
