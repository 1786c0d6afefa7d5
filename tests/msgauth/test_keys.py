"""DKIM keys on disk: generation (RSA 2048, Ed25519), 0600 files, the active selector,
rotation keeping old keys, the DNS record to publish, and names that cannot become paths."""

from __future__ import annotations

import base64
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailserver.msgauth.keys import (
    DKIMKey,
    DKIMKeyError,
    KeyStore,
    algorithms_for,
    check_domain,
    check_selector,
    default_selector,
)
from tests.msgauth.rfc8463 import ED25519_PUBLIC, ED25519_SEED


@pytest.fixture
def store(tmp_path):
    return KeyStore(str(tmp_path / "dkim"))


def test_keygen_makes_rsa_2048_and_ed25519_files_0600(store, tmp_path):
    """Both keys are PKCS#8 PEM files, owner-only, at <domain>/<selector>.<alg>.key."""
    made = store.generate("Example.ORG", "mail")
    assert [(k.domain, k.selector, k.algorithm) for k in made] == [
        ("example.org", "mail", "rsa"),
        ("example.org", "mail", "ed25519"),
    ]
    for algorithm in ("rsa", "ed25519"):
        path = tmp_path / "dkim" / "example.org" / f"mail.{algorithm}.key"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if algorithm == "rsa":
            assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
        else:
            assert isinstance(key, ed25519.Ed25519PrivateKey)
    assert store.active_selector("example.org") == "mail"
    assert [k.algorithm for k in store.active("example.org")] == ["rsa", "ed25519"]
    assert store.domains() == ["example.org"]


def test_dns_records_are_what_rfc6376_and_rfc8463_publish(store):
    """RSA: p= is the SubjectPublicKeyInfo; Ed25519: p= is the bare 32-byte key."""
    rsa_key, ed_key = store.generate("example.org", "mail")
    assert rsa_key.dns_name == "mail._domainkey.example.org"
    assert ed_key.dns_name == "mail-ed25519._domainkey.example.org"
    assert rsa_key.dns_record().startswith("v=DKIM1; k=rsa; p=MIIBIjAN")
    record = ed_key.dns_record()
    assert record.startswith("v=DKIM1; k=ed25519; p=")
    assert len(base64.b64decode(record.split("p=")[1])) == 32


def test_ed25519_public_key_of_the_rfc8463_example():
    """The RFC 8463 A.1 private key gives the A.2 public key, and dkimpy gets the seed back."""
    private = ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(ED25519_SEED))
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key = DKIMKey("football.example.com", "brisbane", "ed25519", pem)
    assert key.public_base64() == ED25519_PUBLIC
    assert key.private_for_dkimpy() == ED25519_SEED.encode()
    assert key.signature_algorithm == "ed25519-sha256"


def test_one_algorithm_only(store):
    made = store.generate("example.org", "ed", algorithms_for("ed25519"))
    assert [k.algorithm for k in made] == ["ed25519"]
    assert algorithms_for("both") == ("rsa", "ed25519")
    with pytest.raises(DKIMKeyError, match="unknown key algorithm"):
        algorithms_for("dsa")


def test_existing_selector_is_never_overwritten(store):
    """A second keygen for the same selector is refused and leaves the first keys alone."""
    first = store.generate("example.org", "mail", ["ed25519"])
    with pytest.raises(DKIMKeyError, match="has keys already"):
        store.generate("example.org", "mail", ["ed25519"])
    assert store.keys("example.org") == first


def test_keygen_does_not_change_the_active_selector(store):
    store.generate("example.org", "one", ["ed25519"])
    store.generate("example.org", "two", ["ed25519"])
    assert store.active_selector("example.org") == "one"
    store.activate("example.org", "two")
    assert [k.selector for k in store.active("example.org")] == ["two"]
    with pytest.raises(DKIMKeyError, match="no keys for selector"):
        store.activate("example.org", "three")


def test_rotate_activates_a_new_selector_and_keeps_the_old(store):
    """Rotation keeps the old key (its record stays published), same algorithms by default."""
    store.generate("example.org", "mail", ["ed25519"])
    now = 1_795_000_000  # 2026-11-18 UTC
    made = store.rotate("example.org", now=now)
    assert [(k.selector, k.algorithm) for k in made] == [("s20261118", "ed25519")]
    assert store.active_selector("example.org") == "s20261118"
    again = store.rotate("example.org", now=now)
    assert again[0].selector == "s20261118-2"
    assert store.selectors("example.org") == ["mail", "s20261118", "s20261118-2"]


def test_default_selector_is_unique():
    assert default_selector([], 0) == "s19700101"
    assert default_selector(["s19700101", "s19700101-2"], 0) == "s19700101-3"


@pytest.mark.parametrize(
    "name", ["..", "../etc", "a/b.org", "example", "-bad.org", "ex ample.org", "", "a..b.org"]
)
def test_bad_domains_never_become_paths(name, store):
    with pytest.raises(DKIMKeyError, match="not a domain name"):
        check_domain(name)
    with pytest.raises(DKIMKeyError):
        store.generate(name, "mail")


@pytest.mark.parametrize("name", ["..", "a/b", "-x", "x_y", "", "sel.", "a" * 64, "mail-ed25519"])
def test_bad_selectors_are_refused(name):
    with pytest.raises(DKIMKeyError, match="not a DKIM selector"):
        check_selector(name)


def test_idn_domain_is_stored_as_a_label():
    assert check_domain("Bücher.example") == "xn--bcher-kva.example"


def test_no_keys_no_domains(store):
    assert store.domains() == []
    assert store.active("example.org") == []
    assert store.active("not a domain") == []


def test_remove_an_old_selector_but_never_the_active_one(store):
    store.generate("example.org", "old")
    store.rotate("example.org", selector="new")
    with pytest.raises(DKIMKeyError, match="signs example.org's mail now"):
        store.remove("example.org", "new")
    gone = store.remove("example.org", "old")
    assert [(k.selector, k.algorithm) for k in gone] == [("old", "rsa"), ("old", "ed25519")]
    assert store.selectors("example.org") == ["new"]
    with pytest.raises(DKIMKeyError, match="no keys for selector old"):
        store.remove("example.org", "old")
