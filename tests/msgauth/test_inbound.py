"""Inbound authentication in front of the real local store, with a real DNS server: one
Authentication-Results field (ours only), DMARC p=reject refused with 550 5.7.1 or filed into
Junk, p=quarantine into Junk, and DNS trouble never refusing mail."""

from __future__ import annotations

import io

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from zope.interface.verify import verifyObject

from mailserver.dns import Resolver
from mailserver.interfaces import IDelivery, IDeliveryTarget, IFolderChoice
from mailserver.message.headers import get_headers, parse_headers
from mailserver.msgauth.arc import ARCVerifier
from mailserver.msgauth.dkim import DKIMSigner, DKIMVerifier
from mailserver.msgauth.dmarc import DMARCEvaluator
from mailserver.msgauth.inbound import (
    MAX_FROM_DOMAINS,
    AuthenticatingTarget,
    DMARCRejected,
    InboundPolicy,
    from_domains,
    insert_results,
)
from mailserver.msgauth.keys import KeyStore
from mailserver.msgauth.results import parse_authentication_results
from mailserver.msgauth.spf import SPFChecker
from mailserver.store.local import LocalDeliveryTarget
from mailserver.types import Address, Envelope
from tests.msgauth.conftest import resolver_for, serve
from tests.stored import contents, our_results

AUTHSERV = "mx.example.org"
ORIGINS = ("example.net", "example.com", "example.org")


def message(sender: str = "bob@example.net", extra: bytes = b"") -> bytes:
    return (
        extra
        + (
            f"From: Bob <{sender}>\r\nTo: alice@example.org\r\nSubject: hi\r\n"
            "Date: Sun, 29 Nov 2026 09:00:00 +0000\r\nMessage-ID: <1@example.net>\r\n\r\n"
            "Hello.\r\n"
        ).encode()
    )


@pytest.fixture
def keystore(tmp_path):
    keys = KeyStore(str(tmp_path / "dkim"))
    keys.generate("example.net", "sel", ("ed25519",))
    return keys


@pytest.fixture
def dns(keystore):
    [key] = keystore.keys("example.net")
    records = {
        "example.net": [("TXT", "v=spf1 ip4:127.0.0.1 -all")],
        "_dmarc.example.net": [("TXT", "v=DMARC1; p=reject")],
        key.dns_name: [("TXT", key.dns_record())],
        "example.com": [("TXT", "v=spf1 -all")],
        "_dmarc.example.com": [("TXT", "v=DMARC1; p=quarantine")],
    }
    server = serve(records, ORIGINS)
    yield server
    pytest_twisted.blockon(server.stop())


@pytest.fixture
def local(storage):
    wait = pytest_twisted.blockon
    wait(storage.directory.add_domain("example.org"))
    wait(storage.directory.add_user("alice@example.org", "pw"))
    wait(storage.store.create_account("alice@example.org"))
    return LocalDeliveryTarget(storage.store, storage.directory)


def authenticating(local, resolver: Resolver, **policy) -> AuthenticatingTarget:
    return AuthenticatingTarget(
        local,
        InboundPolicy(AUTHSERV, **policy),
        spf=SPFChecker(resolver, receiver=AUTHSERV),
        dkim=DKIMVerifier(resolver, reactor),
        dmarc=DMARCEvaluator(resolver),
        arc=ARCVerifier(resolver, reactor),
        reactor=reactor,
    )


def envelope(sender: str | None = "bob@example.net", ip: str = "127.0.0.1") -> Envelope:
    address = None if sender is None else Address(*sender.split("@"))
    return Envelope(sender=address, helo="client.example.net", client_address=ip)


async def deliver(target, data: bytes, env: Envelope) -> None:
    delivery = target.start(env)
    await delivery.add_recipient(Address("alice", "example.org"))
    try:
        await delivery.body(io.BytesIO(data))
    except Exception:
        await delivery.abort()
        raise
    await delivery.commit()


def stored(storage, folder: str) -> list[bytes]:
    return contents(storage.store.account("alice@example.org").folder(folder))


def results_of(data: bytes) -> dict[str, str]:
    """The results in the one Authentication-Results field with our authserv-id."""
    return our_results(data, AUTHSERV)


def test_provides_interfaces(local) -> None:
    """The wrapper and its transactions provide the delivery interfaces."""
    resolver = Resolver(reactor, ["127.0.0.1:9"])
    target = authenticating(local, resolver)
    assert verifyObject(IDeliveryTarget, target)
    assert verifyObject(IDelivery, target.start(envelope()))
    assert verifyObject(IFolderChoice, local.start(envelope()))


@pytest_twisted.ensureDeferred
async def test_aligned_mail_passes_and_forged_results_are_removed(
    storage, local, dns, keystore
) -> None:
    """SPF and DKIM pass for example.net, so DMARC passes; an Authentication-Results field
    forged with our authserv-id is dropped, another server's is kept."""
    forged = f"Authentication-Results: {AUTHSERV}; dmarc=pass header.from=bank.test\r\n"
    other = "Authentication-Results: elsewhere.example; spf=fail\r\n"
    data = message(extra=(forged + other).encode())
    data = DKIMSigner(keystore).sign(data, "example.net") + data
    await deliver(authenticating(local, resolver_for(dns)), data, envelope())
    [got] = stored(storage, "INBOX")
    assert results_of(got) == {"spf": "pass", "dkim": "pass", "arc": "none", "dmarc": "pass"}
    assert b"bank.test" not in got and other.encode() in got
    assert b"spf=none smtp.helo=client.example.net" in got  # RFC 7208 §2.3: HELO checked too
    assert got.index(b"Authentication-Results: " + AUTHSERV.encode()) < got.index(b"From:")


@pytest_twisted.ensureDeferred
async def test_dmarc_reject_refused_550(storage, local, dns) -> None:
    """An unsigned message from an IP outside example.net's SPF fails DMARC p=reject: the body
    is refused with 550 5.7.1 and nothing is stored."""
    target = authenticating(local, resolver_for(dns))
    with pytest.raises(DMARCRejected) as refused:
        await deliver(target, message(), envelope(ip="127.0.0.9"))
    assert (refused.value.code, refused.value.enhanced) == (550, "5.7.1")
    assert stored(storage, "INBOX") == [] and stored(storage, "Junk") == []


@pytest_twisted.ensureDeferred
async def test_dmarc_reject_quarantined_when_configured(storage, local, dns) -> None:
    """With dmarc_reject = "quarantine" the same message is filed into Junk, marked fail."""
    target = authenticating(local, resolver_for(dns), dmarc_reject="quarantine")
    await deliver(target, message(), envelope(ip="127.0.0.9"))
    assert stored(storage, "INBOX") == []
    [got] = stored(storage, "Junk")
    assert results_of(got) == {"spf": "fail", "dkim": "none", "arc": "none", "dmarc": "fail"}


@pytest_twisted.ensureDeferred
async def test_dmarc_quarantine_goes_to_junk(storage, local, dns) -> None:
    """p=quarantine failures are filed into Junk."""
    target = authenticating(local, resolver_for(dns))
    await deliver(target, message("eve@example.com"), envelope("eve@example.com"))
    [got] = stored(storage, "Junk")
    assert results_of(got)["dmarc"] == "fail"


@pytest_twisted.ensureDeferred
async def test_strictest_from_domain_decides(storage, local, dns) -> None:
    """With two From domains, the strictest failing policy applies (here: reject)."""
    data = message().replace(
        b"From: Bob <bob@example.net>", b"From: a@example.org, bob@example.net"
    )
    with pytest.raises(DMARCRejected):
        await deliver(authenticating(local, resolver_for(dns)), data, envelope("a@example.org"))


@pytest_twisted.ensureDeferred
async def test_dns_failure_never_refuses(storage, local, dns) -> None:
    """A DNS failure makes temperror results and the message is delivered to INBOX."""
    data = message("bob@x.servfail.test")
    await deliver(authenticating(local, resolver_for(dns)), data, envelope("bob@x.servfail.test"))
    [got] = stored(storage, "INBOX")
    assert results_of(got) == {
        "spf": "temperror",
        "dkim": "none",
        "arc": "none",
        "dmarc": "temperror",
    }


class Silent(DatagramProtocol):
    def datagramReceived(self, data: bytes, addr: object) -> None:
        """Never answer."""


@pytest_twisted.ensureDeferred
async def test_deadline_turns_a_silent_dns_into_temperror(storage, local) -> None:
    """A DNS server that never answers hits each check's deadline: temperror, delivered."""
    port = reactor.listenUDP(0, Silent(), interface="127.0.0.1")
    try:
        resolver = Resolver(reactor, [f"127.0.0.1:{port.getHost().port}"], timeout=3)
        target = authenticating(local, resolver, timeout=0.2)
        await deliver(target, message(), envelope())
    finally:
        await port.stopListening()
    [got] = stored(storage, "INBOX")
    assert results_of(got) == {
        "spf": "temperror",
        "dkim": "none",
        "arc": "none",
        "dmarc": "temperror",
    }


def test_from_domains() -> None:
    """RFC 7489 §6.6.1: every distinct From domain, from every From field; groups and
    domainless addresses give none."""
    block = (
        b"From: A <a@One.example>, b@two.example\r\nFrom: c@one.example\r\nTo: x@y.example\r\n\r\n"
    )
    assert from_domains(block) == ["one.example", "two.example"]
    assert from_domains(b"From: undisclosed:;\r\n\r\n") == []
    assert from_domains(b"From: nobody\r\n\r\n") == []
    assert from_domains(b"Subject: no from\r\n\r\n") == []


@pytest_twisted.ensureDeferred
async def test_no_from_is_dmarc_none(storage, local, dns) -> None:
    """Without a From domain there is no DMARC policy to apply: dmarc=none, delivered."""
    data = b"Subject: nothing\r\n\r\nbody\r\n"
    await deliver(authenticating(local, resolver_for(dns)), data, envelope())
    [got] = stored(storage, "INBOX")
    assert results_of(got) == {"spf": "pass", "dkim": "none", "arc": "none", "dmarc": "none"}


def test_results_go_below_our_received() -> None:
    """The field goes below the (folded) Received field the SMTP server put on top, or on top
    when there is none."""
    field = b"Authentication-Results: mx.example.org; none\r\n"
    block = b"Received: from a\r\n\tby b; date\r\nFrom: x@y.example\r\n\r\n"
    assert insert_results(block, field) == (
        b"Received: from a\r\n\tby b; date\r\n" + field + b"From: x@y.example\r\n\r\n"
    )
    assert insert_results(b"From: x@y.example\r\n\r\n", field).startswith(field)


@pytest_twisted.ensureDeferred
async def test_many_from_domains_are_bounded(storage, local, dns) -> None:
    """Only the first few From domains cost DNS look-ups; the rest are reported, not
    evaluated (the first domains' policies still apply)."""
    many = ", ".join(f"u@d{n}.example.org" for n in range(MAX_FROM_DOMAINS + 20))
    data = message().replace(b"From: Bob <bob@example.net>", f"From: {many}".encode())
    await deliver(authenticating(local, resolver_for(dns)), data, envelope())
    [got] = stored(storage, "INBOX")
    field = get_headers(parse_headers(got), "Authentication-Results")[0]
    dmarc = [r for r in parse_authentication_results(field)[1] if r.method == "dmarc"]
    assert [r.result for r in dmarc] == ["permerror"] + ["none"] * MAX_FROM_DOMAINS


@pytest_twisted.ensureDeferred
async def test_any_message_bytes_get_an_assessment(local, dns) -> None:
    """Whatever the message bytes (no header, binary, broken From or signatures), the checks
    end in an assessment with one Authentication-Results field: never an exception."""
    target = authenticating(local, resolver_for(dns))
    samples = [
        b"",
        b"\r\n\r\n",
        b"no header at all",
        b"\x00\xff\xfe binary\r\n\r\n\x00",
        b"From: <@>\r\nFrom: \xff\xfe@\xff\r\n\r\nx",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.net; s=x; b=; bh=\r\n"
        b"From: a@example.net\r\n\r\n",
        b"ARC-Seal: i=1; garbage\r\nFrom: a@example.net\r\n\r\n",
        b"From: " + b"a@b.example, " * 500 + b"\r\n\r\n",
        b"Authentication-Results: (((\r\n\r\n",
    ]
    for sample in samples:
        assessment = await target.assess(sample, envelope())
        assert assessment.header.startswith(b"Authentication-Results: mx.example.org;")
        assert assessment.action in ("deliver", "quarantine", "refuse")


class Broken:
    """A checker whose every call raises at once (a bug in a checker, not a DNS problem)."""

    def __getattr__(self, name: str):
        def call(*args: object) -> None:
            raise RuntimeError(f"{name} is broken")

        return call


@pytest_twisted.ensureDeferred
async def test_a_crashing_check_is_temperror(local, dns) -> None:
    """A check that raises (even before returning a Deferred) is reported as temperror and
    the message is still assessed, never refused for it."""
    resolver = resolver_for(dns)
    target = AuthenticatingTarget(
        local,
        InboundPolicy(AUTHSERV),
        spf=Broken(),
        dkim=Broken(),
        dmarc=DMARCEvaluator(resolver),
        arc=Broken(),
        reactor=reactor,
    )
    assessment = await target.assess(message(), envelope())
    assert [(r.method, r.result) for r in assessment.results] == [
        ("spf", "temperror"),
        ("spf", "temperror"),
        ("dkim", "temperror"),
        ("arc", "temperror"),
        ("dmarc", "temperror"),
    ]
    assert assessment.action == "deliver"
