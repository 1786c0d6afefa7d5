"""RFC 5782 (DNS block and allow lists) rows of rfc-conformance/requirements/rfc5782.tsv that
tests/filter/test_dnsbl.py does not already prove: the test entries of §5 asked through our
client, a listing without a TXT record, several A records in one answer, a domain list asked
by A-labels, negative answers cached and failures not, and a listing refused at RCPT with 550
through a real SMTP server (RFC 5321 §4.3.2); and the zones' self-tests with the §5 test
entries (a wildcarded list is ignored until it is fixed). Every look-up goes to a real DNS
server on 127.0.0.1 (tests/dns_server.py)."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.portal import Portal
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs, formatEvent
from twisted.names import dns

from mailserver.auth.realm import MailRealm, MXTarget
from mailserver.dns import Resolver
from mailserver.filter.dnsbl import DNSBLCheck, DNSBLSelfTests, Zone, parse_zone
from mailserver.filter.pipeline import FilteringTarget
from mailserver.smtp.factory import SMTPFactory, SMTPPolicy
from mailserver.store.local import LocalDeliveryTarget
from mailserver.types import ACCEPT, Action, Address, Envelope, Peer
from tests.dns_server import Zone as DNSZone
from tests.dns_server import start_dns_server
from tests.filter.test_dnsbl import ClockReactor, CountingResolver, ServfailZone, SilentZone

RECORDS = {
    # RFC 5782 §5: an IPv4 list MUST list 127.0.0.2 and MUST NOT list 127.0.0.1
    "2.0.0.127.bl.test": [("A", "127.0.0.2"), ("TXT", "test entry")],
    # a listing with no TXT record (TXT is optional, §2.1)
    "10.0.0.127.bl.test": [("A", "127.0.0.10")],
    # two sublists in one answer (several A records, §2.3)
    "5.0.0.127.bl.test": [("A", "127.0.0.2"), ("A", "127.0.0.4")],
    # §5 for domain lists: TEST is listed, INVALID is not
    "test.dbl.test": [("A", "127.0.1.2")],
    "xn--bcher-kva.example.dbl.test": [("A", "127.0.1.2")],
}


@pytest.fixture
def dns_server() -> Iterator[Any]:
    zones = [
        DNSZone(origin, {k: v for k, v in RECORDS.items() if k.endswith("." + origin)},
                ttl=300, negative_ttl=60)
        for origin in ("bl.test", "dbl.test")
    ]
    server = start_dns_server(reactor, *zones, ServfailZone("fail.test"))
    yield server
    pytest_twisted.blockon(server.stop())


@pytest.fixture
def clock() -> task.Clock:
    return task.Clock()


@pytest.fixture
def resolver(dns_server: Any, clock: task.Clock) -> CountingResolver:
    return CountingResolver(
        Resolver(ClockReactor(clock), [dns_server.address], timeout=1, negative_ttl=45)
    )


def make(clock: task.Clock, resolver: Any, *zones: Zone, **kwargs: Any) -> DNSBLCheck:
    kwargs.setdefault("skip_networks", ())  # the test entries live in 127/8
    kwargs.setdefault("selftest_interval", None)  # the self-tests have their own tests below
    return DNSBLCheck(ClockReactor(clock), resolver, zones, **kwargs)


async def verdict_for(check: DNSBLCheck, ip: str, sender: str | None = "a@example.org") -> Any:
    session = check.session(Peer(ip))
    session.connect()
    address = Address(*sender.rsplit("@", 1)) if sender else None
    return await session.sender(Envelope(address, helo="mx.example.org"))


@pytest_twisted.ensureDeferred
async def test_test_entries_answer_as_section_5_says(clock, resolver) -> None:
    """Through our client, the §5 test entries give what a conforming list promises:
    127.0.0.2 listed (also when the client arrives as IPv4-mapped IPv6, which is asked in
    its IPv4 form), 127.0.0.1 not listed; on a domain list TEST listed, INVALID not."""
    check = make(clock, resolver, Zone("bl.test"), domain_zones=[Zone("dbl.test")])
    listed = await verdict_for(check, "127.0.0.2")
    assert listed.rule == "DNSBL_BL_TEST" and "127.0.0.2" in listed.reason
    assert (await verdict_for(check, "::ffff:127.0.0.2")).rule == "DNSBL_BL_TEST"
    assert await verdict_for(check, "127.0.0.1") == ACCEPT
    assert ("1.0.0.127.bl.test", "A") in resolver.asked
    assert (await verdict_for(check, "127.0.0.1", "x@TEST")).rule == "RHSBL_DBL_TEST"
    assert await verdict_for(check, "127.0.0.1", "x@invalid") == ACCEPT
    assert ("invalid.dbl.test", "A") in resolver.asked


@pytest_twisted.ensureDeferred
async def test_txt_is_optional_and_asked_only_for_a_listing(clock, resolver) -> None:
    """A listing without a TXT record still lists (the reply just has no reason); TXT is
    asked only after an A record lists, never for an address that is not listed."""
    check = make(clock, resolver, Zone("bl.test", reject=True))
    verdict = await verdict_for(check, "127.0.0.10")
    assert verdict.action is Action.REJECT and (verdict.code, verdict.enhanced) == (554, "5.7.1")
    assert verdict.text == "Service unavailable; client [127.0.0.10] blocked using bl.test"
    assert ("10.0.0.127.bl.test", "TXT") in resolver.asked
    assert await verdict_for(check, "127.0.0.9") == ACCEPT
    assert ("9.0.0.127.bl.test", "TXT") not in resolver.asked


@pytest_twisted.ensureDeferred
async def test_every_a_record_of_an_answer_is_matched(clock, resolver) -> None:
    """An answer with several A records (sublists) lists when any one of them matches the
    zone's return-code pattern; only the matching codes are named."""
    only_4 = make(clock, resolver, parse_zone("bl.test=127.0.0.4"), txt=False)
    verdict = await verdict_for(only_4, "127.0.0.5")
    assert verdict.rule == "DNSBL_BL_TEST"
    assert "(127.0.0.4)" in verdict.reason
    both = make(clock, resolver, Zone("bl.test"), txt=False)
    assert "(127.0.0.2, 127.0.0.4)" in (await verdict_for(both, "127.0.0.5")).reason
    none = make(clock, resolver, parse_zone("bl.test=127.0.0.[8..9]"), txt=False)
    assert await verdict_for(none, "127.0.0.5") == ACCEPT


@pytest_twisted.ensureDeferred
async def test_domain_list_is_asked_by_a_labels(clock, resolver) -> None:
    """An internationalised MAIL FROM domain is asked in its lower-case A-label form; a domain
    too long to be asked under the zone is "not listed", not an error."""
    check = make(clock, resolver, domain_zones=[Zone("dbl.test", reject=True)])
    verdict = await verdict_for(check, "127.0.0.9", "x@Bücher.Example")
    assert verdict.action is Action.REJECT and verdict.rule == "RHSBL_DBL_TEST"
    assert ("xn--bcher-kva.example.dbl.test", "A") in resolver.asked
    long_domain = ".".join(["a" * 60] * 4)  # 243 characters: over 255 with ".dbl.test"
    assert await verdict_for(check, "127.0.0.9", f"x@{long_domain}") == ACCEPT


@pytest_twisted.ensureDeferred
async def test_not_listed_is_cached_for_the_negative_ttl_and_failures_are_not(
    clock: task.Clock, resolver: CountingResolver
) -> None:
    """NXDOMAIN ("not listed") is kept for its negative TTL like any answer (twisted.names
    sends no SOA with NXDOMAIN, so it is the resolver's fallback, 45 s here); a SERVFAIL is
    not kept: the next connection asks again."""
    check = make(clock, resolver, Zone("bl.test"), Zone("fail.test"), txt=False)
    assert await verdict_for(check, "127.0.0.9") == ACCEPT
    assert resolver.asked.count(("9.0.0.127.bl.test", "A")) == 1
    assert resolver.asked.count(("9.0.0.127.fail.test", "A")) == 1
    clock.advance(44)
    assert await verdict_for(check, "127.0.0.9") == ACCEPT
    assert resolver.asked.count(("9.0.0.127.bl.test", "A")) == 1
    assert resolver.asked.count(("9.0.0.127.fail.test", "A")) == 2
    clock.advance(2)
    assert await verdict_for(check, "127.0.0.9") == ACCEPT
    assert resolver.asked.count(("9.0.0.127.bl.test", "A")) == 2


# -- through a real SMTP server --------------------------------------------------------------


@pytest.fixture
def smtp_server(storage: Any, dns_server: Any) -> Iterator[int]:
    """Our SMTP server on 127.0.0.1 with the DNSBL check (reject zone bl.test, real reactor and
    resolver) in its filter pipeline, in front of the MX policy and the maildir store."""
    wait = pytest_twisted.blockon
    wait(storage.directory.add_domain("example.org"))
    wait(storage.directory.add_user("alice@example.org", "pw"))
    wait(storage.store.create_account("alice@example.org"))
    check = DNSBLCheck(reactor, Resolver(reactor, [dns_server.address], timeout=2),
                       [Zone("bl.test", reject=True)], skip_networks=(), timeout=3)
    local = LocalDeliveryTarget(storage.store, storage.directory)

    def avatar() -> FilteringTarget:
        mx = MXTarget(local, storage.directory, "postmaster@example.org")
        return FilteringTarget(mx, [check], reactor)

    portal = Portal(MailRealm(avatar), [AllowAnonymousAccess()])
    factory = SMTPFactory(portal, SMTPPolicy(hostname="mx.test"), None, reactor=reactor)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    yield port.getHost().port
    check.stop()  # the zone self-tests started at the first connection
    wait(port.stopListening())


def rcpt_from(source: str, port: int) -> tuple[int, bytes]:
    """Connect from ``source`` (any 127.x address is ours on loopback) and say RCPT."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(source, 0)) as client:
        client.ehlo("client.example.net")
        client.mail("bob@example.net")
        return client.rcpt("alice@example.org")


@pytest_twisted.ensureDeferred
async def test_listed_client_is_refused_at_rcpt_with_550(smtp_server) -> None:
    """The §5 test entry 127.0.0.2 on a reject zone is refused at RCPT with 550 5.7.1 and the
    list's TXT: the check's 554 is given as 550 at RCPT (RFC 5321 §4.3.2 lists no 554 there);
    127.0.0.1, which no list may list, is accepted."""
    code, text = await deferToThread(rcpt_from, "127.0.0.2", smtp_server)
    assert code == 550
    assert text == (b"5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.test; "
                    b"test entry")
    code, _ = await deferToThread(rcpt_from, "127.0.0.1", smtp_server)
    assert code == 250


# -- the zones' self-tests with the §5 test entries --------------------------------------------

CLIENT = "192.0.2.99"  # outside the default skip_networks; 99.2.0.192.<zone> when listed
SELFTEST_RECORDS = {
    "ok.test": {"2.0.0.127.ok.test": [("A", "127.0.0.2")],
                "99.2.0.192.ok.test": [("A", "127.0.0.4")]},
    "notest.test": {"99.2.0.192.notest.test": [("A", "127.0.0.4")]},
    "dbl.test": {"test.dbl.test": [("A", "127.0.1.2")],
                 "spam.example.dbl.test": [("A", "127.0.1.2")]},
}


class WildcardZone(DNSZone):
    """A list shut down and wildcarded: every name under ``origin`` without records of its own
    answers the ``wildcard`` A records. Both ``wildcard`` and ``silent`` (answer nothing: the
    list is unreachable) may change while the server runs, and so may ``records``."""

    def __init__(self, origin: str) -> None:
        super().__init__(origin, {}, ttl=60, negative_ttl=45)
        self.wildcard: tuple[str, ...] = ("127.0.0.2",)
        self.silent = False

    def set(self, name: str, address: str) -> None:
        """Give ``name`` an A record of its own."""
        self.records[name.encode()] = [dns.Record_A(address, ttl=60)]

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any = None) -> Any:
        if self.silent:
            return Deferred()
        if self.wildcard and name.lower() not in self.records:
            answers = [dns.RRHeader(name, dns.A, dns.IN, 60, dns.Record_A(v), auth=True)
                       for v in self.wildcard] if type == dns.A else []
            return succeed((answers, [], []))
        return super()._lookup(name, cls, type, timeout)


@pytest.fixture
def wild() -> dict[str, WildcardZone]:
    return {origin: WildcardZone(origin) for origin in ("wild.test", "wildwl.test", "wilddbl.test")}


@pytest.fixture
def selftest_resolver(clock: task.Clock, wild: dict[str, WildcardZone]) -> Iterator[Any]:
    zones = [DNSZone(origin, records, ttl=60, negative_ttl=45)
             for origin, records in SELFTEST_RECORDS.items()]
    server = start_dns_server(reactor, *zones, *wild.values(), SilentZone("silent.test"))
    yield CountingResolver(
        Resolver(ClockReactor(clock), [server.address], timeout=1, negative_ttl=45)
    )
    pytest_twisted.blockon(server.stop())


def selftesting(clock: task.Clock, resolver: Any, *zones: Zone, **kwargs: Any) -> DNSBLCheck:
    """A check with self-tests every 600 s and the default skip_networks (which exclude 127/8:
    the self-tests ask the test entries all the same)."""
    kwargs.setdefault("selftest_interval", 600)
    return DNSBLCheck(ClockReactor(clock), resolver, zones, timeout=3, **kwargs)


def messages(events: Any) -> list[str]:
    return [formatEvent(e) for e in events]


@pytest_twisted.ensureDeferred
async def test_healthy_zone_passes_its_self_test_on_schedule_and_is_used(
    clock: task.Clock, selftest_resolver: CountingResolver
) -> None:
    """start() asks 127.0.0.2 (listed), 127.0.0.1 and ::ffff:127.0.0.1 (not listed) under the
    zone, though skip_networks holds 127/8; the zone is "ok" and refuses a listed client. The
    self-test comes back every selftest_interval on the reactor's clock, and after stop()
    nothing is asked or scheduled any more."""
    check = selftesting(clock, selftest_resolver, Zone("ok.test", reject=True))
    assert check.zone_status() == {"ok.test": "unchecked"}
    assert await check.start() == {"ok.test": "ok"}
    v6 = "1.0.0.0.0.0.f.7.f.f.f.f" + ".0" * 20 + ".ok.test"
    for name in ("2.0.0.127.ok.test", "1.0.0.127.ok.test", v6):
        assert selftest_resolver.asked.count((name, "A")) == 1
    assert (await verdict_for(check, CLIENT)).action is Action.REJECT
    clock.advance(600)
    assert await check.selftest() == {"ok.test": "ok"}
    assert selftest_resolver.asked.count(("1.0.0.127.ok.test", "A")) == 2
    check.stop()
    assert clock.getDelayedCalls() == []
    clock.advance(600)
    assert selftest_resolver.asked.count(("1.0.0.127.ok.test", "A")) == 2


@pytest_twisted.ensureDeferred
async def test_wildcard_zone_is_ignored_until_it_is_fixed(
    clock: task.Clock, selftest_resolver: CountingResolver, wild: dict[str, WildcardZone]
) -> None:
    """A reject zone that lists everything, 127.0.0.1 included, is "broken": a warning names
    the zone and why, it is no longer asked and refuses nobody. Once fixed, the next scheduled
    self-test passes and its listings count again."""
    check = selftesting(clock, selftest_resolver, Zone("wild.test", reject=True))
    with capturedLogs() as events:
        assert await check.start() == {"wild.test": "broken: 127.0.0.1 listed"}
    assert any("wild.test is broken" in m and "127.0.0.1 listed" in m and "ignored" in m
               for m in messages(events))
    assert await verdict_for(check, CLIENT) == ACCEPT
    assert ("99.2.0.192.wild.test", "A") not in selftest_resolver.asked
    zone = wild["wild.test"]
    zone.wildcard = ()
    zone.set("2.0.0.127.wild.test", "127.0.0.2")
    zone.set("99.2.0.192.wild.test", "127.0.0.4")
    with capturedLogs() as events:
        clock.advance(600)
        assert await check.selftest() == {"wild.test": "ok"}
    assert any("passes its self-test again" in m for m in messages(events))
    verdict = await verdict_for(check, CLIENT)
    assert verdict.action is Action.REJECT and verdict.rule == "DNSBL_WILD_TEST"
    check.stop()
    assert clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_first_connection_waits_for_the_first_self_test(
    clock: task.Clock, selftest_resolver: CountingResolver
) -> None:
    """Without start(), the first connection starts the self-tests, and its verdict waits for
    the first one: a wildcarded reject zone never refuses even the first client."""
    check = selftesting(clock, selftest_resolver, Zone("wild.test", reject=True))
    for rdtype in ("A", "TXT"):  # the client's answers in the resolver's cache: given at once
        await selftest_resolver.lookup("99.2.0.192.wild.test", rdtype)
    assert await verdict_for(check, CLIENT) == ACCEPT
    assert check.zone_status() == {"wild.test": "broken: 127.0.0.1 listed"}
    assert len(clock.getDelayedCalls()) == 1  # the next self-test
    check.stop()
    assert clock.getDelayedCalls() == []
    await verdict_for(check, CLIENT)  # a connection after stop() does not restart them
    assert clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_zone_without_test_entry_is_used_with_a_warning(
    clock: task.Clock, selftest_resolver: CountingResolver
) -> None:
    """A zone that does not list 127.0.0.2 (but not 127.0.0.1 either) is logged and still
    used: its listings refuse."""
    check = selftesting(clock, selftest_resolver, Zone("notest.test", reject=True))
    with capturedLogs() as events:
        status = await check.start()
    assert status == {"notest.test": "no test entry: 127.0.0.2 not listed"}
    assert any("notest.test: no test entry" in m and "still used" in m
               for m in messages(events))
    assert (await verdict_for(check, CLIENT)).action is Action.REJECT
    check.stop()


@pytest_twisted.ensureDeferred
async def test_unreachable_zone_keeps_its_state(
    clock: task.Clock, selftest_resolver: CountingResolver, wild: dict[str, WildcardZone]
) -> None:
    """A self-test with no answer (the per-zone timeout on the reactor's clock) is logged and
    changes nothing: a zone never tested stays "unchecked" (and used), a broken one stays
    broken."""
    silent = selftesting(clock, selftest_resolver, Zone("silent.test", reject=True))
    first = silent.start()
    with capturedLogs() as events:
        clock.advance(3)
        assert await first == {"silent.test": "unchecked"}
    assert any("silent.test: self-test failed (no answer within 3s)" in m
               for m in messages(events))
    silent.stop()
    check = selftesting(clock, selftest_resolver, Zone("wild.test", reject=True))
    assert await check.start() == {"wild.test": "broken: 127.0.0.1 listed"}
    wild["wild.test"].silent = True
    clock.advance(600)
    running = check.selftest()  # the scheduled one, waiting for its answers
    assert not running.called
    clock.advance(3)
    assert await running == {"wild.test": "broken: 127.0.0.1 listed"}
    assert await verdict_for(check, CLIENT) == ACCEPT
    check.stop()
    assert clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_domain_zone_listing_invalid_is_broken(
    clock: task.Clock, selftest_resolver: CountingResolver
) -> None:
    """RHSBL: a domain zone must list TEST and not INVALID; one that lists INVALID is broken
    and its listing of the sender's domain refuses nothing, while a healthy one still counts."""
    check = selftesting(clock, selftest_resolver, domain_zones=[
        Zone("wilddbl.test", reject=True), Zone("dbl.test", score=2)])
    assert await check.start() == {"wilddbl.test": "broken: invalid listed", "dbl.test": "ok"}
    assert ("test.dbl.test", "A") in selftest_resolver.asked
    verdict = await verdict_for(check, CLIENT, "x@spam.example")
    assert verdict.action is Action.ACCEPT
    assert (verdict.rule, verdict.score) == ("RHSBL_DBL_TEST", 2)
    check.stop()


@pytest_twisted.ensureDeferred
async def test_broken_allow_list_trusts_nobody(
    clock: task.Clock, selftest_resolver: CountingResolver
) -> None:
    """Allow lists are self-tested too: a wildcarded trusted DNSWL would trust every client
    and override every refusal; broken, it gives neither points nor trust."""
    check = selftesting(clock, selftest_resolver, Zone("ok.test", reject=True),
                        allow_zones=[Zone("wildwl.test", score=-5, trusted=True)])
    assert await check.start() == {"ok.test": "ok", "wildwl.test": "broken: 127.0.0.1 listed"}
    verdict = await verdict_for(check, CLIENT)
    assert verdict.action is Action.REJECT and not verdict.trusted
    assert verdict.rule == "DNSBL_OK_TEST"
    check.stop()


@pytest_twisted.ensureDeferred
async def test_selftests_can_be_turned_off(
    clock: task.Clock, selftest_resolver: CountingResolver, wild: dict[str, WildcardZone]
) -> None:
    """selftest_interval None or 0: nothing is asked or scheduled, zones stay "unchecked" and
    are used as they answer."""
    for interval in (None, 0):
        check = selftesting(clock, selftest_resolver, Zone("wild.test", reject=True),
                            selftest_interval=interval)
        assert await check.start() == {"wild.test": "unchecked"}
        assert (await verdict_for(check, CLIENT)).action is Action.REJECT
        assert clock.getDelayedCalls() == []
    assert ("1.0.0.127.wild.test", "A") not in selftest_resolver.asked


@pytest_twisted.ensureDeferred
async def test_selftests_run_as_a_service(
    clock: task.Clock, selftest_resolver: CountingResolver
) -> None:
    """DNSBLSelfTests starts the self-tests with the service and stops them with it: nothing is
    left scheduled, and the zone states stay for diagnostics."""
    check = selftesting(clock, selftest_resolver, Zone("ok.test"), Zone("wild.test"))
    service = DNSBLSelfTests(check)
    service.startService()
    assert await check.selftest() == {"ok.test": "ok", "wild.test": "broken: 127.0.0.1 listed"}
    assert len(clock.getDelayedCalls()) == 1
    service.stopService()
    assert clock.getDelayedCalls() == []
    assert check.zone_status()["wild.test"] == "broken: 127.0.0.1 listed"


def test_selftest_service_lives_in_its_own_module() -> None:
    """DNSBLSelfTests is importable from mailserver.filter.dnsbl_selftest, where the self-tests
    live, and the same class from mailserver.filter.dnsbl (the check's public API)."""
    from mailserver.filter import dnsbl_selftest

    assert dnsbl_selftest.DNSBLSelfTests is DNSBLSelfTests
