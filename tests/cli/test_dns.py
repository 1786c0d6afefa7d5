"""``mailserver dns DOMAIN`` and ``mailserver dns check DOMAIN`` through the installed script:
the records as zone-file lines (the DKIM ones those of the keys), the MTA-STS policy and
autoconfig files, JSON, a check against a real DNS server on 127.0.0.1 with one verdict line
per record, refusals in one line, and domain admins for their own domains only."""

from __future__ import annotations

import json
import re

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.error import CannotListenError
from twisted.internet.threads import deferToThread

from mailserver.msgauth.keys import DKIMKey, KeyStore, generate_pem
from tests.cli.conftest import ALICE, PASSWORD, Cli
from tests.dns_server import DNSServer, Zone, start_dns_server


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
        "5 of 14 records missing or wrong: publish them as 'mailserver dns example.org' "
        "prints them (old answers stay cached for up to their TTL)",
    ]


@pytest_twisted.ensureDeferred
async def test_check_passes_once_the_printed_records_are_published(cli):
    """Every record 'mailserver dns' prints, served as printed, is judged ok: exit 0."""
    configure(cli)
    keys(cli)
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
    done = await check(cli, records, "--json")
    assert done.returncode == 0, done.stdout
    verdicts = json.loads(done.stdout)
    assert verdicts["ok"] is True
    assert {v["state"] for v in verdicts["verdicts"]} == {"ok"}
    done = await check(cli, records)
    assert done.stdout.decode().splitlines()[-1] == "all 14 records are published as wanted"


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
