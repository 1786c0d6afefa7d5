"""A real, authoritative DNS server on 127.x for tests (twisted.names), serving one zone
given as a dict, over UDP and TCP on the same port.

    zone = Zone("example.org", {
        "example.org": [("MX", (10, "mx1.example.org")), ("TXT", "v=spf1 -all")],
        "mx1.example.org": [("A", "127.0.0.2")],
    })
    server = start_dns_server(reactor, zone)   # server.address == "127.0.0.1:PORT"
    ...
    await server.stop()
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import DeferredList
from twisted.internet.error import CannotListenError
from twisted.names import authority, dns, server

RECORD_TYPES = {
    "A": lambda v: dns.Record_A(v),
    "AAAA": lambda v: dns.Record_AAAA(v),
    "MX": lambda v: dns.Record_MX(v[0], v[1].encode()),
    "CNAME": lambda v: dns.Record_CNAME(v.encode()),
    "PTR": lambda v: dns.Record_PTR(v.encode()),
    # (priority, weight, port, target); target "." = service not offered (RFC 6186 §3.4)
    "SRV": lambda v: dns.Record_SRV(v[0], v[1], v[2], v[3].rstrip(".").encode()),
}


class Zone(authority.FileAuthority):
    """An in-memory zone: ``records`` maps owner names to ``[(type, value), ...]``.

    ``ttl`` applies to every record; the SOA minimum (the negative-caching TTL) is
    ``negative_ttl``. Names outside ``origin`` get REFUSED, like a real authoritative server.
    """

    def __init__(
        self,
        origin: str,
        records: Mapping[str, Iterable[tuple[str, Any]]],
        ttl: int = 300,
        negative_ttl: int = 60,
    ) -> None:
        self._origin = origin
        self._given = records
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        super().__init__(origin)

    def loadFile(self, filename: str) -> None:
        origin = self._origin.encode()
        soa = dns.Record_SOA(
            mname=b"ns." + origin,
            rname=b"hostmaster." + origin,
            serial=1,
            refresh=3600,
            retry=600,
            expire=86400,
            minimum=self._negative_ttl,
            ttl=self._negative_ttl,
        )
        self.soa = (origin, soa)
        self.records = {origin.lower(): [soa]}
        for name, entries in self._given.items():
            owner = name.lower().rstrip(".").encode()
            for rdtype, value in entries:
                record = _record(rdtype, value)
                record.ttl = self._ttl
                self.records.setdefault(owner, []).append(record)


def _record(rdtype: str, value: Any) -> Any:
    if rdtype == "TXT":
        parts = value if isinstance(value, tuple) else (value,)
        return dns.Record_TXT(*[p.encode() if isinstance(p, str) else p for p in parts])
    return RECORD_TYPES[rdtype](value)


@dataclass
class DNSServer:
    host: str
    port: int
    ports: list[Any]

    @property
    def address(self) -> str:
        """``host:port`` as :class:`mailserver.dns.Resolver` takes it."""
        return f"{self.host}:{self.port}"

    def stop(self) -> Any:
        return DeferredList([p.stopListening() for p in self.ports])


def start_dns_server(
    reactor: Any, *zones: Zone, host: str = "127.0.0.1", port: int = 0
) -> DNSServer:
    """Serve ``zones`` on ``host`` (UDP and TCP, one free port, or ``port``: 53 for tools
    that only use the system resolver)."""
    factory = server.DNSServerFactory(authorities=list(zones))
    factory.noisy = False
    for attempt in range(20):
        udp = reactor.listenUDP(port, dns.DNSDatagramProtocol(factory), interface=host)
        bound = udp.getHost().port
        try:
            tcp = reactor.listenTCP(bound, factory, interface=host)
        except CannotListenError:
            # the free UDP port is taken for TCP (another test's listener): try another
            udp.stopListening()
            if port or attempt == 19:
                raise
            continue
        return DNSServer(host, bound, [udp, tcp])
    raise AssertionError("unreachable")
