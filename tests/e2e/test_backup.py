"""An online backup under load (issue 12): while a thread keeps sending mail over SMTP and
another keeps changing flags, copying and expunging over IMAP (renaming, linking and
unlinking message files), ``mailserver backup`` copies the running server's data; the
backup verifies, restores into a fresh data directory, and a server started on it serves
every message acknowledged before the backup began, intact, with no index entry lacking its
file."""

from __future__ import annotations

import imaplib
import re
import signal
import smtplib
import subprocess
import threading
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.cli.conftest import mailserver_script
from tests.e2e.mail import PASSWORD, insecure_context, provision

pytestmark = pytest.mark.e2e

USER = "alice@example.org"
#: Messages the load thread sends in all (a bounded load).
MESSAGES = 300
#: The backup starts once this many are acknowledged.
BEFORE = 60
LISTEN = ("http.listen", "smtp.listen", "imap.tls_listen")


def message(n: int) -> bytes:
    return (
        f"From: load@example.net\r\nTo: {USER}\r\nSubject: load {n}\r\n"
        f"Message-ID: <load-{n}@example.net>\r\n\r\n" + f"line {n} of the body\r\n" * 20
    ).encode()


class Load(threading.Thread):
    """Sends MESSAGES messages over one SMTP connection; ``acked`` grows after each 250."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.acked: list[int] = []
        self.reached = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
                client.ehlo("load.example.net")
                for n in range(MESSAGES):
                    client.sendmail("load@example.net", [USER], message(n))
                    self.acked.append(n)
                    if len(self.acked) >= BEFORE:
                        self.reached.set()
        except BaseException as error:  # reported by the test
            self.error = error
            self.reached.set()


class Flagger(threading.Thread):
    """Over IMAP until stopped: toggles \\Seen on every INBOX message (file renames), copies
    the newest ten to Archive (hard links) and expunges Archive again (unlinks)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.rounds = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            client = imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=insecure_context())
            client.login(USER, PASSWORD)
            while not self.stop.is_set():
                exists = int(self.check(client.select("INBOX"))[0])
                sign = "+" if self.rounds % 2 == 0 else "-"
                self.check(client.uid("STORE", "1:*", f"{sign}FLAGS.SILENT", "(\\Seen)"))
                self.check(client.copy(f"{max(1, exists - 9)}:{exists}", "Archive"))
                if int(self.check(client.select("Archive"))[0]):
                    self.check(client.store("1:*", "+FLAGS.SILENT", "(\\Deleted)"))
                    self.check(client.expunge())
                self.rounds += 1
            client.logout()
        except BaseException as error:
            self.error = error

    @staticmethod
    def check(reply: tuple[str, list]) -> list:
        """The data of an OK reply; an AssertionError (reported by the test) otherwise."""
        typ, data = reply
        assert typ == "OK", reply
        return data


def mailserver(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [mailserver_script(), "--config", str(config), *args],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )


def served_messages(port: int) -> dict[int, bytes]:
    """{n: message bytes} of every message in the account's INBOX, read over IMAP."""
    client = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=insecure_context())
    client.login(USER, PASSWORD)
    client.select("INBOX", readonly=True)
    typ, data = client.uid("FETCH", "1:*", "(RFC822.SIZE BODY.PEEK[])")
    assert typ == "OK", data
    found: dict[int, bytes] = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        size = int(re.search(rb"RFC822\.SIZE (\d+)", item[0]).group(1))
        body = item[1]
        assert len(body) == size, item[0]
        n = int(re.search(rb"Subject: load (\d+)", body).group(1))
        assert n not in found, f"message {n} served twice"
        found[n] = body
    client.logout()
    return found


@pytest_twisted.ensureDeferred
async def test_backup_under_load_restores_every_acknowledged_message(server_process, tmp_path):
    """Every message acknowledged before 'mailserver backup' began is in the restored
    server, byte for byte; 'verify' passes on the backup and on the restored data, and on
    the live data while the load and the backup run."""
    server = server_process({"store": {"fsync": True}}, listen_keys=LISTEN)
    await provision(server.data_dir, "example.org")
    await deferToThread(server.start)
    load = Load(server.ports["smtp.listen"])
    flagger = Flagger(server.ports["imap.tls_listen"])
    load.start()
    await deferToThread(load.reached.wait, 120)
    assert load.error is None, load.error
    flagger.start()
    before = set(load.acked)  # acknowledged before the backup began
    dest = tmp_path / "backup"
    backing_up = deferToThread(mailserver, server.config_path, "backup", str(dest))
    live = await deferToThread(mailserver, server.config_path, "verify")  # meanwhile
    done = await backing_up
    during = len(load.acked) - len(before)
    flagger.stop.set()
    await deferToThread(load.join, 120)
    await deferToThread(flagger.join, 60)
    assert done.returncode == 0, done.stderr
    assert live.returncode == 0, live.stdout + live.stderr  # no false alarm under load
    assert load.error is None and flagger.error is None, (load.error, flagger.error)
    assert not load.is_alive() and not flagger.is_alive()
    print(f"acked before: {len(before)}, during the backup: {during}, "
          f"flag rounds: {flagger.rounds}; {done.stdout.strip()}")
    assert server.stop() == 0, server.output()

    verified = await deferToThread(mailserver, server.config_path, "verify", str(dest))
    assert verified.returncode == 0, verified.stdout + verified.stderr

    restored = server_process({"store": {"fsync": True}}, listen_keys=LISTEN)
    done = await deferToThread(mailserver, restored.config_path, "restore", str(dest))
    assert done.returncode == 0, done.stderr
    verified = await deferToThread(mailserver, restored.config_path, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    await deferToThread(restored.start)
    served = await deferToThread(served_messages, restored.ports["imap.tls_listen"])
    restored.stop(signal.SIGTERM)
    missing = before - set(served)
    assert not missing, f"acknowledged before the backup but not restored: {sorted(missing)}"
    for n, body in served.items():
        assert body.endswith(message(n)), f"message {n} is damaged"
    assert set(served) <= set(load.acked)
