"""mailserver.filter.signals against a real DNS server on 127.0.0.1: reverse DNS (no PTR,
not forward-confirmed) and HELO (not a FQDN, address mismatch, our own name, no DNS) give
small scores and never refuse; DNS failures and timeouts give nothing; authenticated and
private clients are skipped."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, fail, maybeDeferred
from zope.interface.verify import verifyObject

from mailserver.dns import Resolver
from mailserver.filter.signals import DEFAULT_SCORES, HeloCheck, ReverseDNSCheck, helo_signals
from mailserver.interfaces.filter import ICheck, ICheckSession
from mailserver.types import ACCEPT, Action, Address, Envelope, Peer
from tests.dns_server import Zone, start_dns_server

V6 = ipaddress.ip_address("2001:db8::5")

PTR = {
    "2.0.0.127.in-addr.arpa": [("PTR", "good.example.test")],
    "3.0.0.127.in-addr.arpa": [("PTR", "liar.example.test")],
    "5.0.0.127.in-addr.arpa": [("PTR", "other.example.test"), ("PTR", "five.example.test")],
    "6.0.0.127.in-addr.arpa": [("PTR", "host.fail.test")],
    "7.0.0.127.in-addr.arpa": [("PTR", "host.slow.test")],
    V6.reverse_pointer: [("PTR", "v6.example.test")],
}
HOSTS = {
    "good.example.test": [("A", "127.0.0.2")],
    "liar.example.test": [("A", "127.0.0.99")],
    "other.example.test": [("A", "127.0.0.9")],
    "five.example.test": [("A", "127.0.0.5")],
    "v6.example.test": [("AAAA", str(V6))],
    "mx.example.test": [("AAAA", "2001:db8::25")],
    "empty.example.test": [("TXT", "no addresses here")],
}


class ScopedZone(Zone):
    """Names under ``origin`` get SERVFAIL (``silent=False``) or no answer at all."""

    def __init__(self, origin: str, silent: bool) -> None:
        self.silent = silent
        super().__init__(origin, {})

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any = None) -> Any:
        origin = self._origin.encode()
        if name.lower().endswith(b"." + origin):
            return Deferred() if self.silent else fail(RuntimeError("servfail"))
        return super()._lookup(name, cls, type, timeout)


class ClockReactor:
    """The real reactor for threads, a task.Clock for time and timeouts."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.callLater = clock.callLater

    def seconds(self) -> float:
        return self.clock.seconds()

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


@pytest.fixture
def dns_server():
    zones = [
        Zone("0.0.127.in-addr.arpa", {k: v for k, v in PTR.items() if "127.in-addr" in k}),
        Zone("8.b.d.0.1.0.0.2.ip6.arpa", {V6.reverse_pointer: PTR[V6.reverse_pointer]}),
        Zone("example.test", HOSTS),
        ScopedZone("fail.test", silent=False),
        ScopedZone("slow.test", silent=True),
    ]
    server = start_dns_server(reactor, *zones)
    yield server
    pytest_twisted.blockon(server.stop())


@pytest.fixture
def clock():
    return task.Clock()


@pytest.fixture
def resolver(dns_server, clock):
    return Resolver(ClockReactor(clock), [dns_server.address], timeout=1)


def envelope(helo: str = "", auth: str | None = None) -> Envelope:
    return Envelope(Address("a", "example.org"), helo=helo, authenticated_as=auth)


async def rdns(check: ReverseDNSCheck, address: str) -> Any:
    session = check.session(Peer(address))
    assert session.connect() == ACCEPT
    return await maybeDeferred(session.sender, envelope())


async def helo(check: HeloCheck, name: str, address: str = "127.0.0.2") -> Any:
    session = check.session(Peer(address))
    assert session.connect() == ACCEPT
    assert session.helo(name) == ACCEPT
    return await maybeDeferred(session.sender, envelope(name))


@pytest.fixture
def rdns_check(clock, resolver):
    return ReverseDNSCheck(ClockReactor(clock), resolver, skip_networks=(), timeout=3)


@pytest.fixture
def helo_check(clock, resolver):
    return HeloCheck(ClockReactor(clock), resolver, skip_networks=(), timeout=3,
                     own_names=["MX.Ours.Test."], is_local_domain=lambda d: d == "ours.test")


def test_provides_the_interfaces(rdns_check, helo_check):
    """Both checks are ICheck providers with ICheckSession sessions."""
    for check in (rdns_check, helo_check):
        assert verifyObject(ICheck, check)
        assert verifyObject(ICheckSession, check.session(Peer("127.0.0.2")))


@pytest_twisted.ensureDeferred
async def test_forward_confirmed_client_has_no_signal(rdns_check):
    """A PTR whose name resolves back to the client (any of several names) gives nothing."""
    assert await rdns(rdns_check, "127.0.0.2") == ACCEPT
    assert await rdns(rdns_check, "127.0.0.5") == ACCEPT
    assert await rdns(rdns_check, str(V6)) == ACCEPT


@pytest_twisted.ensureDeferred
async def test_no_ptr_is_rdns_none(rdns_check):
    """No PTR record: RDNS_NONE with its small score; the mail is not refused."""
    verdict = await rdns(rdns_check, "127.0.0.4")
    assert (verdict.action, verdict.check, verdict.rule) == (Action.ACCEPT, "rdns", "RDNS_NONE")
    assert verdict.score == DEFAULT_SCORES["RDNS_NONE"]
    assert verdict.reason == "no PTR record for 127.0.0.4"


@pytest_twisted.ensureDeferred
async def test_ptr_not_resolving_back_is_not_fcrdns(rdns_check):
    """A PTR name whose A records are elsewhere: RDNS_NOT_FCRDNS."""
    verdict = await rdns(rdns_check, "127.0.0.3")
    assert (verdict.rule, verdict.score) == ("RDNS_NOT_FCRDNS", DEFAULT_SCORES["RDNS_NOT_FCRDNS"])
    assert "liar.example.test" in verdict.reason


@pytest_twisted.ensureDeferred
async def test_dns_failures_give_no_signal(clock, rdns_check):
    """SERVFAIL on the forward look-up, or no answer within the timeout, gives nothing."""
    assert await rdns(rdns_check, "127.0.0.6") == ACCEPT
    session = rdns_check.session(Peer("127.0.0.7"))
    session.connect()
    pending = session.sender(envelope())
    clock.advance(3)
    assert await pending == ACCEPT


@pytest_twisted.ensureDeferred
async def test_scores_are_configurable(clock, resolver):
    """Points come from ``scores`` over the defaults; an unknown rule is refused."""
    check = ReverseDNSCheck(ClockReactor(clock), resolver, skip_networks=(),
                            scores={"RDNS_NONE": 2.25})
    assert (await rdns(check, "127.0.0.4")).score == 2.25
    with pytest.raises(ValueError, match="unknown signal 'RDNS_MAYBE'"):
        ReverseDNSCheck(ClockReactor(clock), resolver, scores={"RDNS_MAYBE": 1})


@pytest_twisted.ensureDeferred
async def test_skipped_clients_get_no_signals(clock, resolver):
    """Loopback/private clients (by default) and authenticated ones get no signals."""
    check = ReverseDNSCheck(ClockReactor(clock), resolver)
    assert await rdns(check, "127.0.0.4") == ACCEPT
    assert await helo(HeloCheck(ClockReactor(clock), resolver), "localhost") == ACCEPT
    open_check = ReverseDNSCheck(ClockReactor(clock), resolver, skip_networks=())
    authed = open_check.session(Peer("127.0.0.4", authenticated_as="u@example.org"))
    assert authed.connect() == ACCEPT and authed.sender(envelope()) == ACCEPT
    session = open_check.session(Peer("127.0.0.4"))
    session.connect()
    assert session.sender(envelope(auth="u@example.org")) == ACCEPT


@pytest_twisted.ensureDeferred
async def test_good_helo_has_no_signal(helo_check):
    """A FQDN with an address record, or the client's own address literal, gives nothing."""
    assert await helo(helo_check, "good.example.test") == ACCEPT
    assert await helo(helo_check, "mx.example.test") == ACCEPT  # AAAA only
    assert await helo(helo_check, "[127.0.0.2]") == ACCEPT
    assert await helo(helo_check, "[IPv6:2001:db8::5]", str(V6)) == ACCEPT


@pytest_twisted.ensureDeferred
async def test_helo_signals(helo_check):
    """Each bad greeting gives its rule and the default points."""
    cases = {
        "localhost": "HELO_NOT_FQDN",
        "bad_name!.example": "HELO_NOT_FQDN",
        "[::1]": "HELO_NOT_FQDN",  # IPv6 literals need the IPv6: tag
        "[127.0.0.9]": "HELO_IP_MISMATCH",
        "[IPv6:::1]": "HELO_IP_MISMATCH",
        "127.0.0.9": "HELO_NOT_FQDN,HELO_IP_MISMATCH",
        "127.0.0.2": "HELO_NOT_FQDN",
        "mx.ours.test": "HELO_FORGED_OURS",
        "OURS.TEST": "HELO_FORGED_OURS",
        "nothing.example.test": "HELO_NO_DNS",
        "empty.example.test": "HELO_NO_DNS",
    }
    for name, rules in cases.items():
        verdict = await helo(helo_check, name)
        assert (name, verdict.rule) == (name, rules)
        assert verdict.action is Action.ACCEPT and verdict.check == "helo"
        assert verdict.score == sum(DEFAULT_SCORES[r] for r in rules.split(","))


@pytest_twisted.ensureDeferred
async def test_helo_dns_failure_gives_no_signal(clock, helo_check):
    """HELO names whose look-up fails or never answers get no HELO_NO_DNS."""
    assert await helo(helo_check, "host.fail.test") == ACCEPT
    session = helo_check.session(Peer("127.0.0.2"))
    session.helo("host.slow.test")
    pending = session.sender(envelope("host.slow.test"))
    clock.advance(3)
    assert await pending == ACCEPT


@pytest_twisted.ensureDeferred
async def test_last_greeting_counts(helo_check):
    """A second EHLO replaces the first; without a HELO in the session the envelope's is
    used; an authenticated sender gets nothing."""
    session = helo_check.session(Peer("127.0.0.2"))
    session.helo("localhost")
    session.helo("good.example.test")
    assert await session.sender(envelope("good.example.test")) == ACCEPT
    fresh = helo_check.session(Peer("127.0.0.2"))
    assert (await fresh.sender(envelope("localhost"))).rule == "HELO_NOT_FQDN"
    assert fresh.sender(envelope("localhost", auth="u@example.org")) == ACCEPT


@given(st.ip_addresses(), st.ip_addresses())
def test_address_literals(client, claimed):
    """A literal of the client's address gives nothing; another address is a mismatch."""
    text = f"[IPv6:{claimed}]" if claimed.version == 6 else f"[{claimed}]"
    signals, domain = helo_signals(text, client)
    assert domain is None
    claimed = getattr(claimed, "ipv4_mapped", None) or claimed
    client = getattr(client, "ipv4_mapped", None) or client
    assert [rule for rule, _ in signals] == ([] if claimed == client else ["HELO_IP_MISMATCH"])


@given(st.text(max_size=300))
def test_any_greeting_gives_signals_or_a_domain(text):
    """Whatever the client says, helo_signals answers (never raises): known rules, or a
    lower-case domain to look up."""
    signals, domain = helo_signals(text, ipaddress.ip_address("192.0.2.1"))
    assert all(rule in DEFAULT_SCORES for rule, _ in signals)
    assert domain is None or (domain == domain.lower() and "." in domain and not signals)
