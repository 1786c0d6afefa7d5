"""mailserver.dns against a real DNS server on 127.0.0.1: answers, NXDOMAIN/NODATA with
negative caching from the SOA, TTL expiry on an injected clock, failures not cached."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from mailserver.dns import DNSTemporaryError, Resolver
from tests.dns_server import Zone, start_dns_server

ZONE = {
    "example.org": [("MX", (20, "mx2.example.org")), ("MX", (10, "MX1.example.org")),
                    ("TXT", "v=spf1 ip4:127.0.0.0/8 -all")],
    "mx1.example.org": [("A", "127.0.0.2"), ("AAAA", "::1")],
    "mx2.example.org": [("A", "127.0.0.3")],
    "long.example.org": [("TXT", ("part one ", "part two"))],
}


class ClockReactor:
    """The real reactor for threads, a task.Clock for time (so TTLs are exact)."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock

    def seconds(self) -> float:
        return self.clock.seconds()

    def __getattr__(self, name: str):
        return getattr(reactor, name)


@pytest.fixture
def dns_server():
    server = start_dns_server(reactor, Zone("example.org", ZONE, ttl=300, negative_ttl=60))
    yield server
    pytest_twisted.blockon(server.stop())


@pytest.fixture
def clock():
    return task.Clock()


@pytest.fixture
def resolver(dns_server, clock):
    return Resolver(ClockReactor(clock), [dns_server.address], timeout=2, negative_ttl=45)


@pytest_twisted.ensureDeferred
async def test_mx_and_a_records(resolver):
    mx = await resolver.mx("example.org")
    assert sorted(mx.values) == [(10, "mx1.example.org"), (20, "mx2.example.org")]
    assert mx.ttl == 300 and mx.exists
    a = await resolver.lookup("mx1.example.org", "A")
    aaaa = await resolver.lookup("MX1.example.org.", "AAAA")
    assert a.values == ("127.0.0.2",) and aaaa.values == ("::1",)


@pytest_twisted.ensureDeferred
async def test_txt_strings_are_joined(resolver):
    assert (await resolver.txt("long.example.org")).values == ("part one part two",)
    assert (await resolver.txt("example.org")).values == ("v=spf1 ip4:127.0.0.0/8 -all",)


@pytest_twisted.ensureDeferred
async def test_nxdomain_and_nodata_are_cached_for_the_soa_minimum(resolver, clock):
    missing = await resolver.mx("nope.example.org")
    # twisted.names sends no SOA with NXDOMAIN, so the configured fallback applies
    assert not missing.exists and missing.values == () and missing.ttl == 45
    nodata = await resolver.mx("mx1.example.org")
    assert nodata.exists and nodata.values == () and nodata.ttl == 60
    queries = resolver.queries
    await resolver.mx("nope.example.org")
    assert resolver.queries == queries
    clock.advance(46)
    await resolver.mx("nope.example.org")
    assert resolver.queries == queries + 1


@pytest_twisted.ensureDeferred
async def test_answers_cached_until_their_ttl(resolver, clock):
    await resolver.mx("example.org")
    clock.advance(299)
    await resolver.mx("example.org")
    assert resolver.queries == 1
    clock.advance(2)
    await resolver.mx("example.org")
    assert resolver.queries == 2


@pytest_twisted.ensureDeferred
async def test_concurrent_queries_share_one_lookup(resolver):
    first, second = resolver.mx("example.org"), resolver.mx("example.org")
    assert (await first) == (await second)
    assert resolver.queries == 1


@pytest_twisted.ensureDeferred
async def test_unreachable_server_is_temporary_and_not_cached(clock):
    dead = Resolver(ClockReactor(clock), ["127.0.0.1:9"], timeout=0.5)  # nothing listens
    with pytest.raises(DNSTemporaryError):
        await dead.mx("example.org")
    with pytest.raises(DNSTemporaryError):
        await dead.mx("example.org")
    assert dead.queries == 2
