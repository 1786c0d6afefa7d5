"""Durability: an acknowledged delivery survives kill -9; a killed write leaves no half
message. Each test kills a real delivering process, restarts the real server on the same
data (which runs crash recovery), and then checks every file and index entry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted

from tests.conftest import Storage
from tests.e2e.deliver_loop import ADDRESS, message

LOOP = str(Path(__file__).with_name("deliver_loop.py"))
pytestmark = pytest.mark.e2e


def start_loop(data_dir: Path, count: int, size: int, inflight: int = 4) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(
        [sys.executable, LOOP, str(data_dir), str(count), str(size), str(inflight)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout.readline().strip() == "READY", process.stderr.read()
    return process


async def check_store(data_dir: Path, acked: set[int], size: int) -> set[int]:
    """Open the store after the crash: every acked message is present exactly once and
    intact; every index entry has its whole file; every file in cur/new is indexed.
    Returns the message numbers found."""
    storage = Storage(data_dir, fsync=True)
    try:
        inbox = storage.store.account(ADDRESS).folder("INBOX")
        found: dict[int, int] = {}
        for uid in inbox.uids():
            m = inbox.message(uid)
            with m.open() as f:
                data = f.read()
            assert len(data) == m.info.size
            n = int(m.info.envelope["message_id"].strip("<>").split("@")[0])
            assert data.endswith(message(n, size)), f"message {n} (uid {uid}) is damaged"
            assert n not in found, f"message {n} stored twice"
            found[n] = uid
        missing = acked - set(found)
        assert not missing, f"acknowledged but lost: {sorted(missing)}"
        on_disk = {
            name
            for sub in ("cur", "new")
            for name in os.listdir(Path(inbox.path) / sub)
        }
        assert len(on_disk) == len(found), "a message file is not in the index"
        assert inbox.info().exists == len(found)
        return set(found)
    finally:
        await storage.aclose()


def recover_with_server(server_process, data_dir: Path) -> None:
    """Start the real server on the data (its start-up recovery runs), then stop it."""
    server = server_process({"server": {"data_dir": str(data_dir)}}).start()
    assert server.get("/healthz")[0] == 200
    assert server.stop(signal.SIGTERM) == 0, server.output()


@pytest_twisted.ensureDeferred
async def test_acknowledged_deliveries_survive_kill9(tmp_path, server_process):
    """Every delivery acknowledged before a SIGKILL is intact after restart."""
    data_dir = tmp_path / "var"
    size = 4096
    loop = start_loop(data_dir, count=100_000, size=size, inflight=8)
    acked: set[int] = set()
    while len(acked) < 60:
        line = loop.stdout.readline()
        assert line.startswith("ACK"), loop.stderr.read()
        acked.add(int(line.split()[1]))
    loop.send_signal(signal.SIGKILL)
    loop.wait()
    recover_with_server(server_process, data_dir)
    found = await check_store(data_dir, acked, size)
    assert acked <= found


@pytest_twisted.ensureDeferred
async def test_kill9_in_mid_write_leaves_no_half_message(tmp_path, server_process):
    """A SIGKILL while a large message is being written leaves no partial message."""
    data_dir = tmp_path / "var"
    size = 48 << 20
    loop = start_loop(data_dir, count=3, size=size, inflight=1)
    tmp_dir = data_dir / "mail" / "example.org" / "kill" / "tmp"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        partial = [p for p in tmp_dir.iterdir() if 0 < p.stat().st_size < size]
        if partial:
            break
        time.sleep(0.001)
    else:
        loop.kill()
        pytest.fail("never caught a message in mid-write: " + loop.stderr.read())
    loop.send_signal(signal.SIGKILL)
    loop.wait()
    recover_with_server(server_process, data_dir)
    found = await check_store(data_dir, set(), size)
    assert len(found) <= 1
