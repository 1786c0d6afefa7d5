"""RFC 5782 (DNS block and allow lists) rows of rfc-conformance/requirements/rfc5782.tsv that
tests/filter/test_dnsbl.py does not already prove: the test entries of §5 asked through our
client, a listing without a TXT record, several A records in one answer, a domain list asked
by A-labels, negative answers cached and failures not, and a listing refused at RCPT with 550
through a real SMTP server (RFC 5321 §4.3.2). Every look-up goes to a real DNS server on
127.0.0.1 (tests/dns_server.py)."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.portal import Portal
from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread

from mailserver.auth.realm import MailRealm, MXTarget
from mailserver.dns import Resolver
from mailserver.filter.dnsbl import DNSBLCheck, Zone, parse_zone
from mailserver.filter.pipeline import FilteringTarget
from mailserver.smtp.factory import SMTPFactory, SMTPPolicy
from mailserver.store.local import LocalDeliveryTarget
from mailserver.types import ACCEPT, Action, Address, Envelope, Peer
from tests.dns_server import Zone as DNSZone
from tests.dns_server import start_dns_server
from tests.filter.test_dnsbl import ClockReactor, CountingResolver, ServfailZone

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
