"""Fail-over to a replica (issue 12), the procedure of docs/operations.md played for real.

While a thread sends mail over SMTP (bounded) and another changes flags over IMAP (which
renames message files), ``mailserver replicate DEST --interval 0.5`` ships the running
server's data. Then the primary is killed with SIGKILL in the middle of the load, and so is
the replicator (whatever cycle it was in). ``mailserver verify DEST/current`` passes; a
server whose ``server.data_dir`` is the generation ``DEST/current`` points to serves every
message acknowledged before the last finished cycle began, intact; ``mailserver verify``
passes on its data directory after it stops; and the replicator refuses the promoted replica."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import threading
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.cli.conftest import mailserver_script
from tests.e2e.mail import provision
from tests.e2e.test_backup import USER, Flagger, mailserver, message, served_messages

pytestmark = pytest.mark.e2e

#: At most this many messages are sent (a bounded load); the primary dies before the end.
MESSAGES = 600
#: The replicator starts once this many are acknowledged; the primary is killed once the
#: replica has finished KILL_AFTER_CYCLES cycles and KILL_AFTER_ACKED messages are acked.
START_AFTER = 30
KILL_AFTER_CYCLES = 3
KILL_AFTER_ACKED = 120
LISTEN = ("http.listen", "smtp.listen", "imap.tls_listen")


class Load(threading.Thread):
    """Sends messages over one SMTP connection until the server dies or MESSAGES are sent;
    ``acked`` holds (n, wall-clock time the 250 arrived)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.acked: list[tuple[int, float]] = []
        self.attempted = -1
        self.reached = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
                client.ehlo("load.example.net")
                for n in range(MESSAGES):
                    self.attempted = n
                    client.sendmail("load@example.net", [USER], message(n))
                    self.acked.append((n, time.time()))
                    if len(self.acked) >= START_AFTER:
                        self.reached.set()
        except BaseException as error:  # expected once the primary is killed
            self.error = error
        self.reached.set()


def status(dest: Path) -> dict:
    try:
        return json.loads((dest / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest_twisted.ensureDeferred
async def test_fail_over_to_the_replica_after_kill_9_keeps_every_replicated_message(
    server_process, tmp_path
):
    """Every message acknowledged before the last finished replication cycle began is
    served, byte for byte, by a server started on DEST/current after the primary and the
    replicator were killed with SIGKILL; both verifications pass."""
    primary = server_process({"store": {"fsync": True}}, listen_keys=LISTEN)
    await provision(primary.data_dir, "example.org")
    await deferToThread(primary.start)
    load = Load(primary.ports["smtp.listen"])
    flagger = Flagger(primary.ports["imap.tls_listen"])
    load.start()
    await deferToThread(load.reached.wait, 120)
    assert load.error is None, load.error
    flagger.start()
    dest = tmp_path / "replica"
    log = (tmp_path / "replicate.out").open("wb")
    replicator = subprocess.Popen(
        [mailserver_script(), "--config", str(primary.config_path), "replicate", str(dest),
         "--interval", "0.5"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    try:
        await deferToThread(
            wait_for,
            lambda: status(dest).get("generation", 0) >= KILL_AFTER_CYCLES
            and len(load.acked) >= KILL_AFTER_ACKED,
            180,
            "replication cycles under load",
        )
        assert load.is_alive(), "the load ended before the kill: raise MESSAGES"
        flagger.stop.set()
        primary.stop(signal.SIGKILL)  # the disaster: the primary host is gone ...
        replicator.send_signal(signal.SIGKILL)  # ... with its replicator, mid-cycle or not
        replicator.wait(30)
    finally:
        if replicator.poll() is None:
            replicator.kill()
            replicator.wait()
        log.close()
    await deferToThread(load.join, 60)
    await deferToThread(flagger.join, 60)
    report = (tmp_path / "replicate.out").read_text(errors="replace")
    assert "error:" not in report, report

    last = status(dest)
    expected = {n for n, acked_at in load.acked if acked_at < last["started"]}
    print(
        f"acked: {len(load.acked)}, before the last finished cycle "
        f"(generation {last['generation']}, {last['duration']:.2f}s): {len(expected)}, "
        f"flag rounds: {flagger.rounds}"
    )
    assert len(expected) >= START_AFTER

    verified = await deferToThread(mailserver, primary.config_path, "verify", str(dest / "current"))
    assert verified.returncode == 0, verified.stdout + verified.stderr

    generation = os.path.realpath(dest / "current")  # as `readlink -f` gives it
    standby = server_process(
        {"store": {"fsync": True}, "server": {"data_dir": generation}}, listen_keys=LISTEN
    )
    await deferToThread(standby.start)
    served = await deferToThread(served_messages, standby.ports["imap.tls_listen"])
    assert standby.stop() == 0, standby.output()
    missing = expected - set(served)
    assert not missing, f"acknowledged before the last cycle but not served: {sorted(missing)}"
    for n, body in served.items():
        assert body.endswith(message(n)), f"message {n} is damaged"
    assert set(served) <= {n for n, _t in load.acked} | {load.attempted}

    verified = await deferToThread(mailserver, standby.config_path, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    refused = await deferToThread(
        mailserver, primary.config_path, "replicate", str(dest), "--once"
    )
    assert refused.returncode == 1 and "the replica was promoted" in refused.stderr
