"""MX routing (RFC 5321 §5.1, RFC 7505) against a real DNS server on 127.0.0.1."""

from __future__ import annotations

import random

import pytest
import pytest_twisted
from twisted.internet import reactor

from mailserver.dns import Resolver
from mailserver.spool.mx import NoRoute, NullMX, Route, find_routes, order_mx
from tests.dns_server import Zone, start_dns_server

ZONE = {
    "example.org": [("MX", (20, "backup.example.org")), ("MX", (10, "mx-a.example.org")),
                    ("MX", (10, "mx-b.example.org"))],
    "mx-a.example.org": [("A", "127.0.0.2")],
    "mx-b.example.org": [("A", "127.0.0.3"), ("AAAA", "::1")],
    "backup.example.org": [("A", "127.0.0.4")],
    "implicit.example.org": [("A", "127.0.0.5")],
    "null.example.org": [("MX", (0, ""))],  # the root name: a null MX
    "dangling.example.org": [("MX", (10, "gone.example.org"))],
    "self.example.org": [("MX", (10, "mx.test")), ("MX", (20, "backup.example.org"))],
}


@pytest.fixture
def resolver():
    server = start_dns_server(reactor, Zone("example.org", ZONE))
    yield Resolver(reactor, [server.address], timeout=2)
    pytest_twisted.blockon(server.stop())


@pytest_twisted.ensureDeferred
async def test_preference_order_with_addresses(resolver):
    routes = await find_routes(resolver, "example.org", rng=random.Random(1))
    assert [r.preference for r in routes] == [10, 10, 20]
    assert {r.host for r in routes[:2]} == {"mx-a.example.org", "mx-b.example.org"}
    assert routes[2] == Route("backup.example.org", 20, ("127.0.0.4",))
    b = next(r for r in routes if r.host == "mx-b.example.org")
    assert b.addresses == ("127.0.0.3", "::1")


@pytest_twisted.ensureDeferred
async def test_equal_preferences_are_shuffled(resolver):
    firsts = set()
    for seed in range(20):
        routes = await find_routes(resolver, "example.org", rng=random.Random(seed))
        firsts.add(routes[0].host)
    assert firsts == {"mx-a.example.org", "mx-b.example.org"}


@pytest_twisted.ensureDeferred
async def test_implicit_mx_and_address_literal(resolver):
    assert await find_routes(resolver, "implicit.example.org") == [
        Route("implicit.example.org", 0, ("127.0.0.5",))
    ]
    assert await find_routes(resolver, "[127.0.0.9]") == [Route("[127.0.0.9]", 0, ("127.0.0.9",))]
    assert (await find_routes(resolver, "[IPv6:::1]"))[0].addresses == ("::1",)


@pytest_twisted.ensureDeferred
async def test_null_mx_fails_permanently(resolver):
    with pytest.raises(NullMX) as caught:
        await find_routes(resolver, "null.example.org")
    assert (caught.value.code, caught.value.enhanced) == (556, "5.1.10")
    assert not caught.value.temporary


@pytest_twisted.ensureDeferred
async def test_nxdomain_and_dangling_mx_fail_permanently(resolver):
    with pytest.raises(NoRoute):
        await find_routes(resolver, "nope.example.org")
    with pytest.raises(NoRoute):
        await find_routes(resolver, "dangling.example.org")


@pytest_twisted.ensureDeferred
async def test_own_name_drops_itself_and_less_preferred(resolver):
    with pytest.raises(NoRoute, match="loops"):
        await find_routes(resolver, "self.example.org", own_names=["MX.test."])


def test_order_mx_truncates_at_own_name():
    records = [(5, "a"), (10, "me"), (10, "b"), (20, "c")]
    assert order_mx(records, ["me"], random.Random(0)) == [(5, "a")]
    assert [h for _p, h in order_mx(records, [], random.Random(0))][-1] == "c"
