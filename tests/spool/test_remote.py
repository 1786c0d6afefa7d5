"""The remote courier against real SMTP servers (ours, in-process) on several 127.x hosts,
found through MX records served by a real DNS server: preference order, fall-back when the
primary is down, per-recipient results, STARTTLS, temporary and permanent failures."""

from __future__ import annotations

import random
import socket
from io import BytesIO

import pytest
import pytest_twisted
from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

from mailserver.auth.realm import MailRealm, MXTarget
from mailserver.dns import Resolver
from mailserver.smtp.factory import SMTPFactory, SMTPPolicy
from mailserver.spool.remote import RemoteCourier
from mailserver.testing import MemoryDeliveryTarget, MemoryDirectory, MemoryStore
from mailserver.types import QueuedRecipient, QueueEntry, RecipientState
from tests.dns_server import Zone, start_dns_server
from tests.lines import populate
from tests.stored import contents

MESSAGE = b"From: a@example.org\r\nTo: alice@remote.test\r\nSubject: out\r\n\r\nHello.\r\n"


def zone() -> Zone:
    return Zone("test", {
        "remote.test": [("MX", (10, "mx1.remote.test")), ("MX", (20, "mx2.remote.test"))],
        "mx1.remote.test": [("A", "127.0.0.2")],
        "mx2.remote.test": [("A", "127.0.0.3")],
        "down.test": [("MX", (10, "dead.down.test")), ("MX", (20, "mx2.remote.test"))],
        "dead.down.test": [("A", "127.0.0.4")],
        "tempfail.test": [("MX", (10, "busy.tempfail.test"))],
        "busy.tempfail.test": [("A", "127.0.0.5")],
        "null.test": [("MX", (0, ""))],
    })


def free_port_on(*hosts: str) -> int:
    """A port free on every host (try a few candidates)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        ok = True
        for host in hosts[1:]:
            with socket.socket() as other:
                try:
                    other.bind((host, port))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no common free port")


class Busy(Protocol):
    """A server that says 451 to every RCPT."""

    def connectionMade(self):
        self.transport.write(b"220 busy ESMTP\r\n")

    def dataReceived(self, data):
        for line in data.split(b"\r\n")[:-1]:
            verb = line[:4].upper()
            reply = {b"EHLO": b"250 busy\r\n", b"MAIL": b"250 2.1.0 ok\r\n",
                     b"RCPT": b"451 4.7.1 try later\r\n", b"QUIT": b"221 bye\r\n",
                     b"RSET": b"250 ok\r\n"}.get(verb, b"500 what\r\n")
            self.transport.write(reply)


@pytest.fixture
def world(tls_options):
    store, directory = MemoryStore(), MemoryDirectory()
    wait = pytest_twisted.blockon
    populate(store, directory, "pw", domain="remote.test")
    target = MemoryDeliveryTarget(store, directory)
    realm = MailRealm(lambda: MXTarget(target, directory, "postmaster@remote.test"))
    factory = SMTPFactory(Portal(realm, [AllowAnonymousAccess()]),
                          SMTPPolicy(hostname="mx.remote.test"), tls_options, reactor=reactor)
    port = free_port_on("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
    listeners = [reactor.listenTCP(port, factory, interface=host)
                 for host in ("127.0.0.2", "127.0.0.3")]
    listeners.append(reactor.listenTCP(port, Factory.forProtocol(Busy), interface="127.0.0.5"))
    dns = start_dns_server(reactor, zone())
    resolver = Resolver(reactor, [dns.address], timeout=2)
    courier = RemoteCourier(reactor, resolver, "mx.example.org", port=port,
                            connect_timeout=5, rng=random.Random(0))

    class World:
        pass

    w = World()
    w.store, w.factory, w.courier, w.listeners = store, factory, courier, listeners
    yield w
    for listener in listeners:
        stopping = listener.stopListening()
        if stopping is not None:  # None: the test stopped it already
            wait(stopping)
    wait(dns.stop())


def inbox(world, user="alice") -> list[bytes]:
    return contents(world.store.account(f"{user}@remote.test").folder("INBOX"))


def entry(*addresses: str, params=None) -> tuple[QueueEntry, list[QueuedRecipient]]:
    recipients = [QueuedRecipient(a) for a in addresses]
    return QueueEntry("Q1", "a@example.org", tuple(recipients), len(MESSAGE), 0.0, 0.0,
                      params or {}), recipients


def opener():
    return BytesIO(MESSAGE)


@pytest_twisted.ensureDeferred
async def test_delivers_with_per_recipient_results(world):
    e, rcpts = entry("alice@remote.test", "nobody@remote.test", "bob@remote.test")
    outcomes = await world.courier.deliver(e, "remote.test", rcpts, opener)
    assert outcomes["alice@remote.test"].state is RecipientState.DELIVERED
    assert outcomes["bob@remote.test"].state is RecipientState.DELIVERED
    assert outcomes["nobody@remote.test"].state is RecipientState.FAILED
    assert outcomes["nobody@remote.test"].status == "5.1.1"
    assert outcomes["alice@remote.test"].remote_mta == "mx1.remote.test"
    [stored] = inbox(world)
    assert stored.endswith(MESSAGE)
    assert b"with ESMTPS" in stored  # opportunistic STARTTLS was used


@pytest_twisted.ensureDeferred
async def test_primary_down_falls_to_next_preference(world):
    e, rcpts = entry("alice@remote.test")
    outcomes = await world.courier.deliver(e, "down.test", rcpts, opener)
    assert outcomes["alice@remote.test"].state is RecipientState.DELIVERED
    assert outcomes["alice@remote.test"].remote_mta == "mx2.remote.test"


@pytest_twisted.ensureDeferred
async def test_temporary_refusal_defers(world):
    e, rcpts = entry("x@tempfail.test")
    outcomes = await world.courier.deliver(e, "tempfail.test", rcpts, opener)
    assert outcomes["x@tempfail.test"].state is RecipientState.DEFERRED
    assert outcomes["x@tempfail.test"].status == "4.7.1"


@pytest_twisted.ensureDeferred
async def test_null_mx_and_unknown_domain_fail(world):
    e, rcpts = entry("x@null.test")
    outcome = (await world.courier.deliver(e, "null.test", rcpts, opener))["x@null.test"]
    assert outcome.state is RecipientState.FAILED and outcome.status == "5.1.10"
    e, rcpts = entry("x@nowhere.test")
    outcome = (await world.courier.deliver(e, "nowhere.test", rcpts, opener))["x@nowhere.test"]
    assert outcome.state is RecipientState.FAILED


@pytest_twisted.ensureDeferred
async def test_no_host_answering_defers(world):
    for listener in world.listeners[:2]:
        await listener.stopListening()
    e, rcpts = entry("alice@remote.test")
    outcome = (await world.courier.deliver(e, "remote.test", rcpts, opener))["alice@remote.test"]
    assert outcome.state is RecipientState.DEFERRED and outcome.status == "4.4.1"
    assert "mx2.remote.test" in outcome.reply


@pytest_twisted.ensureDeferred
async def test_dns_failure_defers(world):
    world.courier.resolver = Resolver(reactor, ["127.0.0.1:9"], timeout=0.5)
    e, rcpts = entry("alice@remote.test")
    outcome = (await world.courier.deliver(e, "remote.test", rcpts, opener))["alice@remote.test"]
    assert outcome.state is RecipientState.DEFERRED and outcome.status == "4.4.3"


@pytest_twisted.ensureDeferred
async def test_connection_is_reused_for_the_next_message(world):
    for n in range(3):
        e, rcpts = entry("alice@remote.test")
        outcomes = await world.courier.deliver(e, "remote.test", rcpts, opener)
        assert outcomes["alice@remote.test"].state is RecipientState.DELIVERED, n
    assert world.factory.connections == 1  # one parked connection carried all three
    assert len(inbox(world)) == 3
    world.courier.close()


@pytest_twisted.ensureDeferred
async def test_message_above_the_remote_size_limit_fails_without_sending(world):
    from dataclasses import replace

    world.factory.policy = replace(world.factory.policy, max_message_size=20)
    e, rcpts = entry("alice@remote.test")
    outcome = (await world.courier.deliver(e, "remote.test", rcpts, opener))["alice@remote.test"]
    assert outcome.state is RecipientState.FAILED and outcome.status == "5.3.4"
    assert inbox(world) == []
