"""SPF evaluation on random records served by a real DNS server: whatever the records, the
client and the sender, check_host() ends in one of the seven RFC 7208 §2.6 results, never an
exception (hypothesis; the zone is rewritten in place between examples)."""

from __future__ import annotations

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.names import dns

from mailserver.dns import Resolver
from mailserver.msgauth.spf import SPFChecker
from tests.msgauth.conftest import serve

RESULTS = {"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"}
NAMES = ("example.net", "inc.example.net", "red.example.net", "exp.example.net")

TERMS = st.sampled_from(
    [
        "a",
        "mx",
        "ptr",
        "-all",
        "~all",
        "?all",
        "+all",
        "a/24",
        "mx//64",
        "a:%{d}",
        "include:inc.example.net",
        "include:%{d2}",
        "redirect=red.example.net",
        "exists:%{i}.x.example.net",
        "exists:%{ir}.%{v}.%{l1r-}.example.net",
        "ptr:%{o}",
        "exists:%{p}.example.net",
        "ip4:192.0.2.0/24",
        "ip6:2001:db8::/32",
        "exp=exp.example.net",
        "include:x.servfail.test",
        "a:nowhere.example.net",
        "redirect=%{d}",
        "include:example.net",
        "mx:%{h}",
        "unknown=%{s}",
    ]
)
RECORD = st.lists(st.one_of(TERMS, TERMS, TERMS, st.text(min_size=1, max_size=12)), max_size=6).map(
    lambda terms: "v=spf1 " + " ".join(terms)
)


@pytest.fixture(scope="module")
def dns_zone():
    server = serve({name: [("TXT", "v=spf1")] for name in NAMES}, ("example.net",))
    yield server
    pytest_twisted.blockon(server.stop())


def zone_of(server):
    return next(z for z in server.ports[1].factory.resolver.resolvers if z._origin == "example.net")


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    records=st.tuples(*[RECORD for _ in NAMES]),
    ip=st.sampled_from(["192.0.2.10", "2001:db8::1", "::ffff:192.0.2.3", "10.0.0.1"]),
    sender=st.sampled_from(["a@example.net", "example.net", "x.y-z+w@example.net", None]),
)
@pytest_twisted.ensureDeferred
async def test_any_records_end_in_a_result(dns_zone, records, ip, sender) -> None:
    """Every evaluation returns an RFC 7208 result; check() wraps it in an AuthResult."""
    zone = zone_of(dns_zone)
    for name, text in zip(NAMES, records):
        record = dns.Record_TXT(text.encode("utf-8", "replace"), ttl=0)
        zone.records[name.encode()] = [record]
    checker = SPFChecker(Resolver(reactor, [dns_zone.address], timeout=2))
    result = await checker.check(ip, sender, "mail.example.net")
    assert result.result in RESULTS, result
