"""Graceful reload on SIGHUP (mailserver/reload.py) on the real server: the config file's
reloadable keys take effect for new connections, sessions open across the reload keep
working, a key that needs a restart is named in the log and keeps its running value, a
broken file keeps the running config, and users need no reload at all (the directory is the
index, read live). Certificates: tests/e2e/test_tls_reload.py."""

from __future__ import annotations

import imaplib
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.e2e.conftest import ServerProcess, toml_text
from tests.e2e.mail import PASSWORD, insecure_context, provision

pytestmark = pytest.mark.e2e

ALICE = "alice@example.org"
MAILSERVER = str(Path(sys.executable).parent / "mailserver")


def edit_config(server: ServerProcess, changes: dict[str, dict[str, Any]]) -> None:
    assert server.config_path is not None
    document = tomllib.loads(server.config_path.read_text())
    for section, values in changes.items():
        document.setdefault(section, {}).update(values)
    server.config_path.write_text(toml_text(document))


def sighup(server: ServerProcess, marker: str) -> str:
    """SIGHUP the server and wait for the log line containing ``marker``; that line."""
    assert server.process is not None
    before = server.stdout().count(marker)
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while server.stdout().count(marker) == before:
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.05)
    return [line for line in server.stdout().splitlines() if marker in line][-1]


def imap_login(server: ServerProcess, user: str = ALICE) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL(
        "127.0.0.1", server.ports["imap.tls_listen"], ssl_context=insecure_context(), timeout=10
    )
    client.login(user, PASSWORD)
    return client


def smtp_greeting(server: ServerProcess) -> tuple[socket.socket, bytes]:
    """A raw connection to port 25 and the server's first line."""
    sock = socket.create_connection(("127.0.0.1", server.ports["smtp.listen"]), timeout=10)
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return sock, data


def admitted(server: ServerProcess) -> tuple[socket.socket, bytes]:
    """The first connection the server admits (left open) and its greeting: a client that
    just closed still counts until the server has read its close, so a connection made at
    once may meet the per-IP limit."""
    deadline = time.monotonic() + 10
    while True:
        sock, text = smtp_greeting(server)
        if text.startswith(b"220 "):
            return sock, text
        sock.close()
        assert time.monotonic() < deadline, text
        time.sleep(0.05)


def send_admitted(server: ServerProcess, message: bytes) -> None:
    """Send ``message`` to alice, retrying while the per-IP limit still counts a connection
    the client has already closed."""
    deadline = time.monotonic() + 10
    while True:
        try:
            with smtplib.SMTP("127.0.0.1", server.ports["smtp.listen"], timeout=10) as smtp:
                smtp.sendmail("carol@example.net", [ALICE], message)
            return
        except smtplib.SMTPConnectError as error:
            assert error.smtp_code == 421 and time.monotonic() < deadline, error
            time.sleep(0.05)


@pytest_twisted.ensureDeferred
async def test_sighup_applies_reloadable_keys_and_keeps_sessions(server_process):
    """An IMAP session (INBOX selected) and an SMTP session stay open across two reloads;
    smtp.max_connections_per_ip 20 -> 1 refuses a second connection from then on; the
    hostname change waits for a restart; a broken file changes nothing."""
    server = server_process(
        {"server": {"hostname": "mx1.example.org"}},
        listen_keys=("http.listen", "smtp.listen", "imap.tls_listen"),
    )
    await provision(server.data_dir, "example.org")
    await deferToThread(server.start)

    def scenario() -> None:
        with smtplib.SMTP("127.0.0.1", server.ports["smtp.listen"], timeout=10) as smtp:
            smtp.sendmail("carol@example.net", [ALICE], b"Subject: before\r\n\r\nhi\r\n")
        session = imap_login(server)
        assert session.select("INBOX") == ("OK", [b"1"])
        first, greeting = smtp_greeting(server)
        second, greeting2 = smtp_greeting(server)
        assert greeting.startswith(b"220 mx1.example.org") and greeting2.startswith(b"220 ")
        second.close()

        edit_config(
            server,
            {"smtp": {"max_connections_per_ip": 1}, "server": {"hostname": "mx2.example.org"}},
        )
        line = sighup(server, "config reloaded from")
        assert "applied [smtp.max_connections_per_ip]" in line, line
        assert "needs a restart: [server.hostname]" in line, line

        # the open sessions go on
        assert session.noop()[0] == "OK"
        first.sendall(b"EHLO client.test\r\n")
        assert first.recv(1024).startswith(b"250-mx1.example.org")
        # new connections get the new limit: `first` is this address's only one
        refused, text = smtp_greeting(server)
        assert text.startswith(b"421 4.7.0"), text
        refused.close()
        first.sendall(b"QUIT\r\n")
        first.recv(1024)
        first.close()
        # the server sees the QUIT connection go, then admits one again
        sock, text = admitted(server)
        sock.close()
        assert text.startswith(b"220 mx1.example.org")  # hostname: only after a restart

        # a broken file: logged, the running config stays
        server.config_path.write_text("[smtp\nmax_connections_per_ip = 5\n")
        line = sighup(server, "config reload failed")
        assert "TOML syntax error" in line, line
        sock, text = admitted(server)
        other, refused_text = smtp_greeting(server)
        assert text.startswith(b"220 ") and refused_text.startswith(b"421 4.7.0")
        sock.close(), other.close()

        # mail that arrived meanwhile is seen by the session opened before the reloads
        send_admitted(server, b"Subject: after\r\n\r\nhi\r\n")
        deadline = time.monotonic() + 10
        while True:
            session.noop()
            _typ, exists = session.response("EXISTS")
            if b"2" in exists:
                break
            assert time.monotonic() < deadline, exists
            time.sleep(0.1)
        typ, data = session.fetch("1:2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert [part[1].strip() for part in data if isinstance(part, tuple)] == [
            b"Subject: before",
            b"Subject: after",
        ]
        session.logout()

    await deferToThread(scenario)
    assert server.stop() == 0, server.output()


@pytest_twisted.ensureDeferred
async def test_users_added_while_running_need_no_reload(server_process):
    """`mailserver user add` against the running server's data: the new user logs in over
    IMAP at once, no SIGHUP, while another user's session stays open."""
    server = server_process(listen_keys=("http.listen", "imap.tls_listen"))
    await provision(server.data_dir, "example.org")
    await deferToThread(server.start)

    def scenario() -> None:
        alice = imap_login(server)
        assert alice.select("INBOX")[0] == "OK"
        with pytest.raises(imaplib.IMAP4.error):
            imap_login(server, "dave@example.org")
        added = subprocess.run(
            [MAILSERVER, "user", "add", "dave@example.org", "--password-stdin",
             "--config", str(server.config_path)],
            input=PASSWORD + "\n", capture_output=True, text=True, timeout=60,
            env={**os.environ}, cwd=server.directory,
        )
        assert added.returncode == 0, added.stderr
        dave = imap_login(server, "dave@example.org")
        assert dave.select("INBOX")[0] == "OK"
        dave.logout()
        assert alice.noop()[0] == "OK"
        alice.logout()

    await deferToThread(scenario)
    assert server.stop() == 0, server.output()
