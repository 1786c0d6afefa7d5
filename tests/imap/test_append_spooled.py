"""APPEND of a literal larger than the listener's spool_threshold, over a real socket: the
literal goes to an unnamed file in spool_directory, the store copies it, the message reads
back intact, and no spool file stays open afterwards (issue 12)."""

from __future__ import annotations

import os
import random
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from mailserver.testing import MemoryDirectory, MemoryStore
from tests.imap.conftest import POLICY, in_thread, populate, start_imap

THRESHOLD = 4096


def open_spool_files(directory: Path) -> list[str]:
    """Files of this process open in ``directory`` (unnamed temporary files included)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory) + "/"):
            found.append(target)
    return found


async def settle(condition, turns: int = 200) -> bool:
    """Let the reactor run until ``condition()`` holds (at most ``turns`` short waits)."""
    for _ in range(turns):
        if condition():
            return True
        await task.deferLater(reactor, 0.01, lambda: None)
    return condition()


@pytest.fixture(params=["memory", "maildir"])
def spooling_imap(request, tmp_path, tls_options):
    """An IMAP listener that spools APPEND literals over 4 KiB into tmp_path/spool."""
    spool = tmp_path / "spool"
    spool.mkdir()
    if request.param == "memory":
        store, directory = MemoryStore(), MemoryDirectory(bcrypt_cost=4)
    else:
        storage = request.getfixturevalue("storage")
        store, directory = storage.store, storage.directory
    populate(store, directory)
    policy = replace(
        POLICY, max_literal=8 << 20, spool_threshold=THRESHOLD, spool_directory=str(spool)
    )
    server, port = start_imap(store, directory, policy, tls_options)
    yield server, spool
    pytest_twisted.blockon(port.stopListening())


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="/proc is not available")
@pytest_twisted.ensureDeferred
async def test_spooled_append_reads_back_and_leaves_no_open_file(spooling_imap):
    """A 3 MiB APPEND (synchronizing and LITERAL+) is answered OK [APPENDUID], reads back
    byte for byte, and no spool file stays open."""
    server, spool = spooling_imap
    body = random.Random(5).randbytes(3 << 20).replace(b"\x00", b"\x01")
    message = b"Subject: spooled\r\n\r\n" + body + b"\r\n"

    def dialog() -> list[bytes]:
        client = server.raw()
        client.login()
        client.send(f"a APPEND INBOX {{{len(message)}}}\r\n")
        assert client.text() == "+ Ready"
        client.send(message + b"\r\n")
        assert client.text().startswith("a OK [APPENDUID ")
        client.send(f"b APPEND INBOX (\\Seen) {{{len(message)}+}}\r\n".encode() + message + b"\r\n")
        assert client.text().startswith("b OK [APPENDUID ")
        client.send("c SELECT INBOX\r\n")
        client.until("c")
        client.send("d FETCH 1:* (BODY.PEEK[])\r\n")
        lines = client.until_bytes("d")
        client.close()
        return lines

    lines = await in_thread(dialog)
    fetched = [line for line in lines if b"Subject: spooled" in line]
    assert len(fetched) == 2
    for line in fetched:
        assert line.split(b"}\r\n", 1)[1].startswith(message)
    assert await settle(lambda: not open_spool_files(spool)), open_spool_files(spool)
    assert os.listdir(spool) == []


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="/proc is not available")
@pytest_twisted.ensureDeferred
async def test_connection_lost_mid_literal_closes_the_spool_file(spooling_imap):
    """While a large literal arrives it is an open file in the spool directory; a client
    that disconnects halfway through leaves no open spool file, and nothing is appended."""
    server, spool = spooling_imap

    def half():
        client = server.raw()
        client.login()
        client.send(b"a APPEND INBOX {1000000+}\r\n" + b"y" * 200_000)
        return client

    client = await in_thread(half)
    assert await settle(lambda: bool(open_spool_files(spool)))  # spooling, not in memory
    await in_thread(client.close)
    assert await settle(lambda: not open_spool_files(spool)), open_spool_files(spool)
    assert server.store.account("alice@example.org").folder("INBOX").info().exists == 0
