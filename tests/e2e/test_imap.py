"""IMAP end to end on the real server (`twistd mailserver`): mail that arrives by SMTP is read
with imaplib over STARTTLS (port 143 style, LOGINDISABLED before TLS) and over implicit TLS
(993 style); an IDLE session is woken by an SMTP delivery; flags survive a restart; every
login is audited."""

from __future__ import annotations

import imaplib
import json
import smtplib
import socket
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.e2e.conftest import ServerProcess
from tests.e2e.mail import PASSWORD, insecure_context, provision

pytestmark = pytest.mark.e2e

USER = "alice@example.org"


def smtp_send(port: int, subject: str) -> None:
    message = (f"From: carol@example.net\r\nTo: {USER}\r\nSubject: {subject}\r\n\r\n"
               f"Body of {subject}.\r\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("carol@example.net", [USER], message.encode())


@pytest.fixture
def server(tmp_path):
    with ServerProcess(
        tmp_path / "server",
        listen_keys=("http.listen", "smtp.listen", "imap.listen", "imap.tls_listen"),
    ) as process:
        yield process


@pytest_twisted.ensureDeferred
async def test_read_smtp_mail_over_starttls_and_implicit_tls(server):
    await provision(Path(server.data_dir), "example.org")
    await deferToThread(server.start)

    def scenario() -> None:
        smtp_send(server.ports["smtp.listen"], "first")
        plain = imaplib.IMAP4("127.0.0.1", server.ports["imap.listen"], timeout=10)
        assert "LOGINDISABLED" in plain.capabilities and "STARTTLS" in plain.capabilities
        with pytest.raises(imaplib.IMAP4.error):
            plain.login(USER, PASSWORD)  # RFC 9051 §6.2.3: no plain-text login before TLS
        plain.starttls(ssl_context=insecure_context())
        assert "LOGINDISABLED" not in plain.capabilities
        plain.login(USER, PASSWORD)
        typ, data = plain.select("INBOX")
        assert typ == "OK" and data == [b"1"]
        typ, data = plain.uid("FETCH", "1:*", "(BODY.PEEK[] FLAGS)")
        assert typ == "OK" and b"Subject: first" in data[0][1]
        assert b"Body of first." in data[0][1] and b"Received: from" in data[0][1]
        typ, _ = plain.store("1", "+FLAGS", "(\\Flagged)")
        assert typ == "OK"
        plain.logout()

        implicit = imaplib.IMAP4_SSL("127.0.0.1", server.ports["imap.tls_listen"],
                                     ssl_context=insecure_context(), timeout=10)
        implicit.login(USER, PASSWORD)
        implicit.select("INBOX", readonly=True)
        typ, data = implicit.fetch("1", "(FLAGS)")
        assert typ == "OK" and b"\\Flagged" in data[0]
        implicit.logout()

    await deferToThread(scenario)
    server.stop()
    await deferToThread(server.start)  # flags and messages survive a restart

    def after_restart() -> None:
        client = imaplib.IMAP4_SSL("127.0.0.1", server.ports["imap.tls_listen"],
                                   ssl_context=insecure_context(), timeout=10)
        client.login(USER, PASSWORD)
        client.select("INBOX")
        typ, data = client.fetch("1", "(FLAGS)")
        assert typ == "OK" and b"\\Flagged" in data[0]
        client.logout()

    await deferToThread(after_restart)
    events = [json.loads(line) for line in
              (Path(server.data_dir) / "audit" / "audit.jsonl").read_text().splitlines()]
    logins = [e for e in events if e["event"] == "login_ok"]
    assert len(logins) == 3 and all(PASSWORD not in json.dumps(e) for e in events)


@pytest_twisted.ensureDeferred
async def test_idle_is_woken_by_an_smtp_delivery(server):
    await provision(Path(server.data_dir), "example.org")
    await deferToThread(server.start)

    def scenario() -> list[bytes]:
        raw = insecure_context().wrap_socket(
            socket.create_connection(("127.0.0.1", server.ports["imap.tls_listen"]),
                                     timeout=15))
        reader = raw.makefile("rb")

        def until(tag: bytes) -> list[bytes]:
            lines = [reader.readline()]
            while not lines[-1].startswith(tag + b" "):
                lines.append(reader.readline())
            return lines

        reader.readline()  # greeting
        raw.sendall(f"a LOGIN {USER} {PASSWORD}\r\nb SELECT INBOX\r\nc IDLE\r\n".encode())
        assert until(b"a")[-1].startswith(b"a OK")
        assert b"* 0 EXISTS\r\n" in until(b"b")
        assert reader.readline().startswith(b"+ ")
        smtp_send(server.ports["smtp.listen"], "wake up")
        woken = reader.readline()  # the socket timeout bounds the wait
        raw.sendall(b"DONE\r\n")
        done = until(b"c")
        raw.sendall(b"d LOGOUT\r\n")
        until(b"d")
        raw.close()
        return [woken, done[-1]]

    woken, done = await deferToThread(scenario)
    assert woken == b"* 1 EXISTS\r\n"
    assert done.startswith(b"c OK")
