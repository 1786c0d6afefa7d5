"""ARC chain validation (RFC 8617) against a real DNS server: chains of one and two hops
sealed with dkimpy pass (with header.oldest-pass), a change after sealing, a broken seal, a
terminated chain, a missing seal key, an incomplete set and a DNS failure (RFC 8617 §5.2.1)
fail, and an unsealed message is none."""

from __future__ import annotations

import base64
import functools

import dkim
import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor

from mailserver.dns import Resolver
from mailserver.msgauth.arc import MAX_INSTANCES, MAX_KEYS, ARCVerifier, validate_blocking
from mailserver.msgauth.dkim import KeyRecord
from mailserver.msgauth.keys import DKIMKey, generate_pem
from mailserver.msgauth.results import RESULTS
from tests.dns_server import Zone, start_dns_server
from tests.msgauth.test_dkim import BrokenResolver, ServerFailure, txt

pytest.importorskip("authres", reason="dkimpy's ARC sealing (makes the test chains) needs it")

ORIGINAL = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: list@lists.example.net\r\n"
    b"Subject: forwarded\r\n"
    b"Date: Sun, 29 Nov 2026 09:00:00 +0000\r\n"
    b"Message-ID: <arc@example.org>\r\n"
    b"\r\n"
    b"Through a list and a relay.\r\n"
)

KEYS = {
    "lists.example.net": DKIMKey("lists.example.net", "arc", "rsa", generate_pem("rsa")),
    "relay.example.com": DKIMKey("relay.example.com", "seal", "rsa", generate_pem("rsa")),
}


def seal(message: bytes, sealer: str, results: str) -> bytes:
    """``sealer`` records ``results`` in an Authentication-Results field and adds its ARC set."""
    key = KEYS[sealer]
    stamped = f"Authentication-Results: {sealer}; {results}\r\n".encode() + message
    fields = dkim.arc_sign(
        stamped, key.dns_selector.encode(), key.domain.encode(), key.pem, sealer.encode()
    )
    assert fields, "dkimpy added no ARC set"
    return b"".join(fields) + stamped


@functools.cache
def one_hop() -> bytes:
    return seal(ORIGINAL, "lists.example.net", "spf=pass smtp.mailfrom=example.org")


def two_hops(message: bytes | None = None) -> bytes:
    return seal(message or one_hop(), "relay.example.com", "arc=pass")


def zones(**drop: bool) -> list[Zone]:
    found = []
    for origin in ("example.net", "example.com"):
        entries = {
            key.dns_name: [("TXT", txt(key.dns_record()))]
            for name, key in KEYS.items()
            if name.endswith(origin) and not drop.get(name.split(".")[0])
        }
        found.append(Zone(origin, entries))
    return found


async def validate(message: bytes, *authorities) -> object:
    server = start_dns_server(reactor, *(authorities or zones()))
    try:
        resolver = Resolver(reactor, [server.address], timeout=2)
        return await ARCVerifier(resolver, reactor).verify(message)
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_one_hop_passes_unchanged_since_the_first():
    result = await validate(one_hop())
    assert (result.method, result.result) == ("arc", "pass")
    assert result.properties == (
        ("header.oldest-pass", "0"),
        ("header.d", "lists.example.net"),
        ("header.s", "arc"),
    )


@pytest_twisted.ensureDeferred
async def test_two_hops_pass_newest_sealer_named():
    result = await validate(two_hops())
    assert result.result == "pass"
    assert dict(result.properties) == {
        "header.oldest-pass": "0", "header.d": "relay.example.com", "header.s": "seal"
    }
    assert b"cv=pass" in two_hops().split(b"ARC-Seal: i=2")[1][:400]


@pytest_twisted.ensureDeferred
async def test_change_after_the_last_seal_fails():
    """The newest ARC-Message-Signature covers the body: a later change fails the chain."""
    result = await validate(two_hops().replace(b"a list", b"a LIST"))
    assert result.result == "fail"
    assert "ARC-Message-Signature" in result.reason


@pytest_twisted.ensureDeferred
async def test_change_between_hops_shows_in_oldest_pass():
    """A list that changes the body breaks the first AMS; the relay's seal still passes,
    and oldest-pass says only instance 2 saw the message as it is."""
    changed = one_hop().replace(b"Through a list", b"[list] Through a list")
    result = await validate(two_hops(changed))
    assert result.result == "pass"
    assert dict(result.properties)["header.oldest-pass"] == "2"


@pytest_twisted.ensureDeferred
async def test_broken_seal_fails():
    message = two_hops()
    start = message.index(b"ARC-Seal: i=1")
    broken = message[:start] + message[start:].replace(b" b=", b" b=AAAA", 1)
    result = await validate(broken)
    assert result.result == "fail"


@pytest_twisted.ensureDeferred
async def test_terminated_chain_fails():
    """A hop that found the chain broken seals with cv=fail; the chain stays failed."""
    broken_first = one_hop().replace(b"a list", b"a LIST")
    message = seal(broken_first, "relay.example.com", "arc=fail")
    assert b"cv=fail" in message
    result = await validate(message)
    assert result.result == "fail"


@pytest_twisted.ensureDeferred
async def test_missing_seal_key_fails():
    result = await validate(two_hops(), *zones(relay=True))
    assert result.result == "fail"


@pytest_twisted.ensureDeferred
async def test_dns_failure_is_a_permanent_fail():
    """RFC 8617 §5.2.1: all ARC failures are permanent, DNS failures included."""
    result = await validate(two_hops(), ServerFailure())
    assert result.result == "fail" and result.reason.startswith("key look-up failed")


@pytest_twisted.ensureDeferred
async def test_unsealed_message_is_none():
    result = await validate(ORIGINAL)
    assert (result.result, result.properties) == ("none", ())


def test_incomplete_set_fails():
    """An ARC set without its ARC-Authentication-Results is invalid (RFC 8617 §4.1)."""
    message = one_hop()
    lines = message.split(b"\r\n")
    start = next(
        i for i, line in enumerate(lines) if line.startswith(b"ARC-Authentication-Results")
    )
    end = start + 1
    while lines[end][:1] in (b" ", b"\t"):
        end += 1
    message = b"\r\n".join(lines[:start] + lines[end:])
    records = {k.dns_name: KeyRecord(k.dns_record()) for k in KEYS.values()}
    result = validate_blocking(message, records)
    assert result.result == "fail" and "Incomplete" in result.reason


def test_too_many_sets_fail():
    """RFC 8617 §4.2.1: more than 50 ARC sets fail without any DNS or crypto work."""
    head = b"".join(
        b"ARC-Seal: i=%d; a=rsa-sha256; cv=pass; d=x.example; s=s; b=%s\r\n"
        % (n, base64.b64encode(b"x" * 12))
        for n in range(1, MAX_INSTANCES + 2)
    )
    result = validate_blocking(head + ORIGINAL, {})
    assert result.result == "fail"


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["ARC-Seal", "ARC-Message-Signature",
                                                  "ARC-Authentication-Results"]))
def test_any_arc_field_gives_a_result_word(value, name):
    field = name.encode() + b": " + value.replace(b"\r", b"").replace(b"\n", b" ") + b"\r\n"
    records = {k.dns_name: KeyRecord(k.dns_record()) for k in KEYS.values()}
    result = validate_blocking(field + one_hop(), records)
    assert result.method == "arc" and result.result in RESULTS


@pytest_twisted.ensureDeferred
async def test_a_bug_below_the_validator_is_temperror():
    result = await ARCVerifier(BrokenResolver(reactor, ["127.0.0.1:9"]), reactor).verify(
        one_hop()
    )
    assert (result.result, result.reason) == ("temperror", "internal error")


@pytest_twisted.ensureDeferred
async def test_too_many_distinct_keys_fail_without_dns():
    """A chain naming more than MAX_KEYS different selectors fails before any look-up."""
    head = b"".join(
        b"ARC-Seal: i=%d; a=rsa-sha256; cv=pass; d=x.example; s=s%d; b=AAAA\r\n" % (n, n)
        for n in range(1, MAX_KEYS + 2)
    )
    resolver = Resolver(reactor, ["127.0.0.1:9"], timeout=1)
    result = await ARCVerifier(resolver, reactor).verify(head + ORIGINAL)
    assert (result.result, result.reason) == ("fail", f"more than {MAX_KEYS} ARC keys")
    assert resolver.queries == 0
