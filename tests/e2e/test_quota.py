"""Quota on the real server (`twistd mailserver`, RFC 9208): ``[store] quota_mb`` limits every
account, a user's own quota (``quota_bytes``) replaces it; SMTP refuses mail into a full
mailbox with 452 4.2.2 (at RCPT when the client declares SIZE), IMAP reports the usage and
refuses an APPEND with OVERQUOTA."""

from __future__ import annotations

import imaplib
import smtplib
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.conftest import Storage
from tests.e2e.conftest import ServerProcess
from tests.e2e.mail import PASSWORD, insecure_context, provision

pytestmark = pytest.mark.e2e

ALICE = "alice@example.org"
BOB = "bob@example.org"


def big_message(to: str, size: int) -> bytes:
    head = f"From: carol@example.net\r\nTo: {to}\r\nSubject: big\r\n\r\n".encode()
    line = b"x" * 76 + b"\r\n"
    return head + line * (size // len(line))


@pytest.fixture
def server(tmp_path):
    with ServerProcess(
        tmp_path / "server",
        {"store": {"quota_mb": 1}},
        listen_keys=("http.listen", "smtp.listen", "imap.tls_listen"),
    ) as process:
        yield process


async def unlimited(data_dir: Path, address: str) -> None:
    storage = Storage(data_dir, fsync=True)
    try:
        await storage.directory.set_quota(address, -1)
    finally:
        await storage.aclose()


@pytest_twisted.ensureDeferred
async def test_quota_over_smtp_and_imap(server):
    await provision(Path(server.data_dir), "example.org", ("alice", "bob"))
    await unlimited(Path(server.data_dir), BOB)
    await deferToThread(server.start)

    def scenario() -> None:
        with smtplib.SMTP("127.0.0.1", server.ports["smtp.listen"], timeout=10) as smtp:
            smtp.sendmail("carol@example.net", [ALICE], big_message(ALICE, 600_000))
            # smtplib declares SIZE (RFC 1870), so the recipient is refused at RCPT already.
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                smtp.sendmail("carol@example.net", [ALICE], big_message(ALICE, 600_000))
            code, text = refused.value.recipients[ALICE]
            assert code == 452 and text.startswith(b"4.2.2 ")
            smtp.sendmail("carol@example.net", [BOB], big_message(BOB, 1_500_000))

        imap = imaplib.IMAP4_SSL(
            "127.0.0.1",
            server.ports["imap.tls_listen"],
            ssl_context=insecure_context(),
            timeout=10,
        )
        assert "QUOTA" in imap.capabilities and "QUOTA=RES-STORAGE" in imap.capabilities
        imap.login(ALICE, PASSWORD)
        typ, data = imap.getquotaroot("INBOX")
        assert typ == "OK" and data[0] == [b'INBOX ""']
        storage = data[1][0].decode()
        used = int(storage.split()[2])
        assert storage.startswith('"" (STORAGE ') and storage.endswith(" 1024)")
        assert 586 <= used < 600
        typ, data = imap.append("INBOX", None, None, big_message(ALICE, 600_000))
        assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]")
        imap.logout()

        imap = imaplib.IMAP4_SSL(
            "127.0.0.1",
            server.ports["imap.tls_listen"],
            ssl_context=insecure_context(),
            timeout=10,
        )
        imap.login(BOB, PASSWORD)
        typ, data = imap.getquotaroot("INBOX")
        assert typ == "OK" and data[0] == [b"INBOX"]
        imap.logout()

    await deferToThread(scenario)
