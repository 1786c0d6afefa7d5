"""Submission end to end: a user submits over TLS with AUTH to server A (real process); A's
spool finds the recipient domain's MX through a real DNS server and delivers to server B
(a second real process on 127.0.0.2); local recipients land in A's store; a 5xx from B comes
back to the sender as a DSN. Plus the AUTH rules: TLS first, 535 on a bad password, 553 for
a sender the user does not own, implicit TLS on the 465-style port, and swaks."""

from __future__ import annotations

import email
import email.policy
import json
import shutil
import smtplib
import subprocess
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from tests.dns_server import Zone, start_dns_server
from tests.e2e.conftest import ServerProcess, free_port
from tests.e2e.mail import inbox_messages, insecure_context, provision

pytestmark = pytest.mark.e2e

MESSAGE = (
    "From: Alice <alice@example.org>\r\nTo: carol@remote.test, bob@example.org\r\n"
    "Subject: outbound\r\n\r\nHello from the submission port.\r\n"
)


def files_in_inbox(data_dir: Path, address: str) -> int:
    local, domain = address.split("@")
    root = data_dir / "mail" / domain / local
    return sum(len(list((root / sub).iterdir())) for sub in ("new", "cur") if (root / sub).exists())


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


@pytest.fixture
def two_servers(tmp_path):
    """A (submission + MX for example.org) and B (MX for remote.test on 127.0.0.2)."""
    b_port = free_port()
    dns = start_dns_server(reactor, Zone("test", {
        "remote.test": [("MX", (10, "mx.remote.test"))],
        "mx.remote.test": [("A", "127.0.0.2")],
    }))
    b = ServerProcess(
        tmp_path / "b",
        {"server": {"hostname": "mx.remote.test"},
         "smtp": {"listen": [f"tcp:{b_port}:interface=127.0.0.2"]}},
        listen_keys=("http.listen",),
    )
    a = ServerProcess(
        tmp_path / "a",
        {"server": {"hostname": "mail.example.org"},
         "delivery": {"nameservers": [dns.address], "port": b_port, "first_retry": 1.0}},
        listen_keys=("http.listen", "smtp.listen", "submission.listen", "submission.tls_listen"),
    )
    yield a, b
    for server in (a, b):
        if server.running:
            server.stop()
    pytest_twisted.blockon(dns.stop())


@pytest_twisted.ensureDeferred
async def test_submit_local_and_remote_then_bounce(two_servers):
    a, b = two_servers
    await provision(Path(a.data_dir), "example.org", ["alice", "bob"])
    await provision(Path(b.data_dir), "remote.test", ["carol"])
    await deferToThread(b.start)
    await deferToThread(a.start)
    port = a.ports["submission.listen"]

    def submit(recipients: list[str]) -> dict:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.starttls(context=insecure_context())
            client.login("alice@example.org", "secret-pw")
            return client.sendmail("alice@example.org", recipients, MESSAGE.encode())

    refused = await deferToThread(submit, ["carol@remote.test", "bob@example.org"])
    assert refused == {}
    await deferToThread(wait_for, lambda: files_in_inbox(Path(b.data_dir),
                                                         "carol@remote.test") == 1)
    # a recipient B refuses permanently comes back to alice as a DSN
    await deferToThread(submit, ["nobody@remote.test"])
    await deferToThread(wait_for, lambda: files_in_inbox(Path(a.data_dir),
                                                         "alice@example.org") == 1)
    a.stop()
    b.stop()
    [carol] = await inbox_messages(Path(b.data_dir), "carol@remote.test")
    assert carol.endswith(MESSAGE.split("\r\n\r\n", 1)[1].encode())
    assert b"Message-ID: <" in carol and b"Date: " in carol  # added by the MSA
    assert b"with ESMTPSA" in carol  # submitted over TLS with AUTH
    assert b"by mx.remote.test" in carol and b"with ESMTPS" in carol  # relayed over TLS
    [bob] = await inbox_messages(Path(a.data_dir), "bob@example.org")
    assert b"Subject: outbound" in bob
    [dsn] = await inbox_messages(Path(a.data_dir), "alice@example.org")
    report = email.message_from_bytes(dsn, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    status = report.get_payload()[1].get_payload()[1]
    assert status["Action"] == "failed" and status["Status"] == "5.1.1"
    assert status["Final-Recipient"] == "rfc822; nobody@remote.test"


@pytest_twisted.ensureDeferred
async def test_auth_rules(two_servers):
    a, _b = two_servers
    await provision(Path(a.data_dir), "example.org", ["alice", "bob"])
    await deferToThread(a.start)
    port, tls_port = a.ports["submission.listen"], a.ports["submission.tls_listen"]

    def check() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("c.example")
            assert not client.has_extn("auth")  # RFC 8314: no AUTH before TLS
            assert client.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUub3JnAHg=")[0] == 538
            assert client.docmd("MAIL", "FROM:<alice@example.org>")[0] == 530
            client.starttls(context=insecure_context())
            client.ehlo("c.example")
            assert "PLAIN" in client.esmtp_features["auth"]
            assert client.docmd("MAIL", "FROM:<alice@example.org>")[0] == 530
            with pytest.raises(smtplib.SMTPAuthenticationError) as bad:
                client.login("alice@example.org", "wrong")
            assert bad.value.smtp_code == 535
            client.login("alice@example.org", "secret-pw")
            code, text = client.docmd("MAIL", "FROM:<bob@example.org>")
            assert (code, text[:5]) == (553, b"5.7.1")
            assert client.docmd("MAIL", "FROM:<alice+list@example.org>")[0] == 250
            client.rset()
        implicit = smtplib.SMTP_SSL("127.0.0.1", tls_port, timeout=10, context=insecure_context())
        with implicit as client:
            client.login("alice@example.org", "secret-pw")
            with pytest.raises(smtplib.SMTPDataError) as spoof:
                client.sendmail("alice@example.org", ["bob@example.org"],
                                b"From: bob@example.org\r\nSubject: spoof\r\n\r\nx\r\n")
            assert spoof.value.smtp_code == 553
            assert client.sendmail("alice@example.org", ["bob@example.org"],
                                   MESSAGE.encode()) == {}

    await deferToThread(check)
    a.stop()
    assert len(await inbox_messages(Path(a.data_dir), "bob@example.org")) == 1
    # every login is in the audit log, with where it came from and no secret
    lines = (Path(a.data_dir) / "audit" / "audit.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["event"] for e in events].count("login_ok") == 2
    failed = [e for e in events if e["event"] == "login_failed"]
    # smtplib tries PLAIN, then LOGIN, with the wrong password
    assert failed and all(e["who"] == "alice@example.org" for e in failed)
    assert all(e["where"] == "127.0.0.1" and e["details"]["protocol"] == "smtp" for e in events)
    assert "secret-pw" not in "".join(lines)


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed (apt swaks)")
@pytest_twisted.ensureDeferred
async def test_swaks_submits_with_auth_over_tls(two_servers):
    a, _b = two_servers
    await provision(Path(a.data_dir), "example.org", ["alice", "bob"])
    await deferToThread(a.start)

    def swaks(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--from", "alice@example.org",
             "--to", "bob@example.org", "--auth", "PLAIN", "--auth-user", "alice@example.org",
             "--auth-password", "secret-pw", "--timeout", "10", *extra],
            capture_output=True, text=True, timeout=60,
        )

    starttls = await deferToThread(swaks, "--port", str(a.ports["submission.listen"]), "-tls")
    assert starttls.returncode == 0, starttls.stdout + starttls.stderr
    implicit = await deferToThread(swaks, "--port", str(a.ports["submission.tls_listen"]),
                                   "--tls-on-connect")
    assert implicit.returncode == 0, implicit.stdout + implicit.stderr
    plain = await deferToThread(swaks, "--port", str(a.ports["submission.listen"]))
    assert plain.returncode != 0  # no AUTH offered without TLS
    a.stop()
    assert len(await inbox_messages(Path(a.data_dir), "bob@example.org")) == 2
