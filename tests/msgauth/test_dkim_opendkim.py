"""Mail we sign verifies with OpenDKIM (``opendkim-testmsg``), an independent implementation,
looking the keys up in a real DNS server: RSA-only, Ed25519-only (RFC 8463) and both; and
OpenDKIM rejects what we would reject. The RFC 8463 example checks the harness itself."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from mailserver.msgauth.dkim import DKIMSigner
from mailserver.msgauth.keys import KeyStore
from tests.dns_server import Zone
from tests.msgauth import opendkim, rfc8463
from tests.msgauth.test_dkim import UNSIGNED, txt

pytestmark = pytest.mark.skipif(opendkim.unavailable() is not None,
                                reason=opendkim.unavailable() or "")


def zone(store: KeyStore) -> Zone:
    entries = {key.dns_name: [("TXT", txt(key.dns_record()))]
               for key in store.keys("example.org")}
    return Zone("example.org", entries)


async def opendkim_verdict(message: bytes, *zones: Zone) -> tuple[int, str]:
    server = opendkim.start_port53(reactor, *zones)
    try:
        done = await opendkim.verify_async(message, server.host)
    finally:
        await server.stop()
    return done.returncode, done.stderr.decode().strip()


@pytest_twisted.ensureDeferred
async def test_the_harness_verifies_the_rfc8463_example():
    football = Zone("football.example.com",
                    {n: [("TXT", txt(v))] for n, v in rfc8463.RECORDS.items()})
    assert await opendkim_verdict(rfc8463.SIGNED, football) == (0, "")


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
@pytest_twisted.ensureDeferred
async def test_our_signature_verifies_with_opendkim(tmp_path, algorithm):
    store = KeyStore(str(tmp_path / "dkim"))
    store.generate("example.org", "mail", [algorithm])
    signed = DKIMSigner(store).sign(UNSIGNED, "example.org") + UNSIGNED
    assert await opendkim_verdict(signed, zone(store)) == (0, "")


@pytest_twisted.ensureDeferred
async def test_both_signatures_verify_and_a_change_is_caught(tmp_path):
    store = KeyStore(str(tmp_path / "dkim"))
    store.generate("example.org", "mail")
    signed = DKIMSigner(store).sign(UNSIGNED, "example.org") + UNSIGNED
    assert await opendkim_verdict(signed, zone(store)) == (0, "")
    status, why = await opendkim_verdict(signed.replace(b"Hello Bob", b"Hello Eve"), zone(store))
    assert status != 0 and "bad" in why.lower(), why
