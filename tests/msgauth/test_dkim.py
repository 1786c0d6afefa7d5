"""DKIM verification (RFC 6376, RFC 8463) against a real DNS server on 127.0.0.1: the RFC 8463
example passes with both signatures, every kind of breakage gets its RFC 8601 result word,
and mail we sign with our own keys (RSA and Ed25519) verifies with us and with dkimpy."""

from __future__ import annotations

import dkim
import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.names import common

from mailserver.dns import Resolver
from mailserver.msgauth.dkim import (
    MAX_SIGNATURES,
    DKIMSigner,
    DKIMVerifier,
    KeyRecord,
    verify_blocking,
)
from mailserver.msgauth.keys import KeyStore
from mailserver.msgauth.results import RESULTS
from tests.dns_server import Zone, start_dns_server
from tests.msgauth import rfc8463


def txt(value: str) -> tuple[str, ...]:
    """A TXT record value as <=255-byte character-strings (RFC 1035 §3.3.14)."""
    return tuple(value[i:i + 255] for i in range(0, len(value), 255))


def football_zone(**overrides: str | None) -> Zone:
    records = dict(rfc8463.RECORDS)
    records.update(overrides)
    return Zone(
        "football.example.com",
        {name: [("TXT", txt(value))] for name, value in records.items() if value is not None},
    )


class ServerFailure(common.ResolverBase):
    """An authority that fails every query: the DNS server answers SERVFAIL."""

    def _lookup(self, name, cls, type, timeout):
        return defer.fail(RuntimeError("backend down"))


async def verify(message: bytes, *zones: Zone) -> list:
    server = start_dns_server(reactor, *zones)
    try:
        resolver = Resolver(reactor, [server.address], timeout=2)
        return await DKIMVerifier(resolver, reactor).verify(message)
    finally:
        await server.stop()


def results(found: list) -> list[tuple[str, str]]:
    return [(r.result, dict(r.properties).get("header.s", "")) for r in found]


@pytest_twisted.ensureDeferred
async def test_rfc8463_example_passes_both_signatures():
    """RFC 8463 A.3: the Ed25519 and the RSA signature both verify with the A.2 records."""
    found = await verify(rfc8463.SIGNED, football_zone())
    assert [(r.method, r.result) for r in found] == [("dkim", "pass"), ("dkim", "pass")]
    assert found[0].properties == (
        ("header.d", "football.example.com"),
        ("header.s", "brisbane"),
        ("header.a", "ed25519-sha256"),
        ("header.b", "/gCrinpc"),
    )
    assert dict(found[1].properties)["header.a"] == "rsa-sha256"


@pytest_twisted.ensureDeferred
async def test_changed_body_fails():
    """A changed body breaks the body hash of both signatures: fail."""
    found = await verify(rfc8463.SIGNED.replace(b"hungry", b"HUNGRY"), football_zone())
    assert results(found) == [("fail", "brisbane"), ("fail", "test")]
    assert "body hash" in found[0].reason


@pytest_twisted.ensureDeferred
async def test_changed_signed_header_fails():
    found = await verify(rfc8463.SIGNED.replace(b"dinner", b"lunch"), football_zone())
    assert results(found) == [("fail", "brisbane"), ("fail", "test")]


@pytest_twisted.ensureDeferred
async def test_relaxed_canonicalisation_tolerates_whitespace_and_case():
    """RFC 6376 §3.4.2/§3.4.4: header name case, folding and trailing spaces do not matter."""
    changed = rfc8463.SIGNED.replace(b"Subject: Is dinner", b"SUBJECT:  Is \r\n dinner")
    changed = changed.replace(b"Hi.\r\n", b"Hi.  \r\n")
    found = await verify(changed, football_zone())
    assert results(found) == [("pass", "brisbane"), ("pass", "test")]


@pytest_twisted.ensureDeferred
async def test_added_from_field_breaks_the_oversigned_signature():
    """From is in h= twice (over-signed): a second From field added on top fails."""
    forged = rfc8463.SIGNED.replace(
        b"From: Joe", b"From: Mallory <mallory@example.net>\r\nFrom: Joe"
    )
    found = await verify(forged, football_zone())
    assert [r.result for r in found] == ["fail", "fail"]


@pytest_twisted.ensureDeferred
async def test_missing_key_record_is_permerror():
    """RFC 6376 §6.1.2: no key record for the selector: PERMFAIL -> permerror."""
    zone = football_zone(**{"brisbane._domainkey.football.example.com": None})
    found = await verify(rfc8463.SIGNED, zone)
    assert results(found) == [("permerror", "brisbane"), ("pass", "test")]
    assert found[0].reason == "no key record"


@pytest_twisted.ensureDeferred
async def test_revoked_key_is_permerror():
    """RFC 6376 §3.6.1: an empty p= means the key was revoked."""
    zone = football_zone(**{"test._domainkey.football.example.com": "v=DKIM1; k=rsa; p="})
    found = await verify(rfc8463.SIGNED, zone)
    assert results(found) == [("pass", "brisbane"), ("permerror", "test")]


@pytest_twisted.ensureDeferred
async def test_key_type_not_matching_a_is_permerror():
    """An Ed25519 key record under the selector of an rsa-sha256 signature cannot verify it."""
    zone = football_zone(
        **{"test._domainkey.football.example.com": rfc8463.RECORDS[
            "brisbane._domainkey.football.example.com"]}
    )
    found = await verify(rfc8463.SIGNED, zone)
    assert results(found) == [("pass", "brisbane"), ("permerror", "test")]


@pytest_twisted.ensureDeferred
async def test_dns_failure_is_temperror():
    """A key look-up that fails (SERVFAIL) is temperror, not fail (RFC 6376 §6.1.2)."""
    found = await verify(rfc8463.SIGNED, ServerFailure())
    assert results(found) == [("temperror", "brisbane"), ("temperror", "test")]


@pytest_twisted.ensureDeferred
async def test_unsigned_message_is_none():
    body = rfc8463.SIGNED[rfc8463.SIGNED.index(b"From: Joe"):]
    found = await verify(body, football_zone())
    assert [(r.method, r.result, r.properties) for r in found] == [("dkim", "none", ())]


def test_from_not_signed_is_permerror():
    """RFC 6376 §6.1.1: h= must include From, or the signature is ignored with PERMFAIL."""
    message = rfc8463.SIGNED.replace(b"h=from : to :", b"h=to :", 1).replace(
        b"message-id : from : subject", b"message-id : subject", 1
    )
    keys = {name: KeyRecord(value) for name, value in rfc8463.RECORDS.items()}
    found = verify_blocking(message, keys, 2)
    assert (found[0].result, found[0].reason) == ("permerror", "From not signed")
    assert found[1].result == "pass"


def test_expired_signature_is_permerror():
    """RFC 6376 §3.5 x= / §6.1.1: a signature past its expiry is ignored with PERMFAIL."""
    message = rfc8463.SIGNED.replace(b"t=1528637909;", b"t=1528637909; x=1528637999;", 1)
    keys = {name: KeyRecord(value) for name, value in rfc8463.RECORDS.items()}
    found = verify_blocking(message, keys, 2)
    assert (found[0].result, found[0].reason) == ("permerror", "signature expired")
    assert found[1].result == "pass"


@pytest.mark.parametrize(
    ("broken", "why"),
    [
        (b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n b=/gC", "missing bh"),
        (b"a=ed25519-sha256", "unknown algorithm"),
        (b"v=1; a=ed25519", "bad version"),
        (b"i=@football.example.com;", "i= outside d="),
    ],
    ids=["missing-bh", "unknown-algorithm", "bad-version", "i-outside-d"],
)
def test_malformed_signature_is_neutral(broken, why):
    """A signature field that is not a valid DKIM-Signature (RFC 6376 §6.1.1) is neutral."""
    replacement = {
        "missing bh": b" b=/gC",
        "unknown algorithm": b"a=ed448-sha256",
        "bad version": b"v=1; v=2; a=ed25519",
        "i= outside d=": b"i=@example.net;",
    }[why]
    message = rfc8463.SIGNED.replace(broken, replacement, 1)
    keys = {name: KeyRecord(value) for name, value in rfc8463.RECORDS.items()}
    found = verify_blocking(message, keys, 2)
    assert found[0].result == "neutral", found[0]
    assert found[1].result == "pass"


def test_signature_count_is_bounded():
    """More than MAX_SIGNATURES signatures: the extra ones are not checked (neutral)."""
    first = rfc8463.SIGNED[: rfc8463.SIGNED.index(b"DKIM-Signature: v=1; a=rsa")]
    message = first * (MAX_SIGNATURES + 2) + rfc8463.SIGNED[len(first):]
    keys = {name: KeyRecord(value) for name, value in rfc8463.RECORDS.items()}
    found = verify_blocking(message, keys, MAX_SIGNATURES + 3)
    assert [r.result for r in found[:MAX_SIGNATURES]] == ["pass"] * MAX_SIGNATURES
    assert {r.result for r in found[MAX_SIGNATURES:]} == {"neutral"}


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_signature_field_gives_a_result_word(value):
    """Whatever the DKIM-Signature field holds, the verifier returns a result and never raises."""
    header = b"DKIM-Signature: " + value.replace(b"\r", b"").replace(b"\n", b" ") + b"\r\n"
    message = header + rfc8463.SIGNED[rfc8463.SIGNED.index(b"From: Joe"):]
    keys = {name: KeyRecord(v) for name, v in rfc8463.RECORDS.items()}
    for result in verify_blocking(message, keys, 1):
        assert result.method == "dkim" and result.result in RESULTS


UNSIGNED = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: signed by us\r\n"
    b"Date: Sun, 29 Nov 2026 09:00:00 +0000\r\n"
    b"Message-ID: <1@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Received: from somewhere\r\n"
    b"\r\n"
    b"Hello Bob.\r\n"
    b"\r\n"
    b"-- \r\n"
    b"Alice\r\n"
)


@pytest.fixture
def keystore(tmp_path):
    store = KeyStore(str(tmp_path / "dkim"))
    store.generate("example.org", "mail")
    return store


def zone_for(store: KeyStore, domain: str = "example.org") -> Zone:
    entries = {key.dns_name: [("TXT", txt(key.dns_record()))] for key in store.keys(domain)}
    return Zone(domain, entries)


def test_signing_adds_rsa_then_ed25519_relaxed_with_from_oversigned(keystore):
    """Two fields: rsa-sha256 and ed25519-sha256, c=relaxed/relaxed, From twice in h=,
    the RFC 6376 §5.4.1 fields the message has, and never Received."""
    fields = DKIMSigner(keystore).sign(UNSIGNED, "example.org")
    signed = fields + UNSIGNED
    sigs = [
        dkim.util.parse_tag_value(value)
        for name, value in dkim.rfc822_parse(signed)[0]
        if name.lower() == b"dkim-signature"
    ]
    assert [(s[b"a"], s[b"s"]) for s in sigs] == [
        (b"rsa-sha256", b"mail"), (b"ed25519-sha256", b"mail-ed25519")
    ]
    for sig in sigs:
        assert sig[b"c"] == b"relaxed/relaxed"
        assert sig[b"d"] == b"example.org"
        signed_fields = [h.strip() for h in sig[b"h"].split(b":")]
        assert signed_fields.count(b"from") == 2
        assert {b"to", b"subject", b"date", b"message-id", b"mime-version",
                b"content-type"} <= set(signed_fields)
        assert b"received" not in signed_fields
    assert fields.endswith(b"\r\n") and b"\r\n\r\n" not in fields


def test_no_active_key_signs_nothing(keystore):
    assert DKIMSigner(keystore).sign(UNSIGNED, "example.net") == b""
    assert DKIMSigner(keystore).sign(UNSIGNED, "../../etc") == b""


@pytest_twisted.ensureDeferred
async def test_our_signatures_verify_with_us(keystore):
    signed = DKIMSigner(keystore).sign(UNSIGNED, "example.org") + UNSIGNED
    found = await verify(signed, zone_for(keystore))
    assert [(r.result, dict(r.properties)["header.a"]) for r in found] == [
        ("pass", "rsa-sha256"),
        ("pass", "ed25519-sha256"),
    ]


def test_our_signatures_verify_with_dkimpy(keystore):
    """dkimpy's own verifier, with the records we print for DNS, accepts both signatures."""
    signed = DKIMSigner(keystore).sign(UNSIGNED, "example.org") + UNSIGNED
    records = {key.dns_name.encode() + b".": key.dns_record().encode()
               for key in keystore.keys("example.org")}

    def dnsfunc(name, timeout=5):
        return records.get(name)

    checker = dkim.DKIM(signed)
    assert checker.verify(idx=0, dnsfunc=dnsfunc)
    assert checker.verify(idx=1, dnsfunc=dnsfunc)


@pytest_twisted.ensureDeferred
async def test_rotated_key_signs_and_the_old_record_still_verifies_old_mail(keystore):
    old = DKIMSigner(keystore).sign(UNSIGNED, "example.org") + UNSIGNED
    keystore.rotate("example.org", selector="next")
    new = DKIMSigner(keystore).sign(UNSIGNED, "example.org") + UNSIGNED
    assert b"s=next;" in new and b"s=next-ed25519;" in new and b"s=mail;" in old
    for message in (old, new):
        found = await verify(message, zone_for(keystore))
        assert [r.result for r in found] == ["pass", "pass"]


def test_one_signer_follows_keygen_rotate_and_remove(tmp_path):
    """The running server's signer picks up key changes with the next message, no restart."""
    store = KeyStore(str(tmp_path / "dkim"))
    signer = DKIMSigner(store)
    assert signer.sign(UNSIGNED, "example.org") == b""
    store.generate("example.org", "first", ["ed25519"])
    assert b"s=first-ed25519;" in signer.sign(UNSIGNED, "example.org")
    store.rotate("example.org", selector="second", algorithms=["rsa"])
    fields = signer.sign(UNSIGNED, "example.org")
    assert b"s=second;" in fields and b"first" not in fields
    store.remove("example.org", "first")
    assert b"s=second;" in signer.sign(UNSIGNED, "example.org")


class BrokenResolver(Resolver):
    """A resolver with a bug: every look-up raises something that is not a DNS error."""

    def txt(self, name):
        return defer.fail(RuntimeError("a bug"))


@pytest_twisted.ensureDeferred
async def test_a_bug_below_the_verifier_is_temperror_not_a_lost_message():
    found = await DKIMVerifier(BrokenResolver(reactor, ["127.0.0.1:9"]), reactor).verify(
        rfc8463.SIGNED
    )
    assert [(r.result, r.reason) for r in found] == [("temperror", "internal error")]


@pytest_twisted.ensureDeferred
async def test_d_that_is_not_a_dns_name_is_permerror_without_a_query():
    """d=a..b cannot be looked up: no key record (permerror), and no DNS query is sent."""
    message = rfc8463.SIGNED.replace(b"d=football.example.com; i=@football.example.com;",
                                     b"d=a..b; i=@a..b;", 1)
    server = start_dns_server(reactor, football_zone())
    try:
        resolver = Resolver(reactor, [server.address], timeout=2)
        found = await DKIMVerifier(resolver, reactor).verify(message)
    finally:
        await server.stop()
    assert [(r.result, r.reason) for r in found] == [("permerror", "no key record"), ("pass", "")]
    assert resolver.queries == 1  # only test._domainkey.football.example.com
