"""``[smtp] workers``: the real server with worker processes sharing its port-25 socket.

The server process binds ``smtp.listen`` and spawns ``workers - 1`` children
(``python -m mailserver.worker``) that accept on the same socket and deliver into the same
data directory. These tests check what an operator relies on: every message accepted with a
250 is stored exactly once whichever process took it, the workers are real processes that
serve on their own, a killed worker comes back, and no worker outlives its server, whether
the server is stopped with SIGTERM or killed with SIGKILL.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.e2e.conftest import ServerProcess
from tests.e2e.mail import inbox_messages, provision

pytestmark = pytest.mark.e2e

ALICE = "alice@example.org"
#: Bounded waits (seconds): a worker is a fresh Python process that imports the server.
SPAWN_WAIT = 60.0
EXIT_WAIT = 30.0
MESSAGE_ID = re.compile(rb"^Message-ID:\s*<(w-\d+)@workers\.test>", re.IGNORECASE | re.MULTILINE)


#: Every worker pid a test saw; the fixture below kills any still alive when a test ends.
SEEN: set[int] = set()


@pytest.fixture(autouse=True)
def no_worker_left() -> Iterator[None]:
    """Whatever a test asserted, kill (SIGKILL) the workers it saw that still run after it:
    a failing test must not leave processes behind."""
    yield
    for pid in alive_workers(SEEN):
        os.kill(pid, signal.SIGKILL)
    SEEN.clear()


def worker_pids(parent: int) -> set[int]:
    """The live ``mailserver.worker`` processes whose parent is ``parent``."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and b"mailserver.worker" in cmdline and fields[0] != "Z":
            found.add(int(entry))
    SEEN.update(found)
    return found


def alive_workers(pids: set[int]) -> set[int]:
    """Those of ``pids`` that are still a running ``mailserver.worker`` (not a reused pid,
    not a zombie)."""
    alive = set()
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"mailserver.worker" in cmdline and state != "Z":
            alive.add(pid)
    return alive


def wait_for_workers(
    server: ServerProcess, count: int, exclude: frozenset[int] | set[int] = frozenset()
) -> set[int]:
    """Block until ``count`` workers other than ``exclude`` run under ``server`` and each
    has said in the server's log that it serves; their pids."""
    assert server.process is not None
    deadline = time.monotonic() + SPAWN_WAIT
    while True:
        pids = worker_pids(server.process.pid) - exclude
        serving = {pid for pid in pids if f"smtp worker {pid} serving" in server.stdout()}
        if len(serving) == count:
            return serving
        if time.monotonic() > deadline:
            pytest.fail(f"{count} worker(s) not serving after {SPAWN_WAIT}s:\n{server.output()}")
        time.sleep(0.1)


def wait_for_log(server: ServerProcess, pattern: str) -> None:
    """Block (bounded) until the server's log matches ``pattern``."""
    deadline = time.monotonic() + SPAWN_WAIT
    while not re.search(pattern, server.stdout()):
        if time.monotonic() > deadline:
            pytest.fail(f"no {pattern!r} in the log after {SPAWN_WAIT}s:\n{server.output()}")
        time.sleep(0.1)


def wait_gone(pids: set[int]) -> set[int]:
    """Wait (bounded) for ``pids`` to end; those still alive at the deadline."""
    deadline = time.monotonic() + EXIT_WAIT
    while alive_workers(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive_workers(pids)


def message(n: int) -> bytes:
    return (
        f"From: carol@example.net\r\nTo: {ALICE}\r\nSubject: worker test {n}\r\n"
        f"Message-ID: <w-{n}@workers.test>\r\n\r\n"
    ).encode() + (f"message {n} ".encode() * 7 + b"\r\n") * 40


def send(port: int, n: int) -> None:
    """One message per connection, as an MTA delivering to an MX does."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail("carol@example.net", [ALICE], message(n))


def stored_ids(messages: list[bytes]) -> Counter[str]:
    ids: Counter[str] = Counter()
    for raw in messages:
        match = MESSAGE_ID.search(raw)
        if match:
            ids[match.group(1).decode()] += 1
    return ids


def workers_server(server_process, workers: int) -> ServerProcess:
    return server_process(
        {"smtp": {"workers": workers}, "store": {"fsync": True}},
        listen_keys=("http.listen", "smtp.listen"),
    )


@pytest_twisted.ensureDeferred
async def test_workers_store_every_message_once_and_stop_with_the_server(server_process):
    """With workers = 2 the server runs one worker process; 40 messages sent over 8
    concurrent connections are all stored exactly once; SIGHUP to the server makes the
    worker reload its config as well (and it lives on); while the server process is
    frozen (SIGSTOP) the worker alone accepts and stores mail; SIGTERM to the server stops
    the worker too (exit status 0, no orphan) and the worker's deliveries are in the
    server's log."""
    server = workers_server(server_process, 2)
    await provision(server.data_dir, "example.org")
    await deferToThread(server.start)
    port = server.ports["smtp.listen"]

    def scenario() -> set[int]:
        assert server.process is not None
        pids = wait_for_workers(server, 1)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: send(port, n), range(40)))
        os.kill(server.process.pid, signal.SIGHUP)  # passed on: the worker reloads too
        wait_for_log(server, r"\[smtp-worker 1 mailserver\.reload#info\] config reloaded")
        assert alive_workers(pids) == pids
        os.kill(server.process.pid, signal.SIGSTOP)  # only the worker can accept now
        try:
            for n in range(40, 45):
                send(port, n)
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        code = server.stop(signal.SIGTERM)
        assert code == 0, server.output()
        assert wait_gone(pids) == set(), "a worker outlived the server (SIGTERM)"
        return pids

    await deferToThread(scenario)
    ids = stored_ids(await inbox_messages(server.data_dir, ALICE))
    assert ids == Counter({f"w-{n}": 1 for n in range(45)})
    log = server.stdout()
    # the worker's message events reach the server's mail log, one line per message (the
    # messages sent while the server was stopped can only have been the worker's)
    accepted = re.findall(r"mailserver\.maillog#info\] \w+: from=<.*status=accepted", log)
    assert len(accepted) >= 5, log


@pytest_twisted.ensureDeferred
async def test_killed_worker_is_restarted_and_workers_die_with_a_killed_server(
    server_process,
):
    """With workers = 3, a worker killed with SIGKILL is logged and replaced by a new
    process that serves; mail still flows; when the server itself is killed with SIGKILL,
    every worker notices (its pipe from the server closes) and exits: none is left, and
    a server started again on the same data serves with new workers."""
    server = workers_server(server_process, 3)
    await provision(server.data_dir, "example.org")
    await deferToThread(server.start)
    port = server.ports["smtp.listen"]

    def scenario() -> None:
        assert server.process is not None
        first = wait_for_workers(server, 2)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        survivors = first - {victim}
        replaced = wait_for_workers(server, 1, exclude=first)
        assert alive_workers(survivors) == survivors
        ended = rf"smtp worker \d \(pid {victim}\) ended with status -9"
        assert re.search(ended, server.stdout()), server.output()
        for n in range(10):
            send(port, n)
        server.stop(signal.SIGKILL)
        assert wait_gone(survivors | replaced) == set(), "a worker outlived a killed server"
        server.start()
        wait_for_workers(server, 2, exclude=first | replaced)
        for n in range(10, 15):
            send(port, n)
        assert server.stop(signal.SIGTERM) == 0

    await deferToThread(scenario)
    ids = stored_ids(await inbox_messages(server.data_dir, ALICE))
    assert ids == Counter({f"w-{n}": 1 for n in range(15)})
