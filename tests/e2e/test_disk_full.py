"""Disk full on the real server (``twistd mailserver``): while the data directory's disk has
less free space than ``[store] min_free_mb``, SMTP answers the end of DATA with ``452
4.3.1`` and IMAP APPEND with ``NO [UNAVAILABLE]``; nothing already stored is lost, nothing
half-written is left behind, the server keeps running, and mail is accepted again as soon
as space returns.

A full disk is presented without root: the reserve is set above the space the disk really
has free (and back to 0 for "space returns") and the server is told with SIGHUP, which
reloads ``min_free_mb`` (mailserver/reload.py). A write that fails with ENOSPC itself is
covered by tests/test_diskspace.py and tests/smtp/test_limits.py."""

from __future__ import annotations

import imaplib
import os
import shutil
import signal
import smtplib
import time
import tomllib
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.e2e.conftest import ServerProcess, toml_text
from tests.e2e.mail import PASSWORD, insecure_context, provision

pytestmark = pytest.mark.e2e

ALICE = "alice@example.org"


def message(n: int) -> bytes:
    return (
        f"From: carol@example.net\r\nTo: {ALICE}\r\nSubject: disk {n}\r\n"
        f"Message-ID: <disk-{n}@example.net>\r\n\r\nbody {n}\r\n"
    ).encode() + b"x" * 20_000 + b"\r\n"


def set_reserve(server: ServerProcess, megabytes: int) -> None:
    """Rewrite ``[store] min_free_mb`` in the server's config and SIGHUP it; return once the
    server logged the reload."""
    assert server.config_path is not None and server.process is not None
    document = tomllib.loads(server.config_path.read_text())
    document.setdefault("store", {})["min_free_mb"] = megabytes
    server.config_path.write_text(toml_text(document))
    before = server.stdout().count("config reloaded from")
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while server.stdout().count("config reloaded from") == before:
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.05)


def send(server: ServerProcess, n: int) -> tuple[int, bytes]:
    """Send message ``n`` over port 25: the reply to the end of DATA."""
    with smtplib.SMTP("127.0.0.1", server.ports["smtp.listen"], timeout=10) as client:
        try:
            client.sendmail("carol@example.net", [ALICE], message(n))
        except smtplib.SMTPDataError as refused:
            return refused.smtp_code, refused.smtp_error
    return 250, b""


def imap(server: ServerProcess) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL(
        "127.0.0.1", server.ports["imap.tls_listen"], ssl_context=insecure_context(), timeout=10
    )
    client.login(ALICE, PASSWORD)
    return client


def subjects(client: imaplib.IMAP4_SSL) -> list[bytes]:
    typ, data = client.select("INBOX")
    assert typ == "OK"
    if int(data[0]) == 0:
        return []
    typ, data = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    return [part[1].strip() for part in data if isinstance(part, tuple)]


def tmp_files(data_dir: Path) -> list[str]:
    return [
        name
        for root, _dirs, files in os.walk(data_dir / "mail")
        if os.path.basename(root) == "tmp"
        for name in files
    ]


@pytest_twisted.ensureDeferred
async def test_disk_full_refuses_then_accepts_again(server_process):
    """452 4.3.1 at DATA and NO [UNAVAILABLE] for APPEND while the disk is "full"; the
    session that was refused goes on, stored mail stays, and the same message is accepted
    once space returns."""
    server = server_process(
        {"store": {"min_free_mb": 0}},
        listen_keys=("http.listen", "smtp.listen", "imap.tls_listen"),
    )
    await provision(server.data_dir, "example.org")
    await deferToThread(server.start)

    def scenario() -> None:
        assert send(server, 1) == (250, b"")
        free_mb = shutil.disk_usage(server.data_dir).free >> 20
        set_reserve(server, free_mb + 1024)  # more than the disk has: it counts as full

        code, text = send(server, 2)
        assert code == 452 and text.startswith(b"4.3.1"), (code, text)
        # the session that was refused is still usable: RSET, then another refusal
        with smtplib.SMTP("127.0.0.1", server.ports["smtp.listen"], timeout=10) as client:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail("carol@example.net", [ALICE], message(3))
            assert refused.value.smtp_code == 452
            assert client.rset()[0] == 250 and client.noop()[0] == 250

        session = imap(server)
        typ, data = session.append("INBOX", None, None, message(4))
        assert typ == "NO" and data[0].startswith(b"[UNAVAILABLE]"), data
        assert subjects(session) == [b"Subject: disk 1"]  # nothing lost, nothing half-there
        assert tmp_files(server.data_dir) == []
        assert server.get("/healthz")[0] == 200 and server.running

        set_reserve(server, 0)  # space returns
        assert send(server, 2) == (250, b"")
        typ, _ = session.append("INBOX", None, None, message(4))
        assert typ == "OK"
        assert subjects(session) == [b"Subject: disk 1", b"Subject: disk 2", b"Subject: disk 4"]
        session.logout()

    await deferToThread(scenario)
    assert "Insufficient system storage" not in server.stderr()
    assert server.stop() == 0, server.output()
