"""``mailserver backup``, ``restore`` and ``verify``: a backup holds exactly what its index
snapshot references, with the flags in the file names and a manifest of checksums; restore
refuses a non-empty data directory and a damaged backup; verify names every problem and
exits 1."""

from __future__ import annotations

import json
import os
from io import BytesIO
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from mailserver.db import Database
from mailserver.spool.queue import LmdbSpool
from mailserver.store import backup, index
from mailserver.types import FlagMode
from tests.cli.conftest import ALICE, Cli
from tests.cli.test_queue import enqueue

MESSAGE = (
    b"From: bob@example.net\r\nSubject: %d\r\nMessage-ID: <m%d@example.net>\r\n\r\nbody %d\r\n"
)


def message(n: int) -> bytes:
    return MESSAGE % (n, n, n)


async def fill(cli: Cli) -> str:
    """Three INBOX messages (one \\Seen, one \\Flagged + $label), one copied to Archive, one
    in a new folder; one message queued for remote delivery. The queue id."""
    storage = cli.storage()
    try:
        account = storage.store.account(ALICE)
        inbox = account.folder("INBOX")
        for n in (1, 2, 3):
            await inbox.append(BytesIO(message(n)), internaldate=1_700_000_000 + n)
        await inbox.store_flags([1], ["\\Seen"], FlagMode.ADD)
        await inbox.store_flags([2], ["\\Flagged", "$label"], FlagMode.ADD)
        await inbox.copy([2], "Archive")
        await account.create_folder("Projects/Ünïcode")
        await account.folder("Projects/Ünïcode").append(BytesIO(message(4)), ["\\Answered"])
        spool = LmdbSpool(storage.db, str(cli.data / "spool"), reactor, fsync=False)
        return await enqueue(spool)
    finally:
        await storage.aclose()


async def contents(cli: Cli) -> dict[str, list[tuple[bytes, frozenset]]]:
    """{folder: [(bytes, flags)] in UID order} of alice's account."""
    storage = cli.storage()
    try:
        account = storage.store.account(ALICE)
        found = {}
        for info in account.list_folders():
            folder = account.folder(info.name)
            found[info.name] = [
                (m.open().read(), m.info.flags) for m in folder.messages(folder.uids())
            ]
        return found
    finally:
        await storage.aclose()


def new_cli(root: Path) -> Cli:
    """A Cli whose data directory (``root/var``) does not exist yet."""
    root.mkdir()
    return Cli(root)


def manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


@pytest_twisted.ensureDeferred
async def test_backup_restore_gives_back_every_message_flag_and_queued_message(example, tmp_path):
    """A backup restored into a new data directory holds the same folders, messages, flags
    and queue; verify passes on both, and reindex on the restored data changes nothing."""
    queue_id = await fill(example)
    before = await contents(example)
    dest = tmp_path / "backup"
    done = example("backup", str(dest))
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().startswith(f"backup in {dest}: 5 message(s), 1 queued, ")
    assert "checksums [" in done.stderr.decode()  # progress bars on stderr
    files = manifest(dest)["files"]
    assert f"spool/{queue_id}" in files
    assert "index/data.mdb" in files
    cur = "mail/example.org/alice/cur/"
    inbox = sorted(p[len(cur):].split(":2,")[1] for p in files if p.startswith(cur))
    assert inbox == ["", "", "FS"] or inbox == ["", "F", "S"]
    assert example.ok("verify", str(dest)).endswith(": OK\n")

    restored = new_cli(tmp_path / "restored")
    out = restored.ok("restore", str(dest))
    assert out.startswith(f"restored {len(files)} file(s) from {dest}")
    assert await contents(restored) == before
    assert restored.ok("verify").endswith(": OK\n")
    assert restored.ok("queue", "list").count(queue_id) == 1
    assert restored.ok("reindex", ALICE).endswith(
        "messages +0 -0; flags fixed 0; folders +0 -0; header index fixed 0\n"
    )


@pytest_twisted.ensureDeferred
async def test_flags_in_backup_file_names_come_from_the_snapshot(example, tmp_path):
    """Message files in the backup are named with the flags the index holds, so a file
    renamed late (or not yet moved from new/) still lands in cur/ with the right name."""
    await fill(example)
    live = example.maildir() / "cur"
    for name in os.listdir(live):  # as if the post-commit renames had not happened yet
        os.rename(live / name, example.maildir() / "new" / name.split(":")[0])
    dest = tmp_path / "backup"
    example.ok("backup", str(dest))
    names = sorted(os.listdir(dest / "mail/example.org/alice/cur"))
    assert sorted(n.split(":2,")[1] for n in names) == ["", "F", "S"]
    assert os.listdir(dest / "mail/example.org/alice/new") == []
    assert example.ok("verify", str(dest)).endswith(": OK\n")


@pytest_twisted.ensureDeferred
async def test_backup_with_link_hard_links_the_message_files(example, tmp_path):
    """--link gives the backup's message files the live files' inodes (same file system)."""
    await fill(example)
    dest = tmp_path / "linked"
    out = example.ok("backup", "--link", str(dest))
    assert "(5 hard-linked)" in out  # 4 message inodes (one has two names) + 1 spool file
    live = {path.stat().st_ino for path in (example.maildir() / "cur").iterdir()}
    copied = {os.stat(p).st_ino for p in (dest / "mail/example.org/alice/cur").iterdir()}
    assert copied == live


def test_files_vanishing_during_the_backup_are_found_or_kept(example, tmp_path):
    """A file renamed for a flag change while files are staged is found by its base name;
    files unlinked after the snapshot (expunged) are still in the backup."""
    cur = example.maildir() / "cur"
    for n in (1, 2, 3):
        example.ok("deliver", ALICE, input=message(n))
    names = sorted(os.listdir(cur))
    seen: list[str] = []

    def progress(phase: str, done: int, total: int | None) -> None:
        if phase == "staging" and done == 1:  # a later file gets a new name (flag change)
            os.rename(cur / names[-1], cur / (names[-1] + "S"))
        if phase == "placing" and not seen:  # after the snapshot: every live file expunged
            for name in os.listdir(cur):
                os.unlink(cur / name)
        seen.append(phase)

    dest = tmp_path / "backup"
    report = backup.take_backup(
        str(example.data), str(dest), map_size=64 << 20, fsync=False, progress=progress
    )
    assert report.messages == 3 and report.snapshots == 1
    assert len(os.listdir(dest / "mail/example.org/alice/cur")) == 3
    assert example.ok("verify", str(dest)).endswith(": OK\n")


def expunge_newest(cli: Cli) -> None:
    """What the server does on EXPUNGE: drop alice's newest INBOX message from the index
    (one committed write), then unlink its file."""
    db = Database.open(str(cli.data / "index"), map_size=64 << 20, reactor=reactor, sync=False)
    try:
        def op(txn):
            fid = index.folder_id(txn, ALICE, "INBOX")
            record = index.folder(txn, fid)
            newest = max(uid for uid, _f, _m in index.flag_range(txn, fid, 1, None))
            return index.remove_messages(txn, record, [newest])

        [(_uid, base, _flags)] = db.write_sync(op)
    finally:
        db.close()
    for path in cli.maildir().glob(f"*/{base}*"):
        path.unlink()


def test_a_message_gone_before_it_was_copied_makes_the_snapshot_retaken(example, tmp_path,
                                                                        monkeypatch):
    """A message delivered after the files were staged and expunged just after the snapshot
    (so neither staged nor on disk) makes the backup take its snapshot again; the backup
    then holds exactly the messages still there, and verifies."""
    example.ok("deliver", ALICE, input=message(1))
    real = backup._snapshot
    taken: list[str] = []

    def progress(phase: str, done: int, total: int | None) -> None:
        if phase == "staging" and done == total and not taken:
            example.ok("deliver", ALICE, input=message(2))  # arrives after staging

    def snapshot(data_dir: str, target: str, map_size: int) -> None:
        real(data_dir, target, map_size)
        taken.append(target)
        if len(taken) == 1:  # the server expunges it before the backup copies it
            expunge_newest(example)

    monkeypatch.setattr(backup, "_snapshot", snapshot)
    dest = tmp_path / "backup"
    report = backup.take_backup(
        str(example.data), str(dest), map_size=64 << 20, fsync=False, progress=progress
    )
    assert report.snapshots == 2 and report.messages == 1
    [only] = (dest / "mail/example.org/alice/cur").iterdir()
    assert only.read_bytes().endswith(message(1))
    assert example.ok("verify", str(dest)).endswith(": OK\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="changing file owners needs root")
@pytest_twisted.ensureDeferred
async def test_backup_and_restore_as_root_keep_the_servers_user_as_owner(example, tmp_path):
    """Run as root (cp -a style), backup and restore keep each file's and directory's owner,
    so a server running as its own user can still write the restored data."""
    await fill(example)
    owner = (4321, 4321)
    for current, dirs, files in os.walk(example.data):
        for name in [*dirs, *files, "."]:
            os.chown(os.path.join(current, name), *owner)
    dest = tmp_path / "backup"
    example.ok("backup", str(dest))
    restored = new_cli(tmp_path / "restored")
    restored.ok("restore", str(dest))
    owners = {
        (stat.st_uid, stat.st_gid)
        for current, dirs, files in os.walk(restored.data)
        for stat in [os.stat(os.path.join(current, n)) for n in [*dirs, *files, "."]]
    }
    assert owners == {owner}


def test_backup_refuses_a_non_empty_destination_or_one_inside_the_data(example, tmp_path):
    """DEST must be new or empty, and outside the data directory; the error says so."""
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    err = example.fails("backup", str(full)).strip()
    assert err == f"error: {full} exists and is not an empty directory; give a new directory " \
                  "(backups are never merged)"
    inside = example.data / "backups"
    assert "is inside the data directory" in example.fails("backup", str(inside))
    assert not inside.exists()


def test_backup_of_a_data_directory_without_index_says_what_to_check(cli, tmp_path):
    err = cli.fails("backup", str(tmp_path / "b"))
    assert err.startswith(f"error: no index in {cli.data}: is server.data_dir right?")


@pytest_twisted.ensureDeferred
async def test_verify_names_each_damaged_missing_and_unlisted_file(example, tmp_path):
    """verify SRC prints one line per problem (checksum, size, missing, unlisted, an index
    entry without its file) and exits 1."""
    await fill(example)
    dest = tmp_path / "backup"
    example.ok("backup", str(dest))
    cur = dest / "mail/example.org/alice/cur"
    first, second, third = sorted(cur.iterdir())
    first.write_bytes(first.read_bytes().replace(b"body", b"BODY"))  # same size, new bytes
    second.unlink()
    third.write_bytes(third.read_bytes() + b"more")
    (cur / "stray").write_bytes(b"x")
    done = example("verify", str(dest))
    assert done.returncode == 1
    lines = done.stdout.decode().splitlines()
    rel = lambda p: str(p.relative_to(dest))  # noqa: E731
    assert f"{rel(first)}: checksum mismatch (the file is damaged)" in lines
    assert f"{rel(second)}: missing (listed in the manifest)" in lines
    assert any(line.startswith(f"{rel(third)}: ") and "the manifest says" in line for line in lines)
    assert f"{rel(cur / 'stray')}: not in the manifest" in lines
    assert any(line.startswith(f"{rel(second)}: missing (alice@example.org INBOX uid ")
               for line in lines)
    assert done.stderr.decode().endswith(f"error: {len(lines)} problem(s) in {dest}\n")


def test_verify_of_an_unfinished_backup_or_no_directory(example, tmp_path):
    """A directory without manifest.json is an unfinished backup; a missing SRC is named."""
    empty = tmp_path / "empty"
    empty.mkdir()
    err = example.fails("verify", str(empty))
    assert f"{empty} has no manifest.json: it is not a backup, or the backup did not finish" in err
    assert "is not a directory" in example.fails("verify", str(tmp_path / "nothing"))


@pytest_twisted.ensureDeferred
async def test_verify_live_data_directory_checks_index_against_files(example):
    """verify with no SRC: OK on a sound data directory; a message file deleted behind the
    store's back and a file dropped into cur/ are each named, with the fix."""
    await fill(example)
    assert example.ok("verify").endswith(": OK\n")
    cur = example.maildir() / "cur"
    victim = sorted(cur.iterdir())[0]
    victim.unlink()
    (cur / "1700000009.M9P9.host:2,S").write_bytes(message(9))
    done = example("verify")
    assert done.returncode == 1
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("mail/example.org/alice/cur/")
    assert "missing (alice@example.org INBOX uid " in lines[0]
    assert lines[0].endswith(f"run: mailserver reindex {ALICE}")
    assert lines[1] == (
        "mail/example.org/alice/cur/1700000009.M9P9.host:2,S: not in the index "
        f"({ALICE} INBOX); run: mailserver reindex {ALICE}"
    )


@pytest_twisted.ensureDeferred
async def test_verify_names_index_counters_that_disagree_with_the_messages(example):
    """A folder's EXISTS and an account's quota usage that do not match the message entries
    are each named with the fix, and that fix (reindex) makes verify pass again."""
    await fill(example)
    db = Database.open(str(example.data / "index"), map_size=64 << 20, reactor=reactor)

    def damage(txn):
        record = index.folder(txn, index.folder_id(txn, ALICE, "INBOX"))
        record["exists"] += 1
        index.update_folder(txn, record)
        account = index.account(txn, ALICE)
        account["used_bytes"] += 5
        txn.put_json(b"accounts", ALICE.encode(), account)

    db.write_sync(damage)
    await db.close()
    done = example("verify")
    assert done.returncode == 1
    fix = f"; run: mailserver reindex {ALICE}"
    assert done.stdout.decode().splitlines() == [
        f"index: {ALICE} INBOX: exists is 4, its messages say 3{fix}",
        f"index: {ALICE} quota usage is 5 message(s) and {5 + sum_sizes()} bytes, its folders "
        f"hold 5 and {sum_sizes()}{fix}",
    ]
    example.ok("reindex", ALICE)
    assert example.ok("verify").endswith(": OK\n")


def sum_sizes() -> int:
    """The bytes :func:`fill` puts into alice's folders (message 2 twice: INBOX, Archive)."""
    return sum(len(message(n)) for n in (1, 2, 2, 3, 4))


@pytest_twisted.ensureDeferred
async def test_restore_refuses_a_non_empty_data_directory(example, tmp_path):
    """restore into a data directory with anything in it changes nothing and says how to go
    on (move it aside or configure a new data_dir)."""
    await fill(example)
    dest = tmp_path / "backup"
    example.ok("backup", str(dest))
    err = example.fails("restore", str(dest)).strip()
    assert err == (
        f"error: the data directory {example.data} is not empty; restore only into an empty "
        f"one: move it aside (mv {example.data} {example.data}.old) or give --config a config "
        "whose server.data_dir is a new directory"
    )


@pytest_twisted.ensureDeferred
async def test_restore_refuses_a_damaged_backup_and_writes_nothing(example, tmp_path):
    await fill(example)
    dest = tmp_path / "backup"
    example.ok("backup", str(dest))
    victim = sorted((dest / "mail/example.org/alice/cur").iterdir())[0]
    victim.write_bytes(b"garbage")
    restored = new_cli(tmp_path / "restored")
    done = restored("restore", str(dest))
    assert done.returncode == 1
    err = done.stderr.decode().splitlines()[-1]  # after the progress bar of the check
    assert err.startswith(f"error: the backup in {dest} has 1 problem(s)")
    assert f"see them all with: mailserver verify {dest}" in err
    assert not restored.data.exists()


def test_backup_commands_are_for_admins_only(example, tmp_path):
    """--as a plain user: backup, restore, verify, import and export are refused."""
    for command in (["backup", str(tmp_path / "b")], ["restore", str(tmp_path)], ["verify"],
                    ["import", ALICE, str(tmp_path)], ["export", ALICE, str(tmp_path / "e")]):
        done = example("--as", ALICE, *command)
        assert done.returncode == 1, command
        assert done.stderr.decode() == f"error: {ALICE} (user) may not manage-domains\n"
