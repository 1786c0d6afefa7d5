"""DKIM signing end to end: ``mailserver dkim keygen`` makes keys for example.org and prints
the records; they are served by a real DNS server; alice submits on server A's submission
port; A relays to server B (MX of remote.test, a second real process) and the message in
carol's mailbox at B carries an RSA and an Ed25519 signature of example.org that verify with
B's own checks (its Authentication-Results: dkim=pass twice, DMARC p=reject passes), with our
verifier, with dkimpy's own ``dkim.verify`` (keys through dnspython) and, when
``opendkim-tools`` is installed, with ``opendkim-testmsg``."""

from __future__ import annotations

import re
import smtplib
import subprocess
from pathlib import Path

import dkim
import dns.resolver
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from mailserver.dns import Resolver
from mailserver.message.headers import get_headers, parse_headers
from mailserver.msgauth.dkim import DKIMVerifier
from mailserver.msgauth.results import parse_authentication_results
from tests.cli.conftest import mailserver_script
from tests.dns_server import Zone, start_dns_server
from tests.e2e.conftest import ServerProcess, free_port
from tests.e2e.mail import PASSWORD, inbox_messages, insecure_context, provision
from tests.e2e.test_submission import files_in_inbox, wait_for
from tests.msgauth import opendkim

pytestmark = pytest.mark.e2e

MESSAGE = (
    "From: Alice <alice@example.org>\r\nTo: Carol <carol@remote.test>\r\n"
    "Subject: signed on the way out\r\nMIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n\r\n"
    "Hello Carol,\r\n\r\nthis left example.org with two DKIM signatures.\r\n"
)


def keygen(server: ServerProcess) -> dict[str, str]:
    """Run the real CLI against A's config; the printed records as {name: value}."""
    done = subprocess.run(
        [mailserver_script(), "--config", str(server.config_path),
         "dkim", "keygen", "example.org", "--selector", "mail"],
        capture_output=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    records = {}
    for match in re.finditer(r"(\S+)\. IN TXT \( (.*?) \)", done.stdout.decode()):
        records[match.group(1)] = "".join(re.findall(r'"([^"]*)"', match.group(2)))
    assert len(records) == 2, done.stdout
    return records


def dnspython_txt(address: str):
    """A dkimpy ``dnsfunc`` that asks our test DNS server with dnspython."""
    host, port = address.rsplit(":", 1)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = int(port)

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        answer = resolver.resolve(name.decode(), "TXT", raise_on_no_answer=False)
        return b"".join(answer.rrset[0].strings) if answer.rrset else None

    return lookup


@pytest_twisted.ensureDeferred
async def test_submitted_mail_arrives_signed_and_verifies(tmp_path):
    b_port = free_port()
    a = ServerProcess(
        tmp_path / "a",
        {"server": {"hostname": "mail.example.org"},
         "delivery": {"port": b_port, "first_retry": 1.0}},
        listen_keys=("http.listen", "submission.listen"),
    )
    records = await deferToThread(keygen, a)
    zones = [
        Zone("test", {"remote.test": [("MX", (10, "mx.remote.test"))],
                      "mx.remote.test": [("A", "127.0.0.2")]}),
        Zone("example.org", {
            "example.org": [("TXT", "v=spf1 ip4:127.0.0.0/8 -all")],
            "_dmarc.example.org": [("TXT", "v=DMARC1; p=reject")],
            **{name: [("TXT", tuple(value[i:i + 255] for i in range(0, len(value), 255)))]
               for name, value in records.items()},
        }),
    ]
    with_opendkim = opendkim.unavailable() is None
    server = (opendkim.start_port53(reactor, *zones) if with_opendkim
              else start_dns_server(reactor, *zones))
    # B checks arriving mail (SPF, DKIM, DMARC) with the same DNS server.
    b = ServerProcess(
        tmp_path / "b",
        {"server": {"hostname": "mx.remote.test"},
         "smtp": {"listen": [f"tcp:{b_port}:interface=127.0.0.2"]},
         "delivery": {"nameservers": [server.address]},
         "msgauth": {"enabled": True}},
        listen_keys=("http.listen",),
    )
    # A finds B through the same DNS server (written before A starts).
    text = a.config_path.read_text().replace(
        "[delivery]\n", f"[delivery]\nnameservers = [\"{server.address}\"]\n", 1
    )
    a.config_path.write_text(text)
    try:
        await provision(Path(a.data_dir), "example.org", ["alice"])
        await provision(Path(b.data_dir), "remote.test", ["carol"])
        await deferToThread(b.start)
        await deferToThread(a.start)

        def submit() -> dict:
            with smtplib.SMTP("127.0.0.1", a.ports["submission.listen"], timeout=10) as client:
                client.starttls(context=insecure_context())
                client.login("alice@example.org", PASSWORD)
                return client.sendmail("alice@example.org", ["carol@remote.test"],
                                       MESSAGE.encode())

        assert await deferToThread(submit) == {}
        await deferToThread(
            wait_for, lambda: files_in_inbox(Path(b.data_dir), "carol@remote.test") == 1
        )
        a.stop()
        b.stop()
        [carol] = await inbox_messages(Path(b.data_dir), "carol@remote.test")
        assert carol.count(b"DKIM-Signature:") == 2, carol[:2000]

        ours = await DKIMVerifier(Resolver(reactor, [server.address]), reactor).verify(carol)
        assert [(r.result, dict(r.properties)["header.s"]) for r in ours] == [
            ("pass", "mail"), ("pass", "mail-ed25519")
        ]
        assert {dict(r.properties)["header.d"] for r in ours} == {"example.org"}

        # B's own verdict, in its Authentication-Results field: both signatures pass and
        # DMARC (p=reject) passes through them.
        [(authserv, found)] = [
            parse_authentication_results(value)
            for value in get_headers(parse_headers(carol), "Authentication-Results")
        ]
        assert authserv == "mx.remote.test"
        verdicts = [(r.method, r.result, dict(r.properties).get("header.d")) for r in found]
        assert ("dkim", "pass", "example.org") in verdicts
        assert [v for v in verdicts if v[0] == "dkim"] == [("dkim", "pass", "example.org")] * 2
        assert ("dmarc", "pass") in [(m, r) for m, r, _ in verdicts]

        lookup = dnspython_txt(server.address)
        checker = dkim.DKIM(carol)
        assert await deferToThread(checker.verify, 0, lookup)
        assert await deferToThread(checker.verify, 1, lookup)
        assert await deferToThread(dkim.verify, carol, dnsfunc=lookup)

        if with_opendkim:
            done = await opendkim.verify_async(carol, server.host)
            assert (done.returncode, done.stderr) == (0, b"")
            tampered = await opendkim.verify_async(
                carol.replace(b"two DKIM", b"three DKIM"), server.host
            )
            assert tampered.returncode != 0
    finally:
        for process in (a, b):
            if process.running:
                process.stop()
        await server.stop()
