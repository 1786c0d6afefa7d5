"""mailserver.filter.greylist on a real index with a task.Clock: a new triplet gets 450, an
early retry too, a retry after the delay passes; the retry window and the maximum age expire
records; clients are auto-allowed after N passes; null senders, IPv4 /24 and IPv6 /64
grouping, exemptions, pruning; and a known-good sender domain with SPF pass (served by a real
DNS server on 127.0.0.1) skips greylisting."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from zope.interface.verify import verifyObject

from mailserver.db import Database
from mailserver.dns import Resolver
from mailserver.filter.greylist import (
    GreylistCheck,
    GreylistCounts,
    GreylistSettings,
    client_network,
    sender_key,
    settings_from,
)
from mailserver.interfaces.filter import ICheck, ICheckSession
from mailserver.message.address import parse_address
from mailserver.msgauth.spf import SPFChecker
from mailserver.types import ACCEPT, Action, Envelope, Peer
from tests.dns_server import Zone, start_dns_server

DAY = 86400.0
ALICE = parse_address("alice@example.org")
BOB = parse_address("bob@example.org")


@pytest.fixture
def db(tmp_path):
    database = Database.open(str(tmp_path / "index"), map_size=16 << 20, reactor=reactor,
                             sync=False)
    yield database
    if not database._done:
        pytest_twisted.blockon(database.close())


@pytest.fixture
def clock():
    c = task.Clock()
    c.advance(1_700_000_000)
    return c


def make(db, clock, spf=None, **settings) -> GreylistCheck:
    return GreylistCheck(db, clock, GreylistSettings(**settings), spf=spf)


async def attempt(check, client="192.0.2.10", sender="news@sender.example", rcpt=ALICE,
                  authenticated=None):
    """One RCPT of a new connection; the verdict (awaited if it is a Deferred)."""
    session = check.session(Peer(client, authenticated_as=authenticated))
    envelope = Envelope(None if sender is None else parse_address(sender),
                        helo="mx.sender.example", client_address=client)
    result = session.recipient(envelope, rcpt)
    return await result if isinstance(result, Deferred) else result


def greylisted(verdict, seconds: int | None = None) -> bool:
    ok = (verdict.action is Action.TEMPFAIL and verdict.code == 450
          and verdict.enhanced == "4.2.0" and verdict.rule == "GREYLIST")
    if seconds is not None:
        ok = ok and verdict.text == f"Greylisted, try again in {seconds} seconds"
    return ok


def passes(verdict) -> bool:
    return verdict.action is Action.ACCEPT


@pytest_twisted.ensureDeferred
async def test_first_try_early_retry_then_pass(db, clock):
    check = make(db, clock)
    assert verifyObject(ICheck, check)
    assert check.name == "greylist" and check.honours_allow_list is True
    session = check.session(Peer("192.0.2.10"))
    assert verifyObject(ICheckSession, session)
    assert session.connect() is ACCEPT and session.helo("x") is ACCEPT
    assert session.sender(Envelope(None)) is ACCEPT
    assert session.body(Envelope(None), (ALICE,), b"") is ACCEPT

    assert greylisted(await attempt(check), 60)
    clock.advance(20.5)
    assert greylisted(await attempt(check), 40)  # the seconds left, rounded up
    clock.advance(39.5)
    v = await attempt(check)
    assert passes(v) and v.rule == "GREYLIST_PASSED" and "retried after 60 s" in v.reason
    clock.advance(5 * DAY)
    v = await attempt(check)  # later messages of the triplet pass at once
    assert passes(v) and "passed before" in v.reason
    assert greylisted(await attempt(check, rcpt=BOB), 60)  # another triplet
    assert check.counts() == GreylistCounts(waiting=1, passed=1, clients=1, domains=1,
                                            known_domains=1)


@pytest_twisted.ensureDeferred
async def test_retry_after_the_window_starts_over(db, clock):
    check = make(db, clock, delay=300, window=4 * 3600)
    assert greylisted(await attempt(check), 300)
    clock.advance(4 * 3600 + 1)
    assert greylisted(await attempt(check), 300)  # too late: a new first attempt
    clock.advance(299)
    assert greylisted(await attempt(check), 1)
    clock.advance(1)
    assert passes(await attempt(check))


@pytest_twisted.ensureDeferred
async def test_records_expire_after_max_age_unless_seen(db, clock):
    check = make(db, clock, max_age=10 * DAY, touch_interval=3600)
    assert greylisted(await attempt(check))
    clock.advance(60)
    assert passes(await attempt(check))
    for _ in range(3):  # seen every 6 days: its 'last' is refreshed, it never expires
        clock.advance(6 * DAY)
        assert passes(await attempt(check))
    clock.advance(10 * DAY + 1)
    assert greylisted(await attempt(check), 60)  # forgotten: greylisted again


@pytest_twisted.ensureDeferred
async def test_touch_writes_at_most_once_per_interval(db, clock):
    check = make(db, clock, touch_interval=3600)
    await attempt(check)
    clock.advance(60)
    await attempt(check)
    writes = []
    original = db.write

    def counting(function):
        writes.append(function)
        return original(function)

    db.write = counting
    try:
        for _ in range(10):
            clock.advance(60)
            assert passes(await attempt(check))
        assert writes == []
        clock.advance(3600)
        assert passes(await attempt(check))
        assert len(writes) == 1
    finally:
        del db.write


@pytest_twisted.ensureDeferred
async def test_client_auto_allowed_after_n_passes(db, clock):
    check = make(db, clock, auto_allow=2)
    for rcpt in (ALICE, BOB):
        assert greylisted(await attempt(check, rcpt=rcpt))
    clock.advance(60)
    for rcpt in (ALICE, BOB):
        assert passes(await attempt(check, rcpt=rcpt))
    # a passed triplet counts once, however often it is used
    assert check.counts().auto_allowed == 1
    carol = parse_address("carol@example.org")
    v = await attempt(check, client="192.0.2.99", sender="other@else.example", rcpt=carol)
    assert passes(v) and v.rule == "GREYLIST_AUTO_ALLOWED"
    assert greylisted(await attempt(check, client="192.0.3.1", rcpt=carol))  # another /24


@pytest_twisted.ensureDeferred
async def test_auto_allow_counts_once_per_triplet_and_can_be_off(db, clock):
    check = make(db, clock, auto_allow=2)
    await attempt(check)
    clock.advance(60)
    for _ in range(3):
        assert passes(await attempt(check))
    assert greylisted(await attempt(check, rcpt=BOB))  # one triplet passed: not yet
    off = make(db, clock, auto_allow=0)
    clock.advance(60)
    await attempt(off, rcpt=BOB)
    assert greylisted(await attempt(off, rcpt=parse_address("dave@example.org")))


@pytest_twisted.ensureDeferred
async def test_null_sender(db, clock):
    check = make(db, clock)
    assert sender_key(None) == "<>"
    assert greylisted(await attempt(check, sender=None))
    assert greylisted(await attempt(check, sender="mailer-daemon@sender.example"))
    clock.advance(60)
    assert passes(await attempt(check, sender=None))
    assert greylisted(await attempt(check, sender=None, rcpt=BOB))
    assert check.counts().domains == 0  # no domain to count for <>


@pytest_twisted.ensureDeferred
async def test_ipv6_clients_grouped_by_64_and_ipv4_by_24(db, clock):
    check = make(db, clock)
    assert greylisted(await attempt(check, client="2001:db8:1:2::1"))
    assert greylisted(await attempt(check, client="192.0.2.1"))
    clock.advance(60)
    assert passes(await attempt(check, client="2001:db8:1:2:ffff::9"))  # same /64
    assert greylisted(await attempt(check, client="2001:db8:1:3::1"))  # another /64
    assert passes(await attempt(check, client="::ffff:192.0.2.254"))  # same /24
    assert greylisted(await attempt(check, client="192.0.3.1"))

    wide = GreylistSettings(ipv4_prefix=16, ipv6_prefix=48)
    assert client_network("192.0.2.1", wide) == "192.0.0.0/16"
    assert client_network("2001:db8:1:2::1", wide) == "2001:db8:1::/48"
    assert client_network("[2001:db8::1]", GreylistSettings()) == "2001:db8::/64"
    assert client_network("unix-socket", GreylistSettings()) == "unix-socket"


def test_per_message_senders_are_one_triplet():
    """VERP numbers, BATV tags and +extensions do not make every message new (postgrey)."""
    same = {
        sender_key(parse_address(s))
        for s in (
            "bounce-12345@lists.example",
            "Bounce-987@LISTS.example",
            "prvs=1234abcdef=bounce-5@lists.example",
            "bounce-77+x@lists.example",
        )
    }
    assert same == {"bounce-#@lists.example"}
    assert sender_key(parse_address("user2go@x.example")) == "user2go@x.example"


@pytest_twisted.ensureDeferred
async def test_exemptions_write_nothing(db, clock):
    check = make(db, clock, exempt=("127.0.0.0/8", "2001:db8:ffff::/48"))
    assert await attempt(check, client="127.0.0.5") is ACCEPT
    assert await attempt(check, client="2001:db8:ffff:1::1") is ACCEPT
    assert await attempt(check, authenticated="alice@example.org") is ACCEPT
    assert check.counts() == GreylistCounts()
    # no exemption by default: loopback is greylisted like anyone
    assert greylisted(await attempt(make(db, clock), client="127.0.0.1"))


@pytest_twisted.ensureDeferred
async def test_prune_deletes_only_what_expired(db, clock):
    check = make(db, clock, max_age=30 * DAY, window=DAY)
    await attempt(check, rcpt=ALICE)  # will pass, then go stale
    await attempt(check, rcpt=BOB)  # waits forever: past its window
    clock.advance(60)
    await attempt(check, rcpt=ALICE)
    clock.advance(2 * DAY)
    assert check.counts() == GreylistCounts(passed=1, clients=1, domains=1, known_domains=1,
                                            expired=1)
    await attempt(check, client="198.51.100.1")  # fresh: kept
    assert await check.prune() == 1
    assert check.counts() == GreylistCounts(waiting=1, passed=1, clients=1, domains=1,
                                            known_domains=1)
    clock.advance(28 * DAY)
    assert await check.prune() == 1  # the new triplet's window closed
    clock.advance(DAY)
    assert await check.prune() == 3  # the passed triplet and its two counters, unseen
    assert check.counts() == GreylistCounts()


@pytest_twisted.ensureDeferred
async def test_prune_walks_in_batches(db, clock, monkeypatch):
    monkeypatch.setattr("mailserver.filter.greylist.PRUNE_BATCH", 7)
    check = make(db, clock)
    for n in range(20):
        await attempt(check, rcpt=parse_address(f"u{n}@example.org"))
    clock.advance(2 * DAY)
    await attempt(check, client="198.51.100.1")
    assert await check.prune() == 20
    assert check.counts().waiting == 1


def test_settings_are_checked_and_read_from_config():
    with pytest.raises(ValueError, match="delay"):
        GreylistSettings(delay=DAY, window=60)
    with pytest.raises(ValueError, match="exempt network 'nonsense'"):
        GreylistSettings(exempt=("nonsense",))
    with pytest.raises(ValueError, match="prefixes"):
        GreylistSettings(ipv6_prefix=129)

    class Section:
        greylist_delay = 120
        greylist_window = None
        greylist_exempt_networks = ("10.0.0.0/8",)

    made = settings_from(Section())
    assert made.delay == 120 and made.window == GreylistSettings().window
    assert [str(n) for n in made.networks] == ["10.0.0.0/8"]
    assert settings_from(None) == GreylistSettings()  # no [filter] section yet


# -- SPF pass for known good senders, with a real DNS server --------------------------------


@pytest.fixture
def spf_server():
    zone = Zone("sender.example", {
        "sender.example": [("TXT", "v=spf1 ip4:192.0.2.0/24 -all")],
        "soft.sender.example": [("TXT", "v=spf1 ?all")],
    })
    server = start_dns_server(reactor, zone)
    yield server
    pytest_twisted.blockon(server.stop())


class CountingSPF:
    """The real SPFChecker, counting its checks."""

    def __init__(self, checker: SPFChecker) -> None:
        self.checker = checker
        self.asked: list[tuple[str, str | None]] = []

    def check(self, ip, sender, helo):
        self.asked.append((ip, sender))
        return self.checker.check(ip, sender, helo)


@pytest_twisted.ensureDeferred
async def test_known_good_domain_with_spf_pass_is_not_greylisted(db, clock, spf_server):
    spf = CountingSPF(SPFChecker(Resolver(reactor, [spf_server.address], timeout=2)))
    check = make(db, clock, spf=spf)
    # an unknown domain is greylisted without asking SPF, even though SPF would pass
    assert greylisted(await attempt(check))
    assert spf.asked == []
    clock.advance(60)
    assert passes(await attempt(check))  # sender.example has now passed once

    # a new recipient, another client of the domain's SPF record: no delay
    v = await attempt(check, client="192.0.2.77", rcpt=BOB)
    assert passes(v) and v.rule == "GREYLIST_SPF_KNOWN"
    assert spf.asked == [("192.0.2.77", "news@sender.example")]
    v = await attempt(check, client="192.0.2.77", rcpt=BOB)  # recorded as passed
    assert passes(v) and "passed before" in v.reason and len(spf.asked) == 1

    # a forger of the known domain (SPF fail) is greylisted
    assert greylisted(await attempt(check, client="203.0.113.5", rcpt=BOB))
    # a subdomain is another domain: unknown, so no SPF asked
    assert greylisted(await attempt(check, sender="x@soft.sender.example", rcpt=BOB))
    assert len(spf.asked) == 2
    # without a checker the exemption is off
    assert greylisted(await attempt(make(db, clock), client="192.0.2.88",
                                    rcpt=parse_address("carol@example.org")))


@pytest_twisted.ensureDeferred
async def test_spf_neutral_or_dns_failure_greylists(db, clock):
    """A known domain whose SPF does not pass (here: no DNS server answers) is greylisted;
    the session asks SPF once per sender."""

    class Failing:
        asked = 0

        def check(self, ip, sender, helo):
            self.asked += 1
            return Deferred.fromCoroutine(self._fail())

        async def _fail(self):
            raise OSError("no DNS")

    spf = Failing()
    check = make(db, clock, spf=spf)
    await attempt(check)
    clock.advance(60)
    await attempt(check)
    session = check.session(Peer("198.51.100.7"))
    envelope = Envelope(parse_address("news@sender.example"))
    assert greylisted(await session.recipient(envelope, BOB))
    assert greylisted(await session.recipient(envelope, parse_address("carol@example.org")))
    assert spf.asked == 1


@pytest_twisted.ensureDeferred
async def test_a_damaged_record_counts_as_new(db, clock):
    """A record that is not one (say, after a bad restore) is greylisted afresh, never an
    exception."""
    check = make(db, clock)
    await attempt(check)
    with db.read() as txn:
        (key, _), = list(txn.prefix(b"greylist", b"t"))
    db.write_sync(lambda txn: txn.put(b"greylist", key, b'{"first": "soon"}'))
    assert greylisted(await attempt(check), 60)
    db.write_sync(lambda txn: txn.put(b"greylist", key, b"[1, 2"))
    clock.advance(30)
    assert greylisted(await attempt(check), 60)
    clock.advance(60)
    assert passes(await attempt(check))
    db.write_sync(lambda txn: txn.put(b"greylist", b"c" + b"x" * 3, b'{"last": []}'))
    assert await check.prune() == 1  # the damaged one only
    assert check.counts().passed == 1
