"""The signing target in front of the router: the From domain's keys sign (else the envelope
sender's), the signatures verify, unsigned mail passes byte for byte, and a broken key never
stops the mail."""

from __future__ import annotations

import io
import os

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import succeed
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mailserver.interfaces import IDelivery, IDeliveryTarget
from mailserver.msgauth.dkim import DKIMSigner, KeyRecord, verify_blocking
from mailserver.msgauth.keys import KeyStore
from mailserver.msgauth.signing import DKIMSigningTarget, from_domain
from mailserver.types import Address, Envelope


@implementer(IDeliveryTarget)
class Collect:
    """The next target: keeps what it was given."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def start(self, envelope):
        return CollectDelivery(self)


@implementer(IDelivery)
class CollectDelivery:
    envelope = None

    def __init__(self, owner: Collect) -> None:
        self.owner = owner

    def add_recipient(self, address, params=None):
        return succeed(None)

    def body(self, source):
        self.owner.bodies.append(source.read())
        return succeed(None)

    def commit(self):
        return succeed([1])

    def abort(self):
        return succeed(None)


MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: hi\r\n"
    b"Date: Sun, 29 Nov 2026 09:00:00 +0000\r\n"
    b"Message-ID: <x@example.org>\r\n"
    b"\r\n"
    b"Hello.\r\n"
)


@pytest.fixture
def keys(tmp_path):
    return KeyStore(str(tmp_path / "dkim"))


async def send(keys: KeyStore, message: bytes, sender: str | None = "alice@example.org") -> bytes:
    inner = Collect()
    target = DKIMSigningTarget(inner, DKIMSigner(keys), reactor)
    envelope = Envelope(
        sender=Address(*sender.split("@")) if sender else None, authenticated_as="alice@example.org"
    )
    delivery = target.start(envelope)
    verifyObject(IDelivery, delivery)
    await delivery.add_recipient(Address("bob", "example.net"))
    await delivery.body(io.BytesIO(message))
    await delivery.commit()
    return inner.bodies[0]


def check(keys: KeyStore, signed: bytes, domain: str) -> list[str]:
    records = {key.dns_name: KeyRecord(key.dns_record()) for key in keys.keys(domain)}
    return [r.result for r in verify_blocking(signed, records, signed.count(b"DKIM-Signature:"))]


def test_provides_the_interface(keys):
    verifyObject(IDeliveryTarget, DKIMSigningTarget(Collect(), DKIMSigner(keys), reactor))


@pytest_twisted.ensureDeferred
async def test_from_domain_signs(keys):
    keys.generate("example.org", "mail")
    signed = await send(keys, MESSAGE)
    assert signed.endswith(MESSAGE) and signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256")
    assert signed.count(b"DKIM-Signature:") == 2 and b"d=example.org;" in signed
    assert check(keys, signed, "example.org") == ["pass", "pass"]


@pytest_twisted.ensureDeferred
async def test_sender_domain_signs_when_from_domain_has_no_key(keys):
    keys.generate("bounces.example.org", "mail", ["ed25519"])
    signed = await send(keys, MESSAGE, sender="list@bounces.example.org")
    assert b"d=bounces.example.org;" in signed
    assert check(keys, signed, "bounces.example.org") == ["pass"]


@pytest_twisted.ensureDeferred
async def test_no_key_passes_the_message_unchanged(keys):
    keys.generate("example.com", "mail", ["ed25519"])
    assert await send(keys, MESSAGE) == MESSAGE
    assert await send(keys, MESSAGE, sender=None) == MESSAGE


@pytest_twisted.ensureDeferred
async def test_a_broken_key_file_sends_unsigned(keys):
    """A key file that cannot be read as a key is logged; the mail still goes (unsigned)."""
    keys.generate("example.org", "mail", ["rsa"])
    path = os.path.join(keys.root, "example.org", "mail.rsa.key")
    os.chmod(path, 0o600)
    with open(path, "wb") as handle:
        handle.write(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    assert await send(keys, MESSAGE) == MESSAGE


@pytest.mark.parametrize(
    ("field", "domain"),
    [
        (b"From: Alice <Alice@Example.ORG>", "example.org"),
        (b"From: alice@example.org (Alice)", "example.org"),
        (b"From: friends: a@one.example, b@two.example;", "one.example"),
        (b"From: no address here", None),
        (b"To: x@example.org", None),
    ],
)
def test_from_domain(field, domain):
    assert from_domain(field + b"\r\nSubject: x\r\n\r\nbody\r\n") == domain
