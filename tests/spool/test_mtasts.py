"""MTA-STS (RFC 8461): TXT and policy parsing, MX patterns, discovery over real HTTPS with a
test CA and a real DNS server, caching, and enforcement by the courier (only matching MX
hosts, only verified TLS)."""

from __future__ import annotations

import random
from io import BytesIO

import pytest
import pytest_twisted
from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.web.client import Agent
from twisted.web.resource import Resource
from twisted.web.server import Site

from mailserver.auth.realm import MailRealm, MXTarget
from mailserver.dns import Resolver
from mailserver.smtp.factory import SMTPFactory, SMTPPolicy
from mailserver.spool.mtasts import (
    MTASTS,
    PolicyError,
    mx_matches,
    parse_policy,
    parse_txt,
)
from mailserver.spool.remote import RemoteCourier
from mailserver.testing import MemoryDeliveryTarget, MemoryDirectory, MemoryStore
from mailserver.types import QueuedRecipient, QueueEntry, RecipientState
from tests.dns_server import Zone, start_dns_server
from tests.pki import make_ca
from tests.spool.test_remote import free_port_on

POLICY = (
    b"version: STSv1\r\nmode: enforce\r\nmx: mx1.remote.test\r\n"
    b"mx: *.backup.remote.test\r\nmax_age: 86400\r\n"
)


def test_parse_txt():
    assert parse_txt(["v=STSv1; id=20240101T000000;"]) == "20240101T000000"
    assert parse_txt(["v=spf1 -all", "v=STSv1; id=abc"]) == "abc"
    assert parse_txt(["v=STSv1; id=a", "v=STSv1; id=b"]) is None  # §3.1: exactly one
    assert parse_txt(["v=STSv1; id=bad-id!"]) is None
    assert parse_txt([]) is None


def test_parse_policy_and_patterns():
    policy = parse_policy(POLICY.decode(), "x")
    assert policy.mode == "enforce" and policy.max_age == 86400
    assert policy.allows("MX1.remote.test.") and policy.allows("a.backup.remote.test")
    assert not policy.allows("a.b.backup.remote.test") and not policy.allows("evil.test")
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 10\n").allows("anything")
    assert parse_policy("version: STSv1\nmode: testing\nmx: a\nmax_age: 1\n").allows("b")
    for bad in ["mode: enforce\nmx: a\nmax_age: 1", "version: STSv1\nmode: x\nmx: a\nmax_age: 1",
                "version: STSv1\nmode: enforce\nmax_age: 1", "version: STSv1\nmode: enforce\nmx: a",
                "version: STSv1\nmode: enforce\nmx: a\nmax_age: 99999999999"]:
        with pytest.raises(PolicyError):
            parse_policy(bad)
    assert mx_matches("mail.example.com", ["*.example.com"])
    assert not mx_matches("example.com", ["*.example.com"])


class PolicyResource(Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.body = POLICY
        self.hits = 0

    def render_GET(self, request):
        self.hits += 1
        request.setHeader(b"content-type", b"text/plain")
        return self.body


@pytest.fixture
def world(tmp_path):
    ca = make_ca()
    port = free_port_on("127.0.0.2", "127.0.0.3")
    https_port = free_port_on("127.0.0.9")
    records = {
        "remote.test": [("MX", (10, "mx1.remote.test")), ("MX", (5, "evil.remote.test"))],
        "mx1.remote.test": [("A", "127.0.0.2")],
        "evil.remote.test": [("A", "127.0.0.3")],
        "_mta-sts.remote.test": [("TXT", "v=STSv1; id=one;")],
    }
    zone = Zone("test", records, ttl=1)
    dns = start_dns_server(reactor, zone)
    policy = PolicyResource()
    https = reactor.listenSSL(https_port, Site(policy),
                              ca.server_options("mta-sts.remote.test"), interface="127.0.0.9")

    class ToTestServer:
        def endpointForURI(self, uri):
            plain = TCP4ClientEndpoint(reactor, "127.0.0.9", https_port)
            return wrapClientTLS(ca.client_options(uri.host.decode()), plain)

    agent = Agent.usingEndpointFactory(reactor, ToTestServer())
    store, directory = MemoryStore(), MemoryDirectory()
    wait = pytest_twisted.blockon
    wait(directory.add_domain("remote.test"))
    wait(directory.add_user("alice@remote.test", "pw"))
    wait(store.create_account("alice@remote.test"))
    target = MemoryDeliveryTarget(store, directory)
    realm = MailRealm(lambda: MXTarget(target, directory, "postmaster@remote.test"))
    portal = Portal(realm, [AllowAnonymousAccess()])
    good = SMTPFactory(portal, SMTPPolicy(hostname="mx1.remote.test"),
                       ca.server_options("mx1.remote.test"), reactor=reactor)
    evil = SMTPFactory(portal, SMTPPolicy(hostname="evil.remote.test"),
                       ca.server_options("evil.remote.test"), reactor=reactor)
    listeners = [reactor.listenTCP(port, good, interface="127.0.0.2"),
                 reactor.listenTCP(port, evil, interface="127.0.0.3"), https]
    resolver = Resolver(reactor, [dns.address], timeout=2)
    mta_sts = MTASTS(reactor, resolver, agent=agent)
    courier = RemoteCourier(reactor, resolver, "mx.example.org", port=port, mta_sts=mta_sts,
                            verified_tls=ca.client_options, rng=random.Random(0))

    class World:
        pass

    w = World()
    w.ca, w.policy, w.mta_sts, w.courier, w.store = ca, policy, mta_sts, courier, store
    w.resolver, w.good, w.evil, w.zone, w.dns = resolver, good, evil, zone, dns
    yield w
    for listener in listeners:
        wait(listener.stopListening())
    wait(dns.stop())


@pytest_twisted.ensureDeferred
async def test_policy_fetched_over_verified_https_and_cached(world):
    policy = await world.mta_sts.policy("remote.test")
    assert policy.mode == "enforce" and policy.id == "one"
    again = await world.mta_sts.policy("Remote.Test.")
    assert again == policy and world.policy.hits == 1
    assert await world.mta_sts.policy("nopolicy.test") is None


@pytest_twisted.ensureDeferred
async def test_enforce_uses_only_matching_mx_with_verified_tls(world):
    entry = QueueEntry("Q1", "a@example.org", (QueuedRecipient("alice@remote.test"),), 10,
                       0.0, 0.0)
    outcomes = await world.courier.deliver(
        entry, "remote.test", list(entry.recipients),
        lambda: BytesIO(b"Subject: sts\r\n\r\nvia verified TLS\r\n"),
    )
    outcome = outcomes["alice@remote.test"]
    # evil.remote.test has the better preference but is not in the policy
    assert outcome.state is RecipientState.DELIVERED and outcome.remote_mta == "mx1.remote.test"


@pytest_twisted.ensureDeferred
async def test_enforce_defers_when_the_certificate_does_not_verify(world):
    world.good.tls = world.ca.server_options("someone-else.test")  # wrong name
    entry = QueueEntry("Q1", "a@example.org", (QueuedRecipient("alice@remote.test"),), 10,
                       0.0, 0.0)
    outcomes = await world.courier.deliver(
        entry, "remote.test", list(entry.recipients), lambda: BytesIO(b"Subject: x\r\n\r\nx\r\n")
    )
    outcome = outcomes["alice@remote.test"]
    assert outcome.state is RecipientState.DEFERRED and outcome.status == "4.7.5"
    assert list(world.store.account("alice@remote.test").folder("INBOX").uids()) == []


@pytest_twisted.ensureDeferred
async def test_new_id_refetches_and_a_broken_policy_keeps_the_cached_one(world):
    await world.mta_sts.policy("remote.test")
    [record] = world.zone.records[b"_mta-sts.remote.test"]
    record.data = [b"v=STSv1; id=two;"]
    world.mta_sts.resolver = Resolver(reactor, [world.dns.address], timeout=2)  # no DNS cache
    world.policy.body = b"garbage"
    # a broken new policy does not replace the cached one (RFC 8461 §5.1)
    assert (await world.mta_sts.policy("remote.test")).id == "one"
    assert world.policy.hits == 2
    world.policy.body = POLICY.replace(b"max_age: 86400", b"max_age: 600")
    fresh = await world.mta_sts.policy("remote.test")
    assert (fresh.id, fresh.max_age, world.policy.hits) == ("two", 600, 3)
