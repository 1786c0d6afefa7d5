"""``mailserver dns DOMAIN`` and ``mailserver dns check DOMAIN`` through the installed script:
the records as zone-file lines (the DKIM ones those of the keys), the MTA-STS policy and
autoconfig files, JSON, a check against a real DNS server on 127.0.0.1 with one verdict line
per record, refusals in one line, and domain admins for their own domains only."""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import subprocess

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import fail
from twisted.internet.error import CannotListenError
from twisted.internet.threads import deferToThread
from twisted.names import dns as names_dns
from twisted.web.resource import Resource
from twisted.web.server import Site

from mailserver.msgauth.keys import DKIMKey, KeyStore, generate_pem
from tests.cli.conftest import ALICE, PASSWORD, Cli, mailserver_script
from tests.dns_server import DNSServer, Zone, start_dns_server
from tests.pki import make_ca


def configure(cli: Cli) -> Cli:
    """The server as mail.example.org on 192.0.2.1, plain POP3 switched off."""
    text = cli.config.read_text().replace(
        "[server]\n",
        '[server]\nhostname = "mail.example.org"\npublic_ipv4 = ["192.0.2.1"]\n',
    )
    cli.config.write_text(text + '\n[pop3]\nlisten = []\n')
    return cli


def keys(cli: Cli) -> list[DKIMKey]:
    cli.ok("dkim", "keygen", "example.org", "--selector", "s1")
    return KeyStore(str(cli.data / "dkim")).keys("example.org")


def serve(records: dict) -> DNSServer:
    zone = Zone("example.org", records)
    for _ in range(20):
        try:
            return start_dns_server(reactor, zone)
        except CannotListenError:  # the free UDP port's TCP twin is taken: another port
            continue
    return start_dns_server(reactor, zone)


async def check(cli: Cli, records: dict, *options: str):
    server = serve(records)
    try:
        return await deferToThread(
            cli, "dns", "check", "example.org", "--nameserver", server.address, *options
        )
    finally:
        await server.stop()


def test_records_as_zone_lines(cli):
    configure(cli)
    rsa, ed = keys(cli)
    done = cli("dns", "example.org")
    assert done.returncode == 0 and done.stderr == b""
    out = done.stdout.decode()
    lines = [line for line in out.splitlines() if not line.startswith(";")]
    policy_id = re.search(r"id=([0-9a-f]{20})", out).group(1)
    assert lines[:3] == [
        "example.org. IN MX 10 mail.example.org.",
        'example.org. IN TXT "v=spf1 mx ip4:192.0.2.1 -all"',
        "mail.example.org. IN A 192.0.2.1",
    ]
    rsa_strings = re.findall(r'"([^"]*)"', lines[3])
    assert lines[3].startswith("s1._domainkey.example.org. IN TXT ( ")
    assert "".join(rsa_strings) == rsa.dns_record()
    assert lines[4:] == [
        f's1-ed25519._domainkey.example.org. IN TXT ( "{ed.dns_record()}" )',
        '_dmarc.example.org. IN TXT "v=DMARC1; p=quarantine; '
        'rua=mailto:dmarc-reports@example.org; adkim=s; aspf=s"',
        f'_mta-sts.example.org. IN TXT "v=STSv1; id={policy_id}"',
        '_smtp._tls.example.org. IN TXT "v=TLSRPTv1; rua=mailto:tls-reports@example.org"',
        # the embedded listeners are local-only: clients reach the standard ports
        "_submission._tcp.example.org. IN SRV 0 1 587 mail.example.org.",
        "_submissions._tcp.example.org. IN SRV 0 1 465 mail.example.org.",
        "_imap._tcp.example.org. IN SRV 0 1 143 mail.example.org.",
        "_imaps._tcp.example.org. IN SRV 0 1 993 mail.example.org.",
        "_pop3._tcp.example.org. IN SRV 0 0 0 .",
        "_pop3s._tcp.example.org. IN SRV 0 1 995 mail.example.org.",
    ]
    comments = [line for line in out.splitlines() if line.startswith(";")]
    assert "; SPF (RFC 7208): only the MX host and the listed addresses send its mail" in comments
    assert ";   mode: testing" in comments  # the policy file, commented
    assert "; DKIM (RFC 6376) selector s1 (signing now): rsa public key" in comments
    # the DKIM records are those 'dkim list' prints
    listed = cli.ok("dkim", "list", "example.org")
    assert lines[3] in listed and lines[4] in listed


def test_options_files_and_json(cli):
    configure(cli)
    out = cli.ok("dns", "example.org", "--policy", "reject", "--rua", "d@example.net",
                 "--mta-sts-mode", "enforce", "--json")
    data = json.loads(out)
    values = {r["kind"]: r["value"] for r in data["records"]}
    assert values["DMARC"] == "v=DMARC1; p=reject; rua=mailto:d@example.net; adkim=s; aspf=s"
    consent = [r for r in data["records"] if r["kind"] == "DMARC-rua"]
    assert [(r["name"], r["value"]) for r in consent] == [
        ("example.org._report._dmarc.example.net", "v=DMARC1")  # RFC 7489 §7.1
    ]
    assert data["mta_sts_policy"] == {
        "url": "https://mta-sts.example.org/.well-known/mta-sts.txt",
        "text": "version: STSv1\r\nmode: enforce\r\nmx: mail.example.org\r\nmax_age: 604800\r\n",
    }
    assert "DKIM" not in values  # no keys yet
    assert cli.ok("dns", "example.org", "--mta-sts-policy", "--mta-sts-mode", "enforce") == (
        "version: STSv1\nmode: enforce\nmx: mail.example.org\nmax_age: 604800\n"
    )
    xml = cli.ok("dns", "example.org", "--autoconfig")
    assert "<port>993</port>" in xml and "<port>110</port>" not in xml


def test_notes_for_a_default_hostname_and_no_keys(cli):
    done = cli("dns", "example.org")
    assert done.returncode == 0
    assert done.stderr.decode() == (
        "note: [server] hostname is 'localhost': set it to the server's public name, the MX host\n"
        "note: no DKIM keys for example.org; make some: mailserver dkim keygen example.org\n"
    )


def test_bad_input_is_one_line(cli):
    configure(cli)
    assert cli.fails("dns", "../etc").startswith("error: not a domain name: '../etc'")
    assert cli.fails("dns", "example.org", "--rua", "nobody") == (
        "error: --rua 'nobody': not a mail address (e.g. reports@example.org)\n"
    )
    assert cli.fails("dns", "example.org", "--nameserver", "127.0.0.1") == (
        "error: --nameserver is for 'mailserver dns check DOMAIN'\n"
    )
    assert cli.fails("dns", "check", "example.org", "--nameserver", "ns.example:x") == (
        "error: nameserver 'ns.example:x': not an IP address with an optional port "
        "(e.g. 127.0.0.1:53)\n"
    )
    usage = cli("dns", "check")
    assert usage.returncode == 2 and b"expected DOMAIN or: check DOMAIN" in usage.stderr


def test_unreadable_keys_are_one_line(cli):
    configure(cli)
    broken = cli.data / "dkim" / "example.org" / "s1.rsa.key"
    broken.mkdir(parents=True)  # unreadable as a file, even for root
    assert cli.fails("dns", "example.org") == (
        f"error: cannot read the DKIM keys of example.org: Is a directory ({broken}); "
        "run as the server's user\n"
    )


def test_unreachable_nameserver_is_one_line(cli):
    configure(cli)
    keys(cli)
    err = cli.fails("dns", "check", "example.org", "--nameserver", "127.0.0.1:1",
                    "--timeout", "0.5")
    assert err.startswith("error: no answers from 127.0.0.1:1: MX example.org: ")


@pytest_twisted.ensureDeferred
async def test_check_says_which_are_ok_missing_or_wrong(cli):
    configure(cli)
    rsa, ed = keys(cli)
    rsa_record = rsa.dns_record()
    other_ed = DKIMKey("example.org", "s1", "ed25519", generate_pem("ed25519")).dns_record()
    records = {
        "example.org": [
            ("MX", (10, "mail.example.org")),
            ("TXT", "v=spf1 ip4:192.0.2.1 +mx -all"),  # same terms, another order
            ("TXT", "google-site-verification=abc"),
        ],
        "mail.example.org": [("A", "192.0.2.1")],
        "s1._domainkey.example.org": [("TXT", (rsa_record[:200], rsa_record[200:]))],
        "s1-ed25519._domainkey.example.org": [("TXT", other_ed)],
        "_dmarc.example.org": [("TXT", "v=DMARC1; p=none; rua=mailto:dmarc-reports@example.org")],
        # no _mta-sts
        "_smtp._tls.example.org": [("TXT", "v=TLSRPTv1; rua=mailto:tls-reports@example.org")],
        "_submission._tcp.example.org": [("SRV", (5, 0, 587, "mail.example.org"))],
        "_submissions._tcp.example.org": [("SRV", (0, 1, 465, "mail.example.org"))],
        "_imap._tcp.example.org": [("SRV", (0, 1, 2143, "mail.example.org"))],
        "_imaps._tcp.example.org": [("SRV", (0, 1, 993, "mail.example.org"))],
        "_pop3._tcp.example.org": [("SRV", (0, 0, 0, "."))],
        # no _pop3s
    }
    done = await check(cli, records)
    assert done.returncode == 1, done.stderr
    assert done.stderr == b""
    found = other_ed.split("p=")[1]
    want = ed.dns_record().split("p=")[1]
    assert done.stdout.decode().splitlines() == [
        "MX example.org MX: ok",
        "SPF example.org TXT: ok",
        "host mail.example.org A: ok",
        "DKIM s1._domainkey.example.org TXT: ok",
        f'DKIM s1-ed25519._domainkey.example.org TXT: wrong: found "v=DKIM1; k=ed25519; '
        f'p={found[:8]}...{found[-12:]}", want "v=DKIM1; k=ed25519; '
        f'p={want[:8]}...{want[-12:]}"',
        'DMARC _dmarc.example.org TXT: wrong: found "v=DMARC1; p=none; '
        'rua=mailto:dmarc-reports@example.org", want "v=DMARC1; p=quarantine; '
        'rua=mailto:dmarc-reports@example.org; adkim=s; aspf=s"',
        "MTA-STS _mta-sts.example.org TXT: missing",
        "TLSRPT _smtp._tls.example.org TXT: ok",
        "SRV _submission._tcp.example.org SRV: ok",
        "SRV _submissions._tcp.example.org SRV: ok",
        "SRV _imap._tcp.example.org SRV: wrong: found 0 1 2143 mail.example.org., "
        "want 0 1 143 mail.example.org",
        "SRV _imaps._tcp.example.org SRV: ok",
        "SRV _pop3._tcp.example.org SRV: ok",
        "SRV _pop3s._tcp.example.org SRV: missing",
        "MTA-STS https://mta-sts.example.org/.well-known/mta-sts.txt file: missing "
        "(mta-sts.example.org has no address)",
        "6 of 15 records missing or wrong: publish them as 'mailserver dns example.org' "
        "prints them (old answers stay cached for up to their TTL)",
    ]


def published(cli: Cli) -> dict:
    """A test zone holding every record 'mailserver dns --json' prints, as printed."""
    printed = json.loads(cli.ok("dns", "example.org", "--json"))["records"]
    records: dict = {}
    for record in printed:
        value = record["value"]
        if record["type"] == "TXT":
            value = tuple(value[i:i + 255] for i in range(0, len(value), 255))
        elif record["type"] == "MX":
            value = (int(value.split()[0]), value.split()[1])
        elif record["type"] == "SRV":
            *numbers, target = value.split()
            value = (*map(int, numbers), target)
        records.setdefault(record["name"], []).append((record["type"], value))
    return records


@pytest_twisted.ensureDeferred
async def test_check_finds_every_printed_record(cli):
    """Every DNS record 'mailserver dns' prints, served as printed, is judged ok; the policy
    file is missing while mta-sts.example.org has no address."""
    configure(cli)
    keys(cli)
    done = await check(cli, published(cli), "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False
    states = [(v["type"], v["state"]) for v in report["verdicts"]]
    assert states == [(t, "ok") for t, _ in states[:-1]] + [("file", "missing")]
    assert len(states) == 15


class FailingZone(Zone):
    """``failing`` names get SERVFAIL: a real DNS error for one record."""

    def __init__(self, records: dict, failing: str) -> None:
        super().__init__("example.org", records)
        self.failing = failing.encode()

    def _lookup(self, name, cls, type, timeout=None):
        if name.lower() == self.failing:
            return fail(names_dns.DNSServerError(name))
        return super()._lookup(name, cls, type, timeout)


@pytest_twisted.ensureDeferred
async def test_a_failed_look_up_is_its_own_verdict(cli):
    configure(cli)
    keys(cli)
    zone = FailingZone(published(cli), "_dmarc.example.org")
    server = start_dns_server(reactor, zone)
    try:
        done = await deferToThread(
            cli, "dns", "check", "example.org", "--nameserver", server.address
        )
    finally:
        await server.stop()
    lines = done.stdout.decode().splitlines()
    assert done.returncode == 1
    (dmarc,) = [line for line in lines if "_dmarc" in line]
    assert dmarc.startswith("DMARC _dmarc.example.org TXT: failed: TXT _dmarc.example.org: ")
    assert "SERVFAIL" in dmarc  # dnspython's words
    assert lines[-2:] == [
        "1 of 15 records could not be looked up: try again later",
        "1 of 15 records missing or wrong: publish them as 'mailserver dns example.org' "
        "prints them (old answers stay cached for up to their TTL)",  # the policy file
    ]


def free_https_address() -> str:
    """A 127.44.x.1 whose port 443 is free (the policy URL has no port)."""
    for n in range(1, 40):
        with socket.socket() as probe:
            try:
                probe.bind((f"127.44.{n}.1", 443))
            except OSError:
                continue
            return f"127.44.{n}.1"
    pytest.skip("no free 127.44.x.1:443 for the MTA-STS policy server")


class PolicyFile(Resource):
    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain")
        return self.body


@pytest.mark.skipif(os.geteuid() != 0, reason="serving the policy on port 443 needs root")
@pytest_twisted.ensureDeferred
async def test_check_fetches_the_mta_sts_policy_over_verified_https(cli, tmp_path):
    """With the policy served at https://mta-sts.example.org/ (its A record in the checked
    DNS, its certificate from a CA the process trusts) every record is ok: exit 0; another
    policy, or a certificate nobody trusts, is wrong."""
    configure(cli)
    keys(cli)
    ca = make_ca()
    trusted = tmp_path / "ca.pem"
    trusted.write_bytes(ca.pem)
    address = free_https_address()
    records = published(cli) | {"mta-sts.example.org": [("A", address)]}
    policy = PolicyFile(cli.ok("dns", "example.org", "--mta-sts-policy").encode())
    https = reactor.listenSSL(443, Site(policy), ca.server_options("mta-sts.example.org"),
                              interface=address)
    server = serve(records)
    run = functools.partial(
        subprocess.run, capture_output=True, timeout=60,
        env=os.environ | {"SSL_CERT_FILE": str(trusted), "SSL_CERT_DIR": str(tmp_path)},
    )
    command = [mailserver_script(), "--config", str(cli.config), "dns", "check",
               "example.org", "--nameserver", server.address]
    try:
        done = await deferToThread(run, command)
        assert done.returncode == 0, done.stdout
        lines = done.stdout.decode().splitlines()
        assert lines[-2:] == [
            "MTA-STS https://mta-sts.example.org/.well-known/mta-sts.txt file: ok",
            "all 15 records are published as wanted",
        ]
        policy.body = policy.body.replace(b"mode: testing", b"mode: enforce")
        done = await deferToThread(run, command)
        assert done.returncode == 1
        assert done.stdout.decode().splitlines()[-2] == (
            "MTA-STS https://mta-sts.example.org/.well-known/mta-sts.txt file: wrong: found "
            "version: STSv1; mode: enforce; mx: mail.example.org; max_age: 604800, want "
            "version: STSv1; mode: testing; mx: mail.example.org; max_age: 604800"
        )
        untrusting = functools.partial(run, env=os.environ | {
            "SSL_CERT_FILE": str(tmp_path / "none.pem"), "SSL_CERT_DIR": str(tmp_path)})
        done = await deferToThread(untrusting, command)
        line = done.stdout.decode().splitlines()[-2]
        assert line.startswith(
            "MTA-STS https://mta-sts.example.org/.well-known/mta-sts.txt file: wrong: found "
            "no policy: "
        ), line
        assert "certificate verify failed" in line
    finally:
        await server.stop()
        await https.stopListening()


def test_domain_admins_read_their_own_domains_records(example):
    configure(example)
    example.ok("user", "add", "bob@example.org", "--password-stdin", input=PASSWORD + "\n")
    example.ok("user", "role", ALICE, "domain-admin", "--domain", "example.org")
    assert "example.org. IN MX" in example.ok("--as", ALICE, "dns", "example.org")
    assert "may not" in example.fails("--as", ALICE, "dns", "example.net")
    assert "may not" in example.fails("--as", "bob@example.org", "dns", "example.org")
    assert "may not" in example.fails("--as", "bob@example.org", "dns", "check", "example.org")


def test_public_addresses_must_be_of_their_family(cli):
    cli.config.write_text(
        cli.config.read_text().replace("[server]\n", '[server]\npublic_ipv6 = ["192.0.2.1"]\n')
    )
    assert cli.fails("dns", "example.org", status=2) == (
        "config error: server.public_ipv6: [0] '192.0.2.1' is not an IPv6 address "
        '(e.g. "2001:db8::1")\n'
    )
