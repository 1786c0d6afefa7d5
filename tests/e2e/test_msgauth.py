"""The real server's port-25 authentication: a ``twistd`` process whose DNS is a real test
DNS server on 127.0.0.1 serving SPF, DKIM and DMARC records; mail sent from 127.0.0.1 and
127.0.0.2 with smtplib."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from mailserver.msgauth.dkim import DKIMSigner
from mailserver.msgauth.keys import KeyStore
from tests.e2e import mail
from tests.e2e.conftest import ServerProcess
from tests.e2e.mail import provision
from tests.msgauth.conftest import serve
from tests.stored import our_results

pytestmark = pytest.mark.e2e

HOST = "mx.test"


def message(sender: str, subject: str, extra: bytes = b"") -> bytes:
    return (
        extra
        + (
            f"From: <{sender}>\r\nTo: alice@example.org\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@example.net>\r\nDate: Sun, 29 Nov 2026 09:00:00 +0000\r\n"
            "\r\nHello.\r\n"
        ).encode()
    )


def send(port: int, source: str, sender: str, data: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(source, 0)) as client:
        client.ehlo("client.example.net")
        client.mail(sender)
        client.rcpt("alice@example.org")
        try:
            return client.data(data)
        except smtplib.SMTPDataError as error:
            return error.smtp_code, error.smtp_error


async def folder_messages(data_dir: Path, folder: str) -> list[bytes]:
    return await mail.folder_messages(data_dir, "alice@example.org", folder)


def ours(stored: bytes) -> dict[str, str]:
    """method -> result of the one Authentication-Results field naming this server."""
    return our_results(stored, HOST)


@pytest.fixture
def keystore(tmp_path: Path) -> KeyStore:
    keys = KeyStore(str(tmp_path / "sender-keys"))
    keys.generate("example.net", "e2e", ("ed25519",))
    return keys


@pytest.fixture
def dns(keystore: KeyStore):
    [key] = keystore.keys("example.net")
    server = serve(
        {
            "example.net": [("TXT", "v=spf1 ip4:127.0.0.1 -all")],
            "_dmarc.example.net": [("TXT", "v=DMARC1; p=reject; rua=mailto:d@example.net")],
            key.dns_name: [("TXT", key.dns_record())],
        },
        ("example.net",),
    )
    yield server
    pytest_twisted.blockon(server.stop())


def make_server(tmp_path: Path, dns, **msgauth: str) -> ServerProcess:
    return ServerProcess(
        tmp_path / "server",
        {
            "server": {"hostname": HOST},
            "delivery": {"nameservers": [dns.address]},
            "msgauth": {"enabled": True, **msgauth},
        },
        listen_keys=("http.listen", "smtp.listen"),
    )


@pytest_twisted.ensureDeferred
async def test_authentication_results_and_dmarc_reject(tmp_path, dns, keystore):
    """Signed mail from an SPF-listed IP is stored with spf, dkim and dmarc pass in our one
    Authentication-Results field (a forged one naming us is gone); the same From domain from
    127.0.0.2, unsigned, fails DMARC p=reject and DATA gets 550 5.7.1, nothing stored."""
    (tmp_path / "server").mkdir()
    server = make_server(tmp_path, dns)
    await provision(server.data_dir, "example.org")
    await deferToThread(server.start)
    port = server.ports["smtp.listen"]
    forged = f"Authentication-Results: {HOST}; dkim=pass header.d=bank.test\r\n".encode()
    good = message("bob@example.net", "signed", forged)
    good = DKIMSigner(keystore).sign(good, "example.net") + good
    code, reply = await deferToThread(send, port, "127.0.0.1", "bob@example.net", good)
    assert code == 250, reply
    code, reply = await deferToThread(
        send, port, "127.0.0.2", "bob@example.net", message("bob@example.net", "spoofed")
    )
    assert code == 550 and reply.startswith(b"5.7.1"), reply
    server.stop()
    [stored] = await folder_messages(server.data_dir, "INBOX")
    assert b"Subject: signed" in stored and b"bank.test" not in stored
    assert ours(stored) == {"spf": "pass", "dkim": "pass", "arc": "none", "dmarc": "pass"}
    assert await folder_messages(server.data_dir, "Junk") == []


@pytest_twisted.ensureDeferred
async def test_dmarc_reject_quarantined_to_junk(tmp_path, dns):
    """With dmarc_reject = "quarantine" the failing message is accepted and filed into Junk,
    its Authentication-Results saying spf=fail and dmarc=fail."""
    (tmp_path / "server").mkdir()
    server = make_server(tmp_path, dns, dmarc_reject="quarantine")
    await provision(server.data_dir, "example.org")
    await deferToThread(server.start)
    port = server.ports["smtp.listen"]
    data = message("bob@example.net", "spoofed")
    code, reply = await deferToThread(send, port, "127.0.0.2", "bob@example.net", data)
    assert code == 250, reply
    server.stop()
    assert await folder_messages(server.data_dir, "INBOX") == []
    [junk] = await folder_messages(server.data_dir, "Junk")
    assert ours(junk) == {"spf": "fail", "dkim": "none", "arc": "none", "dmarc": "fail"}
