"""mailserver.filter.dnsbl against a real DNS server on 127.0.0.1: listings score or refuse,
error codes and broken answers do not list, allow lists trust, a silent or failing zone is
"not listed", answers are cached for their TTL, and who is never looked up."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from zope.interface.verify import verifyObject

from mailserver.dns import Resolver
from mailserver.filter.addresses import client_ip, reversed_name
from mailserver.filter.dnsbl import DNSBLCheck, Zone, parse_pattern, parse_zone
from mailserver.interfaces.filter import ICheck, ICheckSession
from mailserver.types import ACCEPT, Action, Address, Envelope, Peer
from tests.dns_server import Zone as DNSZone
from tests.dns_server import start_dns_server

V6 = ipaddress.ip_address("2001:db8::2")

RECORDS = {
    "2.0.0.127.bl.test": [("A", "127.0.0.2"), ("TXT", "see https://bl.test/q?127.0.0.2")],
    "10.0.0.127.bl.test": [("A", "127.0.0.10")],
    "3.0.0.127.bl.test": [("A", "127.255.255.254")],  # "query refused" error code
    "4.0.0.127.bl.test": [("A", "10.0.0.1")],  # outside 127/8: a broken zone
    f"{reversed_name(V6)}.bl.test": [("A", "127.0.0.4")],
    "2.0.0.127.wl.test": [("A", "127.0.10.3")],
    "spam.example.dbl.test": [("A", "127.0.1.2")],
}


class SilentZone(DNSZone):
    """Never answers a query under ``origin`` (a list that is down)."""

    def __init__(self, origin: str) -> None:
        super().__init__(origin, {})

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any = None) -> Any:
        return Deferred()


class ServfailZone(DNSZone):
    """Answers SERVFAIL for every name under ``origin``."""

    def __init__(self, origin: str) -> None:
        super().__init__(origin, {})

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any = None) -> Any:
        from twisted.internet.defer import fail

        return fail(RuntimeError("servfail"))


class ClockReactor:
    """The real reactor for threads, a task.Clock for time and timeouts."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.callLater = clock.callLater

    def seconds(self) -> float:
        return self.clock.seconds()

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


class CountingResolver:
    """The real resolver, recording every name asked of it."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.asked: list[tuple[str, str]] = []

    def lookup(self, name: str, rdtype: str) -> Any:
        self.asked.append((name, rdtype))
        return self.resolver.lookup(name, rdtype)

    def txt(self, name: str) -> Any:
        return self.lookup(name, "TXT")


@pytest.fixture
def dns_server():
    zones = [
        DNSZone(origin, {k: v for k, v in RECORDS.items() if k.endswith("." + origin)},
                ttl=300)
        for origin in ("bl.test", "wl.test", "dbl.test")
    ]
    server = start_dns_server(reactor, *zones, SilentZone("slow.test"), ServfailZone("fail.test"))
    yield server
    pytest_twisted.blockon(server.stop())


@pytest.fixture
def clock():
    return task.Clock()


@pytest.fixture
def resolver(dns_server, clock):
    return CountingResolver(
        Resolver(ClockReactor(clock), [dns_server.address], timeout=1, negative_ttl=45)
    )


def make(clock: task.Clock, resolver: Any, *zones: Zone, **kwargs: Any) -> DNSBLCheck:
    kwargs.setdefault("skip_networks", ())
    kwargs.setdefault("selftest_interval", None)  # tests/filter/test_rfc5782.py tests them
    return DNSBLCheck(ClockReactor(clock), resolver, zones, **kwargs)


def envelope(sender: str | None = "someone@example.org", auth: str | None = None) -> Envelope:
    address = Address(*sender.split("@")) if sender else None
    return Envelope(address, helo="mx.example.org", authenticated_as=auth)


async def verdict_for(check: DNSBLCheck, ip: str, sender: str | None = "a@example.org") -> Any:
    session = check.session(Peer(ip))
    assert session.connect() == ACCEPT
    return await session.sender(envelope(sender))


def test_provides_the_interfaces(clock, resolver):
    """DNSBLCheck is an ICheck and its sessions are ICheckSessions."""
    check = make(clock, resolver, Zone("bl.test"))
    assert verifyObject(ICheck, check)
    assert verifyObject(ICheckSession, check.session(Peer("127.0.0.2")))


@pytest_twisted.ensureDeferred
async def test_listed_client_scores_with_the_txt_reason(clock, resolver):
    """A listing in a scoring zone gives its points under DNSBL_<ZONE>, with the TXT reason."""
    verdict = await verdict_for(make(clock, resolver, Zone("bl.test", score=2.5)), "127.0.0.2")
    assert verdict.action is Action.ACCEPT
    assert (verdict.check, verdict.rule, verdict.score) == ("dnsbl", "DNSBL_BL_TEST", 2.5)
    assert "127.0.0.2" in verdict.reason and "see https://bl.test/q?127.0.0.2" in verdict.reason


@pytest_twisted.ensureDeferred
async def test_reject_zone_refuses_in_postfix_words(clock, resolver):
    """A listing in a reject zone is REJECT 554 5.7.1 naming the client and the zone."""
    verdict = await verdict_for(make(clock, resolver, Zone("bl.test", reject=True)), "127.0.0.2")
    assert verdict.action is Action.REJECT
    assert (verdict.code, verdict.enhanced) == (554, "5.7.1")
    assert verdict.text == (
        "Service unavailable; client [127.0.0.2] blocked using bl.test; "
        "see https://bl.test/q?127.0.0.2"
    )


@pytest_twisted.ensureDeferred
async def test_unlisted_client_is_accepted(clock, resolver):
    """NXDOMAIN at the zone means not listed: ACCEPT with no rule."""
    assert await verdict_for(make(clock, resolver, Zone("bl.test", reject=True)),
                             "127.0.0.9") == ACCEPT


@pytest_twisted.ensureDeferred
async def test_error_codes_and_answers_outside_127_are_not_listings(clock, resolver):
    """127.255.255.x ("query refused") and an answer outside 127/8 count as not listed."""
    check = make(clock, resolver, Zone("bl.test", reject=True))
    assert await verdict_for(check, "127.0.0.3") == ACCEPT
    assert await verdict_for(check, "127.0.0.4") == ACCEPT
    assert ("3.0.0.127.bl.test", "A") in resolver.asked


@pytest_twisted.ensureDeferred
async def test_return_code_pattern_selects_listings(clock, resolver):
    """With a pattern only the matching return codes list (127.0.0.10 is outside [2..3])."""
    check = make(clock, resolver, parse_zone("bl.test=127.0.0.[2..3]*4 reject"))
    assert (await verdict_for(check, "127.0.0.2")).action is Action.REJECT
    assert await verdict_for(check, "127.0.0.10") == ACCEPT


@pytest_twisted.ensureDeferred
async def test_ipv6_client_is_looked_up_by_nibbles(clock, resolver):
    """An IPv6 client is asked as 32 reversed nibbles (RFC 5782 §2.4)."""
    verdict = await verdict_for(make(clock, resolver, Zone("bl.test")), f"[IPv6:{V6}]")
    assert verdict.rule == "DNSBL_BL_TEST"


@pytest_twisted.ensureDeferred
async def test_trusted_allow_list_overrides_a_block_listing(clock, resolver):
    """A trusted DNSWL listing marks the client trusted, subtracts its points and drops the
    block list's REJECT; both rules are named."""
    check = make(clock, resolver, Zone("bl.test", score=3, reject=True),
                 allow_zones=[Zone("wl.test", score=-5, trusted=True)])
    verdict = await verdict_for(check, "127.0.0.2")
    assert verdict.action is Action.ACCEPT and verdict.trusted
    assert verdict.rule == "DNSBL_BL_TEST,DNSWL_WL_TEST" and verdict.score == -2


@pytest_twisted.ensureDeferred
async def test_untrusted_allow_list_only_scores(clock, resolver):
    """An allow-list zone not marked trusted only gives its (negative) points."""
    check = make(clock, resolver, allow_zones=[parse_zone("wl.test*-1.5")])
    verdict = await verdict_for(check, "127.0.0.2")
    assert (verdict.rule, verdict.score, verdict.trusted) == ("DNSWL_WL_TEST", -1.5, False)


@pytest_twisted.ensureDeferred
async def test_silent_zone_times_out_as_not_listed(clock, resolver):
    """A zone that never answers is "not listed" once the timeout passes on the reactor's
    clock; the other zones' answers still count."""
    check = make(clock, resolver, Zone("slow.test", reject=True), Zone("bl.test"), timeout=3)
    for rdtype in ("A", "TXT"):  # bl.test's answers in the resolver's cache: given at once
        await resolver.lookup("2.0.0.127.bl.test", rdtype)
    session = check.session(Peer("127.0.0.2"))
    session.connect()
    pending = session.sender(envelope())
    assert not pending.called
    clock.advance(3)
    verdict = await pending
    assert verdict.action is Action.ACCEPT and verdict.rule == "DNSBL_BL_TEST"


@pytest_twisted.ensureDeferred
async def test_servfail_is_not_listed(clock, resolver):
    """SERVFAIL from a zone counts as not listed."""
    check = make(clock, resolver, Zone("fail.test", reject=True))
    assert await verdict_for(check, "127.0.0.2") == ACCEPT
    assert ("2.0.0.127.fail.test", "A") in resolver.asked


@pytest_twisted.ensureDeferred
async def test_answers_are_cached_for_their_ttl(clock, resolver):
    """A second connection from the same address asks nothing until the TTL has passed."""
    check = make(clock, resolver, Zone("bl.test"))
    await verdict_for(check, "127.0.0.2")
    asked = len(resolver.asked)
    assert (await verdict_for(check, "127.0.0.2")).rule == "DNSBL_BL_TEST"
    assert len(resolver.asked) == asked
    clock.advance(301)
    assert (await verdict_for(check, "127.0.0.2")).rule == "DNSBL_BL_TEST"
    assert len(resolver.asked) > asked


@pytest_twisted.ensureDeferred
async def test_cache_is_bounded(clock, resolver):
    """With room for one answer, the older address is asked again."""
    check = make(clock, resolver, Zone("bl.test"), cache_size=1, txt=False)
    for ip in ("127.0.0.2", "127.0.0.9", "127.0.0.2"):
        await verdict_for(check, ip)
    assert resolver.asked.count(("2.0.0.127.bl.test", "A")) == 2


@pytest_twisted.ensureDeferred
async def test_one_lookup_serves_every_message_of_a_connection(clock, resolver):
    """connect() starts the look-ups; each MAIL of the connection gets the same verdict."""
    check = make(clock, resolver, Zone("bl.test"), txt=False)
    session = check.session(Peer("127.0.0.2"))
    session.connect()
    first = await session.sender(envelope())
    second = await session.sender(envelope())
    assert first == second and first.rule == "DNSBL_BL_TEST"
    assert resolver.asked == [("2.0.0.127.bl.test", "A")]


@pytest_twisted.ensureDeferred
async def test_private_and_authenticated_clients_are_not_looked_up(clock, resolver):
    """Loopback/private addresses (by default), authenticated peers and non-addresses are
    never looked up; an authenticated sender gets ACCEPT whatever the lists say."""
    check = DNSBLCheck(ClockReactor(clock), resolver, [Zone("bl.test", reject=True)],
                       selftest_interval=None)
    assert await verdict_for(check, "127.0.0.2") == ACCEPT
    assert await verdict_for(check, "192.168.1.2") == ACCEPT
    open_check = make(clock, resolver, Zone("bl.test", reject=True))
    authed = open_check.session(Peer("127.0.0.2", authenticated_as="u@example.org"))
    assert authed.connect() == ACCEPT
    assert authed.sender(envelope()) == ACCEPT
    assert await verdict_for(open_check, "not-an-address") == ACCEPT
    assert resolver.asked == []
    session = open_check.session(Peer("127.0.0.2"))
    session.connect()  # not authenticated yet: the look-up starts
    assert session.sender(envelope(auth="u@example.org")) == ACCEPT


@pytest_twisted.ensureDeferred
async def test_sender_domain_on_a_domain_list(clock, resolver):
    """RHSBL: the MAIL FROM domain listed on a domain zone refuses; the null sender and other
    domains are not asked about or not listed."""
    check = make(clock, resolver, domain_zones=[Zone("dbl.test", reject=True)])
    verdict = await verdict_for(check, "127.0.0.2", "x@Spam.Example")
    assert verdict.action is Action.REJECT and verdict.rule == "RHSBL_DBL_TEST"
    assert verdict.text == "Service unavailable; sender domain spam.example blocked using dbl.test"
    assert await verdict_for(check, "127.0.0.2", None) == ACCEPT
    assert await verdict_for(check, "127.0.0.2", "x@ham.example") == ACCEPT


def test_parse_zone_forms():
    """The config form NAME[=PATTERN][*SCORE][ reject][ trusted]; bad forms say why."""
    assert parse_zone("zen.spamhaus.org") == Zone("zen.spamhaus.org", 1.0)
    assert parse_zone("Zen.Spamhaus.Org.=127.0.0.[2..11]*3 reject") == Zone(
        "zen.spamhaus.org", 3.0, reject=True, codes="127.0.0.[2..11]"
    )
    assert parse_zone("list.dnswl.org*-2 trusted", -1) == Zone("list.dnswl.org", -2.0,
                                                               trusted=True)
    for bad, words in [("", "empty"), ("bl.test*x", "number"), ("bl.test block", "flag"),
                       ("nodot", "zone name"), ("bl.test=127.0.0", "four octets"),
                       ("bl.test=127.0.0.[3..2]", "bad octet")]:
        with pytest.raises(ValueError, match=words):
            parse_zone(bad)


def test_parse_pattern():
    """Octets are numbers or bracketed lists of numbers and ranges."""
    assert parse_pattern("127.0.[0;2].[2..4;9]") == (
        frozenset({127}), frozenset({0}), frozenset({0, 2}), frozenset({2, 3, 4, 9})
    )


@given(st.ip_addresses())
def test_reversed_name_is_the_reverse_pointer_without_its_suffix(address):
    """reversed_name is the in-addr.arpa / ip6.arpa name without the suffix (RFC 5782)."""
    name = reversed_name(address)
    suffix = ".in-addr.arpa" if address.version == 4 else ".ip6.arpa"
    assert name + suffix == address.reverse_pointer
    assert len(name.split(".")) == (4 if address.version == 4 else 32)


@given(st.ip_addresses())
def test_client_ip_reads_every_spelling(address):
    """Plain, bracketed and IPv6:-tagged spellings give the same address; IPv4-mapped IPv6
    is its IPv4 address."""
    expected = getattr(address, "ipv4_mapped", None) or address
    assert client_ip(str(address)) == expected
    tagged = f"[IPv6:{address}]" if address.version == 6 else f"[{address}]"
    assert client_ip(tagged) == expected
    if address.version == 4:
        assert client_ip(f"::ffff:{address}") == address


@given(st.text(max_size=100))
def test_parse_zone_refuses_with_value_error_only(text):
    """Any config text is a Zone or a ValueError, never another exception."""
    try:
        zone = parse_zone(text)
    except ValueError:
        return
    assert zone.name == zone.name.lower() and "." in zone.name


@given(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), min_size=1, max_size=3),
       st.floats(-100, 100, allow_nan=False))
def test_parse_zone_round_trip(ranges, score):
    """A zone written in the config form reads back with its pattern and points."""
    octet = "[" + ";".join(f"{min(r)}..{max(r)}" for r in ranges) + "]"
    zone = parse_zone(f"bl.example=127.0.0.{octet}*{score!r} reject")
    assert zone == Zone("bl.example", score, reject=True, codes=f"127.0.0.{octet}")
    allowed = parse_pattern(zone.codes)[3]
    assert allowed == {n for r in ranges for n in range(min(r), max(r) + 1)}
