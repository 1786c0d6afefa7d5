"""The real server's port-25 listener: delivery into the store, kill -9 right after the 250,
no open relay (proved with swaks), and a clean exit on SIGTERM."""

from __future__ import annotations

import shutil
import signal
import smtplib
import subprocess
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.e2e.conftest import ServerProcess
from tests.e2e.mail import inbox_messages, provision

pytestmark = pytest.mark.e2e

MESSAGE = (
    b"From: Bob <bob@example.net>\r\nTo: alice@example.org\r\nSubject: durable\r\n"
    b"Message-ID: <durable-1@example.net>\r\n\r\nThis must survive kill -9.\r\n"
)


def make_server(tmp_path: Path) -> ServerProcess:
    return ServerProcess(
        tmp_path,
        {"store": {"fsync": True}, "server": {"hostname": "mx.test"}},
        listen_keys=("http.listen", "smtp.listen"),
    )


@pytest_twisted.ensureDeferred
async def test_acknowledged_message_survives_kill9(tmp_path):
    """A 250 after DATA means the message is on disk: kill -9 at once, restart, it is there."""
    server = make_server(tmp_path)
    await provision(server.data_dir, "example.org")
    await deferToThread(server.start)
    port = server.ports["smtp.listen"]

    def send() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("client.example.net")
            client.mail("bob@example.net")
            client.rcpt("alice@example.org")
            return client.data(MESSAGE)

    code, reply = await deferToThread(send)
    assert code == 250, reply
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    await deferToThread(server.start)  # crash recovery runs on start
    server.stop()
    [stored] = await inbox_messages(server.data_dir, "alice@example.org")
    assert stored.endswith(MESSAGE)
    assert stored.startswith(b"Return-Path: <bob@example.net>\r\nReceived: from client.example.net")
    assert b"by mx.test (mailserver) with ESMTP id " in stored


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed (apt swaks)")
@pytest_twisted.ensureDeferred
async def test_not_an_open_relay_swaks(tmp_path):
    """swaks: local delivery works; a foreign recipient gets 550 5.7.1 (swaks exit 24)."""
    server = make_server(tmp_path)
    await provision(server.data_dir, "example.org")
    await deferToThread(server.start)
    port = str(server.ports["smtp.listen"])

    def swaks(to: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--port", port, "--helo", "client.example.net",
             "--from", "bob@example.net", "--to", to, "--timeout", "10"],
            capture_output=True, text=True, timeout=60,
        )

    good = await deferToThread(swaks, "alice@example.org")
    assert good.returncode == 0, good.stdout + good.stderr
    for foreign in (
        "victim@elsewhere.example",
        "alice@example.org@elsewhere.example",
        '"alice@elsewhere.example"@example.org',
        "alice%elsewhere.example@example.org",
    ):
        relay = await deferToThread(swaks, foreign)
        assert relay.returncode != 0, (foreign, relay.stdout)
        assert "<** 5" in relay.stdout, (foreign, relay.stdout)
    relay = await deferToThread(swaks, "victim@elsewhere.example")
    assert relay.returncode == 24 and "550 5.7.1" in relay.stdout
    server.stop()
    assert len(await inbox_messages(server.data_dir, "alice@example.org")) == 1


@pytest_twisted.ensureDeferred
async def test_sigterm_exits_cleanly_keeping_accepted_mail(tmp_path):
    """On SIGTERM the listener closes; the server exits 0 and the mail it accepted is kept."""
    server = make_server(tmp_path)
    await provision(server.data_dir, "example.org")
    await deferToThread(server.start)
    port = server.ports["smtp.listen"]

    def send() -> int:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            return client.sendmail("bob@example.net", ["alice@example.org"], MESSAGE) and 1 or 0

    assert await deferToThread(send) == 0  # no refused recipients
    assert server.stop(signal.SIGTERM) == 0
    assert "mailserver stopped cleanly" in server.output()
    assert len(await inbox_messages(server.data_dir, "alice@example.org")) == 1
