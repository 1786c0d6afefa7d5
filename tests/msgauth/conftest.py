"""Fixtures for mailserver.msgauth: a real DNS server on 127.0.0.1 serving test zones."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import fail
from twisted.internet.error import CannotListenError

from mailserver.dns import Resolver
from tests.dns_server import DNSServer, Zone, start_dns_server


def zones_for(
    records: Mapping[str, Iterable[tuple[str, Any]]], origins: Iterable[str]
) -> list[Zone]:
    """Split ``records`` into one Zone per origin (the longest origin a name falls under)."""
    ordered = sorted(origins, key=len, reverse=True)
    split: dict[str, dict[str, list[tuple[str, Any]]]] = {o: {} for o in ordered}
    for name, entries in records.items():
        key = name.lower().rstrip(".")
        origin = next((o for o in ordered if key == o or key.endswith("." + o)), None)
        if origin is None:
            raise ValueError(f"{name} is outside the test zones {ordered}")
        split[origin].setdefault(key, []).extend(entries)
    return [Zone(origin, split[origin], ttl=300, negative_ttl=60) for origin in ordered]


class ServerFailure(Exception):
    """Not a DomainError, so twisted.names answers SERVFAIL (not NXDOMAIN)."""


class ServfailZone(Zone):
    """Every name under ``origin`` gets SERVFAIL: a real DNS error, for temperror paths."""

    def __init__(self, origin: str = "servfail.test") -> None:
        super().__init__(origin, {})

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any = None) -> Any:
        origin = self._origin.encode()
        if name.lower() == origin or name.lower().endswith(b"." + origin):
            return fail(ServerFailure(name))
        return super()._lookup(name, cls, type, timeout)


def serve(records: Mapping[str, Iterable[tuple[str, Any]]], origins: Iterable[str]) -> DNSServer:
    """Start a real DNS server on 127.0.0.1 for ``records`` (another port when the free UDP
    port's TCP twin is taken)."""
    zones = [ServfailZone(), *zones_for(records, origins)]
    for _ in range(20):
        try:
            return start_dns_server(reactor, *zones)
        except CannotListenError:
            continue
    return start_dns_server(reactor, *zones)


def resolver_for(server: DNSServer) -> Resolver:
    return Resolver(reactor, [server.address], timeout=2)
