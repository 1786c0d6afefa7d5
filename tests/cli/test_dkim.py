"""``mailserver dkim keygen|rotate|list`` through the installed script: keys under the data
directory, the records to publish in zone-file form, rotation, refusals in one line, the
audit trail, and admins only under ``--as``."""

from __future__ import annotations

import base64
import os
import re
import stat

import dkim

from mailserver.msgauth.dkim import DKIMSigner
from mailserver.msgauth.keys import KeyStore


def records(text: str) -> dict[str, str]:
    """Zone-file TXT lines -> {name: joined record}."""
    found = {}
    for match in re.finditer(r"(\S+)\. IN TXT \( (.*?) \)", text):
        found[match.group(1)] = "".join(re.findall(r'"([^"]*)"', match.group(2)))
    return found


def test_keygen_prints_both_records_and_keys_are_0600(cli):
    out = cli.ok("dkim", "keygen", "Example.org", "--selector", "mail")
    assert out.startswith(
        "made rsa and ed25519 key(s) for example.org, selector mail (signing with it now)\n"
        "publish in DNS:\n"
    )
    published = records(out)
    assert set(published) == {
        "mail._domainkey.example.org", "mail-ed25519._domainkey.example.org"
    }
    assert published["mail._domainkey.example.org"].startswith("v=DKIM1; k=rsa; p=MIIB")
    ed = published["mail-ed25519._domainkey.example.org"]
    assert len(base64.b64decode(ed.split("p=")[1])) == 32
    for line in out.splitlines():
        assert all(len(part) <= 255 for part in re.findall(r'"([^"]*)"', line))
    for name in ("mail.rsa.key", "mail.ed25519.key"):
        path = cli.data / "dkim" / "example.org" / name
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_published_records_verify_what_the_server_signs(cli):
    """The records keygen prints are the ones that verify the server's signatures."""
    published = records(cli.ok("dkim", "keygen", "example.org"))
    message = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: x\r\n\r\nbody\r\n"
    signed = DKIMSigner(KeyStore(str(cli.data / "dkim"))).sign(message, "example.org") + message
    table = {f"{name}.".encode(): value.encode() for name, value in published.items()}
    checker = dkim.DKIM(signed)
    for index in (0, 1):
        assert checker.verify(idx=index, dnsfunc=lambda name, timeout=5: table.get(name))


def test_keygen_one_algorithm_and_default_selector(cli):
    out = cli.ok("dkim", "keygen", "example.org", "--algorithm", "ed25519")
    selector = re.search(r"selector (s\d{8})", out).group(1)
    assert list(records(out)) == [f"{selector}-ed25519._domainkey.example.org"]


def test_keygen_refuses_existing_selector_and_bad_names(cli):
    cli.ok("dkim", "keygen", "example.org", "--selector", "mail")
    err = cli.fails("dkim", "keygen", "example.org", "--selector", "mail")
    assert err == (
        "error: selector mail of example.org has keys already; choose another selector "
        "or: mailserver dkim rotate example.org\n"
    )
    assert "not a domain name" in cli.fails("dkim", "keygen", "../etc")
    assert "not a DKIM selector" in cli.fails(
        "dkim", "keygen", "example.org", "--selector", "a/b"
    )


def test_rotate_switches_selector_and_list_shows_both(cli):
    cli.ok("dkim", "keygen", "example.org", "--selector", "old", "--algorithm", "rsa")
    done = cli("dkim", "rotate", "example.org", "--selector", "new")
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert out.startswith("rotated to rsa key(s) for example.org, selector new (signing")
    assert "keep the records of selector old published" in done.stderr.decode()
    listing = cli.ok("dkim", "list")
    lines = [line for line in listing.splitlines() if not line.startswith("  ")]
    assert lines == ["example.org new rsa active", "example.org old rsa inactive"]
    assert set(records(listing)) == {"new._domainkey.example.org", "old._domainkey.example.org"}


def test_list_empty_and_unknown_domain(cli):
    done = cli("dkim", "list")
    assert done.returncode == 0 and done.stdout == b""
    assert b"no DKIM keys yet" in done.stderr
    err = cli.fails("dkim", "list", "example.net")
    assert err == (
        "error: no DKIM keys for example.net; make some: mailserver dkim keygen example.net\n"
    )


def test_keygen_and_rotate_are_audited(cli):
    cli.ok("dkim", "keygen", "example.org", "--selector", "mail")
    cli.ok("dkim", "rotate", "example.org")
    cli.ok("dkim", "list")
    trail = cli.ok("audit", "tail")
    assert "dkim keygen example.org --selector mail" in trail
    assert "dkim rotate example.org" in trail
    assert "dkim list" not in trail


def test_only_admins_manage_keys(example):
    """A plain user acting with --as may not make keys or read them."""
    err = example.fails("--as", "alice@example.org", "dkim", "keygen", "example.org")
    assert "may not" in err
    assert not (example.data / "dkim").exists()


def test_remove_retires_an_old_selector(cli):
    cli.ok("dkim", "keygen", "example.org", "--selector", "old", "--algorithm", "ed25519")
    cli.ok("dkim", "rotate", "example.org", "--selector", "new")
    err = cli.fails("dkim", "remove", "example.org", "new")
    assert err.startswith("error: selector new signs example.org's mail now; rotate")
    out = cli.ok("dkim", "remove", "example.org", "old")
    assert out == (
        "removed selector old of example.org; its TXT records can be withdrawn: "
        "old-ed25519._domainkey.example.org.\n"
    )
    assert not (cli.data / "dkim" / "example.org" / "old.ed25519.key").exists()
    assert "dkim remove example.org old" in cli.ok("audit", "tail")
