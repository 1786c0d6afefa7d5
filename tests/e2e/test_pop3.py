"""POP3 end to end on the real server (`twistd mailserver`): mail that arrives by SMTP is
retrieved with poplib over STLS (port 110 style, no USER before TLS) and over implicit TLS
(995 style), byte for byte; UIDL is stable across a restart; a second session is refused
[IN-USE]; a session killed before QUIT deletes nothing and QUIT does; logins are audited."""

from __future__ import annotations

import json
import poplib
import smtplib
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.conftest import Storage
from tests.e2e.conftest import ServerProcess
from tests.e2e.mail import PASSWORD, inbox_messages, insecure_context, provision

pytestmark = pytest.mark.e2e

USER = "alice@example.org"


def smtp_send(port: int, subject: str, body: str = "") -> None:
    body = body or f"Body of {subject}.\r\n"
    message = f"From: carol@example.net\r\nTo: {USER}\r\nSubject: {subject}\r\n\r\n{body}"
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("carol@example.net", [USER], message.encode())


def dotted_body() -> str:
    """About 100 KiB of lines, a lone '.' every 1 KiB and lines that start with '.'."""
    block = ".\r\n" + ".leading dot\r\n" + "x" * (1024 - 3 - 14 - 2) + "\r\n"
    return block * 100


@pytest.fixture
def server(tmp_path):
    with ServerProcess(
        tmp_path / "server",
        listen_keys=("http.listen", "smtp.listen", "pop3.listen", "pop3.tls_listen"),
    ) as process:
        yield process


def stls_client(server: ServerProcess) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", server.ports["pop3.listen"], timeout=10)
    client.stls(insecure_context())
    client.user(USER)
    client.pass_(PASSWORD)
    return client


def tls_client(server: ServerProcess) -> poplib.POP3_SSL:
    client = poplib.POP3_SSL(
        "127.0.0.1", server.ports["pop3.tls_listen"], context=insecure_context(), timeout=10
    )
    client.user(USER)
    client.pass_(PASSWORD)
    return client


@pytest_twisted.ensureDeferred
async def test_retrieve_smtp_mail_over_stls_and_implicit_tls(server):
    await provision(Path(server.data_dir), "example.org")
    await deferToThread(server.start)

    def scenario() -> tuple[list[bytes], list[bytes]]:
        smtp_send(server.ports["smtp.listen"], "first")
        smtp_send(server.ports["smtp.listen"], "dots", dotted_body())
        plain = poplib.POP3("127.0.0.1", server.ports["pop3.listen"], timeout=10)
        caps = plain.capa()
        assert "STLS" in caps and "USER" not in caps
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            plain.user(USER)  # RFC 2595 §4 / RFC 8314: no plain-text login before TLS
        plain.stls(insecure_context())
        assert "USER" in plain.capa()
        plain.user(USER)
        plain.pass_(PASSWORD)
        count, _size = plain.stat()
        assert count == 2
        first = plain.retr(1)[1]
        assert b"Subject: first" in first and b"Body of first." in first
        dots = b"\r\n".join(plain.retr(2)[1]) + b"\r\n"
        uidl = plain.uidl()[1]
        plain.quit()

        implicit = tls_client(server)
        assert implicit.uidl()[1] == uidl
        implicit.quit()
        return uidl, [dots]

    uidl, (dots,) = await deferToThread(scenario)
    server.stop()
    stored = await inbox_messages(Path(server.data_dir), USER)
    assert dots == stored[1]  # byte for byte, Received: field included
    assert dots.endswith(dotted_body().encode())
    await deferToThread(server.start)

    def after_restart() -> list[bytes]:
        client = tls_client(server)
        ids = client.uidl()[1]
        client.quit()
        return ids

    assert await deferToThread(after_restart) == uidl  # stable across a restart
    events = [
        json.loads(line)
        for line in (Path(server.data_dir) / "audit" / "audit.jsonl").read_text().splitlines()
    ]
    logins = [e for e in events if e["event"] == "login_ok"]
    assert len(logins) == 3 and all(PASSWORD not in json.dumps(e) for e in events)


@pytest_twisted.ensureDeferred
async def test_in_use_dropped_session_and_quit(server):
    await provision(Path(server.data_dir), "example.org")
    await deferToThread(server.start)

    def scenario() -> None:
        for n in range(3):
            smtp_send(server.ports["smtp.listen"], f"m{n}")
        first = stls_client(server)
        first.dele(1)
        with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
            tls_client(server)  # RFC 1939 §8: one session per maildrop
        first.close()  # dropped without QUIT (poplib sends nothing): nothing is deleted
        for _ in range(200):  # until the server has seen the close (lock released)
            try:
                second = tls_client(server)
                break
            except poplib.error_proto as error:
                assert b"IN-USE" in error.args[0]
        assert second.stat()[0] == 3
        second.dele(1)
        second.dele(3)
        second.quit()
        third = tls_client(server)
        assert third.stat()[0] == 1
        assert b"Subject: m1" in third.retr(1)[1]
        third.quit()

    await deferToThread(scenario)


@pytest_twisted.ensureDeferred
async def test_account_setting_leave_on_server(server):
    """An account set to "keep" (``mailserver user pop3 ADDRESS keep`` stores it in the
    user's directory record) keeps what a POP3 client deletes; another account follows the
    [pop3] default and loses it."""
    data_dir = Path(server.data_dir)
    await provision(data_dir, "example.org", users=("alice", "bob"))
    storage = Storage(data_dir, fsync=True)
    try:
        await storage.directory.set_pop3_leave_on_server(USER, True)
    finally:
        await storage.aclose()
    await deferToThread(server.start)

    def scenario() -> tuple[int, int]:
        counts = []
        for user in (USER, "bob@example.org"):
            message = f"From: carol@example.net\r\nTo: {user}\r\nSubject: s\r\n\r\nBody.\r\n"
            with smtplib.SMTP("127.0.0.1", server.ports["smtp.listen"], timeout=10) as smtp:
                smtp.sendmail("carol@example.net", [user], message.encode())
            for _ in range(2):  # delete in the first session, count in the second
                client = poplib.POP3_SSL(
                    "127.0.0.1",
                    server.ports["pop3.tls_listen"],
                    context=insecure_context(),
                    timeout=10,
                )
                client.user(user)
                client.pass_(PASSWORD)
                count = client.stat()[0]
                if count:
                    client.dele(1)
                client.quit()
            counts.append(count)
        return counts[0], counts[1]

    assert await deferToThread(scenario) == (1, 0)
