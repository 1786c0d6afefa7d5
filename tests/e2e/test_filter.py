"""The filter in the real server (``twistd mailserver`` with ``[filter]``): a virus refused
through a real clamd, spam filed into Junk by a model trained with the real CLI, a user's
block list, and greylisting, each driven by a real SMTP client (swaks or smtplib)."""

from __future__ import annotations

import base64
import random
import shutil
import smtplib
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.cli.conftest import mailserver_script
from tests.e2e.conftest import ServerProcess
from tests.e2e.mail import folder_messages, inbox_messages, provision
from tests.peers.clamd import ClamdInstance, clamd_peer, eicar  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e

SPAM_WORDS = "cheap pills winner prize casino unsubscribe offer cash bonus discount".split()
HAM_WORDS = "meeting patch review lunch kernel thanks build release notes agenda".split()


def make_server(server_process: Any, **filter_keys: Any) -> ServerProcess:
    """The real server with the filter on (the harness kills it at the end of the test)."""
    server: ServerProcess = server_process(
        {"server": {"hostname": "mx.test"}, "filter": {"enabled": True, **filter_keys}},
        listen_keys=("http.listen", "smtp.listen"),
    )
    return server


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [mailserver_script(), "--config", str(server.config_path), *args],
        capture_output=True, text=True, timeout=120,
    )


def send(port: int, data: bytes, rcpt: str = "alice@example.org") -> tuple[int, bytes]:
    """One message with smtplib; the reply to RCPT when refused there, else to DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("client.example.net")
        client.mail("bob@example.net")
        code, text = client.rcpt(rcpt)
        if code != 250:
            return code, text
        return client.data(data)


def text_message(words: list[str], n: int) -> bytes:
    return (
        f"From: bob@example.net\r\nTo: alice@example.org\r\nSubject: {' '.join(words[:3])}\r\n"
        f"Message-ID: <{n}@example.net>\r\n\r\n{' '.join(words)}\r\n"
    ).encode()


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed (apt swaks)")
@pytest_twisted.ensureDeferred
async def test_a_virus_is_refused_before_the_250(
    tmp_path: Path, server_process: Any, clamd_peer: ClamdInstance  # noqa: F811
):
    server = make_server(server_process, clamd=clamd_peer.unix_address, virus_fail="closed")
    await provision(server.data_dir, "example.org")
    await deferToThread(server.start)
    port = str(server.ports["smtp.listen"])
    attachment = tmp_path / "invoice.com"
    attachment.write_bytes(eicar())

    def swaks(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--port", port, "--helo", "client.example.net",
             "--from", "bob@example.net", "--to", "alice@example.org", "--timeout", "20",
             *extra],
            capture_output=True, text=True, timeout=60,
        )

    infected = await deferToThread(swaks, "--attach", f"@{attachment}")
    assert "554 5.7.1 Message rejected: virus found (Mailserver.Test." in infected.stdout
    clean = await deferToThread(swaks, "--body", "Nothing to see here.")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    server.stop()
    [stored] = await inbox_messages(server.data_dir, "alice@example.org")
    assert b"Nothing to see here." in stored and b"X-Virus-Scanned: clamav" in stored


@pytest_twisted.ensureDeferred
async def test_spam_goes_to_junk_with_its_explanation(tmp_path: Path, server_process: Any):
    server = make_server(server_process)
    await provision(server.data_dir, "example.org")
    chance = random.Random(3)
    for label, words in (("spam", SPAM_WORDS), ("ham", HAM_WORDS)):
        folder = tmp_path / "train" / label
        folder.mkdir(parents=True)
        for n in range(40):
            (folder / f"{n}.eml").write_bytes(text_message(chance.choices(words, k=40), n))
    trained = await deferToThread(cli, server, "spam", "train", str(tmp_path / "train"))
    assert trained.returncode == 0, trained.stderr
    await deferToThread(server.start)
    port = server.ports["smtp.listen"]
    spammy = text_message(["cheap", "pills", "casino", "cash", "bonus", "prize"] * 8, 900)
    hammy = text_message(["kernel", "patch", "review", "release", "notes"] * 8, 901)
    assert (await deferToThread(send, port, spammy))[0] == 250
    assert (await deferToThread(send, port, hammy))[0] == 250
    server.stop()
    [junk] = await folder_messages(server.data_dir, "alice@example.org", "Junk")
    [inbox] = await inbox_messages(server.data_dir, "alice@example.org")
    assert junk.endswith(spammy.split(b"\r\n\r\n", 1)[1])
    assert b"X-Spam-Status: Yes, score=" in junk and b"BAYES_" in junk
    assert b"X-Spam-Report: BAYES_" in junk  # the tokens that weighed most
    assert b"X-Spam-Status: No, score=" in inbox


@pytest_twisted.ensureDeferred
async def test_a_users_block_list_refuses_at_rcpt(server_process: Any):
    server = make_server(server_process)
    await provision(server.data_dir, "example.org", users=("alice", "carol"))
    blocked = await deferToThread(
        cli, server, "filter", "block", "bob@example.net", "--user", "alice@example.org"
    )
    assert blocked.returncode == 0, blocked.stderr
    await deferToThread(server.start)
    port = server.ports["smtp.listen"]
    code, text = await deferToThread(send, port, text_message(HAM_WORDS, 1))
    assert code == 550 and text.startswith(b"5.7.1 Sender blocked by the recipient's")
    code, _ = await deferToThread(send, port, text_message(HAM_WORDS, 2), "carol@example.org")
    assert code == 250


@pytest_twisted.ensureDeferred
async def test_greylisting_defers_an_unknown_triplet(server_process: Any):
    server = make_server(server_process, greylist=True, greylist_delay=300.0)
    await provision(server.data_dir, "example.org")
    await deferToThread(server.start)
    port = server.ports["smtp.listen"]
    code, text = await deferToThread(send, port, text_message(HAM_WORDS, 1))
    assert code == 450 and text.startswith(b"4.2.0 Greylisted")
    code, text = await deferToThread(send, port, text_message(HAM_WORDS, 1))
    assert code == 450  # a retry before the delay is still too early


def test_eicar_is_built_not_stored() -> None:
    """The test file is assembled at run time (desktop scanners quarantine a stored copy)."""
    assert len(eicar()) == 68
    assert base64.b64encode(eicar())[:8] == b"WDVPIVAl"
