"""``mailserver replicate DEST``: each cycle leaves ``DEST/current`` a complete data directory
and a valid backup of the last snapshot; later cycles ship only the files the replica lacks,
follow flag renames and expunges, and a cycle killed at any point leaves ``current`` as it was.
Every misuse is refused with one line saying what to do."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import time
from io import BytesIO
from pathlib import Path

import pytest_twisted

from mailserver.store.replica import Replica
from mailserver.types import FlagMode
from tests.cli.conftest import ALICE, Cli, mailserver_script
from tests.cli.test_backup import contents, expunge_newest, fill, manifest, message, new_cli


def status(dest: Path) -> dict:
    return json.loads((dest / "status.json").read_text())


def current(dest: Path) -> Path:
    return dest / os.readlink(dest / "current")


@pytest_twisted.ensureDeferred
async def test_first_cycle_makes_a_complete_replica_that_verifies_and_restores(example, tmp_path):
    """One cycle copies every message, flag and queued message: DEST/current verifies as a
    backup, and restored into a new data directory it holds exactly the primary's mail."""
    queue_id = await fill(example)
    before = await contents(example)
    dest = tmp_path / "replica"
    done = example("replicate", str(dest), "--once")
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode()
    assert out.startswith("cycle 1: 5 message(s), 1 queued; shipped ")
    assert "shipping [" in done.stderr.decode()  # progress bars on stderr
    assert os.readlink(dest / "current") == "gen-1"
    files = manifest(current(dest))["files"]
    assert f"spool/{queue_id}" in files and "index/data.mdb" in files
    state = status(dest)
    assert (state["generation"], state["messages"], state["queued"]) == (1, 5, 1)
    assert state["started"] <= state["snapshot_at"] <= state["finished"]
    assert state["last_error"] is None
    assert example.ok("verify", str(dest / "current")).endswith(": OK\n")

    restored = new_cli(tmp_path / "restored")
    restored.ok("restore", str(dest / "current"))
    assert await contents(restored) == before
    assert restored.ok("verify").endswith(": OK\n")
    assert restored.ok("queue", "list").count(queue_id) == 1


@pytest_twisted.ensureDeferred
async def test_next_cycle_ships_only_new_files_and_follows_flags_and_expunges(example, tmp_path):
    """After a flag change (a renamed file), an expunge and one new message, the next cycle
    ships one file, names the flagged file with its new flags, drops the expunged one from
    the pool, removes the previous generation, and the replica verifies and matches."""
    for n in (1, 2, 3):
        example.ok("deliver", ALICE, input=message(n))
    dest = tmp_path / "replica"
    example.ok("replicate", str(dest), "--once")
    first = status(dest)
    assert first["shipped"] == 3

    storage = example.storage()
    try:
        inbox = storage.store.account(ALICE).folder("INBOX")
        await inbox.store_flags([1], ["\\Flagged"], FlagMode.ADD)
    finally:
        await storage.aclose()
    expunge_newest(example)  # message 3
    example.ok("deliver", ALICE, input=message(4))

    out = example.ok("replicate", str(dest), "--once")
    assert out.startswith("cycle 2: 3 message(s), 0 queued; shipped 1 file(s) ")
    assert "removed 1;" in out
    second = status(dest)
    assert (second["generation"], second["shipped"], second["removed"]) == (2, 1, 1)
    assert sorted(os.listdir(dest)) == ["current", "gen-2", "pool", "replica.lock", "status.json"]
    names = sorted(os.listdir(current(dest) / "mail/example.org/alice/cur"))
    assert sorted(name.split(":2,")[1] for name in names) == ["", "", "F"]
    pool = sorted(os.listdir(dest / "pool/mail/example.org/alice/cur"))
    assert pool == sorted(name.split(":")[0] for name in names)
    assert example.ok("verify", str(dest / "current")).endswith(": OK\n")
    restored = new_cli(tmp_path / "restored")
    restored.ok("restore", str(dest / "current"))
    assert await contents(restored) == await contents(example)


def test_other_files_are_copied_when_changed_and_linked_when_not(example, tmp_path):
    """Files beside the mail (keys, logs) are in every generation: one unchanged since the
    previous cycle keeps its inode (hard-linked, not copied again), one that changed is
    copied anew with its new content."""
    example.ok("deliver", ALICE, input=message(1))
    keys = example.data / "dkim"
    keys.mkdir(exist_ok=True)
    (keys / "example.org.key").write_bytes(b"a private key")
    (keys / "notes.log").write_bytes(b"one line\n")
    dest = tmp_path / "replica"
    example.ok("replicate", str(dest), "--once")
    inodes = {name: os.stat(current(dest) / "dkim" / name).st_ino for name in os.listdir(keys)}
    with open(keys / "notes.log", "ab") as log:
        log.write(b"and another\n")
    example.ok("replicate", str(dest), "--once")
    assert os.stat(current(dest) / "dkim/example.org.key").st_ino == inodes["example.org.key"]
    assert os.stat(current(dest) / "dkim/notes.log").st_ino != inodes["notes.log"]
    assert (current(dest) / "dkim/notes.log").read_bytes() == b"one line\nand another\n"
    assert example.ok("verify", str(dest / "current")).endswith(": OK\n")


def test_files_renamed_or_expunged_during_a_cycle_are_found_or_kept(example, tmp_path):
    """A file renamed for a flag change while files are shipped is found by its base name;
    files unlinked after the snapshot (expunged) are still in the generation."""
    cur = example.maildir() / "cur"
    for n in (1, 2, 3):
        example.ok("deliver", ALICE, input=message(n))
    names = sorted(os.listdir(cur))
    phases: list[str] = []

    def progress(phase: str, done: int, total: int | None) -> None:
        if phase == "shipping" and done == 1:  # a later file gets a new name (flag change)
            os.rename(cur / names[-1], cur / (names[-1] + "S"))
        if phase == "linking" and not phases.count("linking"):  # every live file expunged
            for name in os.listdir(cur):
                os.unlink(cur / name)
        phases.append(phase)

    dest = tmp_path / "replica"
    with Replica(str(example.data), str(dest), map_size=64 << 20, fsync=False) as replica:
        report = replica.cycle(progress=progress)
    assert (report.messages, report.shipped, report.snapshots) == (3, 3, 1)
    assert len(os.listdir(current(dest) / "mail/example.org/alice/cur")) == 3
    assert example.ok("verify", str(dest / "current")).endswith(": OK\n")


def test_leftovers_of_a_killed_cycle_do_not_touch_current_and_are_cleaned(example, tmp_path):
    """What a cycle killed half-way leaves (a half-built next generation, a half-copied pool
    file, an unreferenced pool file, a new link not yet renamed) changes nothing in
    DEST/current, and the next cycle finishes and removes all of it."""
    example.ok("deliver", ALICE, input=message(1))
    dest = tmp_path / "replica"
    example.ok("replicate", str(dest), "--once")
    (dest / "gen-2" / "index").mkdir(parents=True)
    (dest / "gen-2" / "index" / "data.mdb").write_bytes(b"half a copy")
    (dest / "pool" / ".tmp").mkdir(exist_ok=True)
    (dest / "pool" / ".tmp" / "1").write_bytes(b"From: half")
    orphan = dest / "pool/mail/example.org/alice/cur/1.M1P1Q1Rdeadbeef.gone"
    orphan.write_bytes(message(9))
    os.symlink("gen-2", dest / "current.new")
    assert example.ok("verify", str(dest / "current")).endswith(": OK\n")

    example.ok("deliver", ALICE, input=message(2))
    out = example.ok("replicate", str(dest), "--once")
    assert out.startswith("cycle 2: 2 message(s), 0 queued; shipped 1 file(s) ")
    assert not orphan.exists()
    assert os.listdir(dest / "pool" / ".tmp") == []
    assert sorted(os.listdir(dest)) == ["current", "gen-2", "pool", "replica.lock", "status.json"]
    assert example.ok("verify", str(dest / "current")).endswith(": OK\n")


async def append(cli: Cli, numbers: range) -> None:
    storage = cli.storage()
    try:
        inbox = storage.store.account(ALICE).folder("INBOX")
        for n in numbers:
            await inbox.append(BytesIO(message(n)))
    finally:
        await storage.aclose()


@pytest_twisted.ensureDeferred
async def test_kill_9_at_any_moment_leaves_a_replica_that_verifies(example, tmp_path):
    """The replicator killed with SIGKILL after different delays, cycling as fast as it can,
    with new mail between kills: after each kill DEST/current (once one cycle has finished)
    verifies, and a last cycle still succeeds."""
    await append(example, range(40))
    dest = tmp_path / "replica"
    for round_, delay in enumerate((0.3, 0.6, 0.9, 1.2, 1.6)):
        await append(example, range(100 + round_, 101 + round_))
        child = subprocess.Popen(
            [mailserver_script(), "--config", str(example.config), "replicate", str(dest),
             "--interval", "0.01"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(delay)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(30)
        if (dest / "current").exists():
            assert example.ok("verify", str(dest / "current")).endswith(": OK\n")
    out = example.ok("replicate", str(dest), "--once")
    assert " 45 message(s)" in out
    assert example.ok("verify", str(dest / "current")).endswith(": OK\n")


def test_sigterm_lets_the_cycle_finish_and_stops(example, tmp_path):
    """The continuous mode prints a line per cycle and stops cleanly (status 0) on SIGTERM."""
    example.ok("deliver", ALICE, input=message(1))
    dest = tmp_path / "replica"
    child = subprocess.Popen(
        [mailserver_script(), "--config", str(example.config), "replicate", str(dest),
         "--interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().startswith(b"replicating to ")
        assert child.stdout.readline().startswith(b"cycle 1: 1 message(s)")
        assert child.stdout.readline().startswith(b"cycle 2: 1 message(s)")
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert out.endswith(b"replication stopped\n")
    assert example.ok("verify", str(dest / "current")).endswith(": OK\n")


def test_status_reports_the_last_cycle_and_fails_over_max_lag(example, tmp_path):
    """--status names the generation, lag and counts; --max-lag makes an old replica exit 1."""
    example.ok("deliver", ALICE, input=message(1))
    dest = tmp_path / "replica"
    example.ok("replicate", str(dest), "--once")
    out = example.ok("replicate", str(dest), "--status", "--max-lag", "3600")
    assert f"{dest}/current -> generation 1" in out
    assert "holds:         1 message(s), 0 queued" in out
    state = status(dest)
    state["snapshot_at"] -= 7200  # as if no cycle had finished for two hours
    (dest / "status.json").write_text(json.dumps(state))
    err = example.fails("replicate", str(dest), "--status", "--max-lag", "3600")
    assert "the replica lags 72" in err and "more than 3600s" in err


def test_a_failed_cycle_is_recorded_and_keeps_the_last_finished_one(example, tmp_path):
    """A cycle that cannot run (here: the primary's index is gone) exits 1 with one line,
    writes the error into status.json and leaves DEST/current as it was."""
    example.ok("deliver", ALICE, input=message(1))
    dest = tmp_path / "replica"
    example.ok("replicate", str(dest), "--once")
    (example.data / "index" / "data.mdb").rename(tmp_path / "data.mdb.aside")
    done = example("replicate", str(dest), "--once")
    assert done.returncode == 1
    err = done.stderr.decode().splitlines()[-1]  # after the progress bars
    assert err.startswith("error: replication cycle failed: no index at ")
    assert err.endswith("the replica keeps its last finished cycle")
    state = status(dest)
    assert state["generation"] == 1 and state["last_error"]
    assert "last error:" in example.ok("replicate", str(dest), "--status")
    assert example.ok("verify", str(dest / "current")).endswith(": OK\n")


def test_misuse_is_refused_with_what_to_do(example, tmp_path):
    """DEST inside the data directory, a non-empty directory that is not a replica, a
    replica another replicator holds, a promoted replica (a server opened it), --status
    where no cycle finished, --max-lag without --status and a bad --interval: one line each."""
    example.ok("deliver", ALICE, input=message(1))
    err = example.fails("replicate", str(example.data / "replica"), "--once")
    assert "inside the data directory" in err
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert "neither empty nor a replica" in example.fails("replicate", str(other), "--once")
    assert "has no status.json" in example.fails("replicate", str(other), "--status")
    err = example.fails("replicate", str(other), "--once", "--max-lag", "5")
    assert "--max-lag goes with --status" in err

    dest = tmp_path / "replica"
    example.ok("replicate", str(dest), "--once")
    fd = os.open(dest / "replica.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert "another replicator is running" in example.fails("replicate", str(dest))
    finally:
        os.close(fd)
    (current(dest) / "index" / "lock.mdb").write_bytes(b"")  # what a server's start leaves
    assert "the replica was promoted" in example.fails("replicate", str(dest), "--once")

    for bad in ("0", "-1", "soon", "nan"):
        done = example("replicate", str(dest), "--interval", bad)
        assert done.returncode == 2
        assert "error: argument --interval: " in done.stderr.decode()

