"""``mailserver verify`` and ``restore`` of a backup made by an older version: the files are
checked against the manifest as they were written; ``verify`` checks the index in a temporary
copy upgraded by the server's migrations (removed afterwards, the backup left as it is), and
``restore`` upgrades the restored index in place and checks it, after which the server
answers IMAP FETCH and SEARCH as the old one did. A backup of a newer schema is refused with
the versions and the fix; an upgraded index with problems leaves nothing restored."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import lmdb
import pytest
import pytest_twisted

from mailserver.db import schema
from mailserver.store import backup_check
from mailserver.store.backup import BackupError, sha256_file
from tests.cli.conftest import ALICE, Cli
from tests.store.test_index_integrity_imap import (
    MAP_SIZE,
    _answers,
    _assert_in_step,
    _filled,
    _serve,
)

#: The sub-dbs added after schema 9 (``imap_items`` replaced ``rendered`` in 12).
ADDED_SINCE_9 = (b"headers", b"header_text", b"text_parts", b"imap_items")


def _open(index_dir: Path) -> lmdb.Environment:
    """A backup's index copy opened for writing, without a lock file (nothing else has it)."""
    return lmdb.open(
        str(index_dir), max_dbs=len(schema.SUBDBS) + 4, map_size=MAP_SIZE, lock=False
    )


def _set_version(backup_root: Path, version: int) -> None:
    """Record ``version`` as the index's schema, in the index and the manifest."""
    env = _open(backup_root / "index")
    try:
        with env.begin(write=True) as txn:
            meta = env.open_db(b"meta", txn=txn, create=False)
            txn.put(b"schema_version", schema.dump(version), db=meta)
    finally:
        env.close()
    _reseal(backup_root, version)


def _reseal(backup_root: Path, version: int) -> None:
    """The manifest's entry of the rewritten index file made true again (as the older
    version's backup would have written it), and its schema_version."""
    path = backup_root / "manifest.json"
    manifest = json.loads(path.read_text())
    data = backup_root / "index" / "data.mdb"
    manifest["files"]["index/data.mdb"] = {"size": data.stat().st_size,
                                           "sha256": sha256_file(str(data))}
    manifest["schema_version"] = version
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True))


def _downgrade_to_9(backup_root: Path) -> None:
    """Rewrite the backup's index as schema 9 wrote it: each object's rendered IMAP items in
    ``rendered`` (taken from the messages' ``imap_items``), none of the sub-dbs added since,
    ``schema_version`` 9; then fix the manifest."""
    env = _open(backup_root / "index")
    head = schema.IMAP_ITEMS_HEAD
    try:
        with env.begin(write=True) as txn:
            items = env.open_db(b"imap_items", txn=txn, create=False)
            rendered = env.open_db(b"rendered", txn=txn, create=False)
            assert txn.stat(rendered)["entries"] == 0  # schema 12 keeps it empty
            for _key, value in list(txn.cursor(db=items)):
                value = bytes(value)
                _size, _date, length = head.unpack_from(value)
                object_id = value[head.size : head.size + length]
                packed = value[head.size + length :]
                if packed:
                    txn.put(object_id, packed, db=rendered)
            assert txn.stat(rendered)["entries"] > 0
            for table in ADDED_SINCE_9:
                txn.drop(env.open_db(table, txn=txn, create=False), delete=True)
            meta = env.open_db(b"meta", txn=txn, create=False)
            txn.put(b"schema_version", schema.dump(9), db=meta)
    finally:
        env.close()
    _reseal(backup_root, 9)


def _tables(index_dir: Path) -> set[bytes]:
    """The named sub-dbs of an index."""
    env = lmdb.open(str(index_dir), max_dbs=len(schema.SUBDBS) + 4, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return {bytes(key) for key, _ in txn.cursor()}
    finally:
        env.close()


@pytest.fixture
def source(tmp_path: Path) -> Cli:
    root = tmp_path / "source"
    root.mkdir()
    return Cli(root)


@pytest_twisted.ensureDeferred
async def test_an_older_backup_verifies_and_restores_with_the_same_imap_answers(source, tmp_path):
    """A backup whose index is schema 9 (no header index, no per-message items; items per
    object in ``rendered``) verifies OK, with a note that an upgraded copy was checked and
    the backup unchanged; restore copies it, upgrades the restored index to this schema, and
    the server started on it answers every FETCH and SEARCH as before; the live data
    verifies and its header index is in step."""
    before = await _filled(source.data)
    dest = tmp_path / "backup"
    source.ok("backup", str(dest))
    _downgrade_to_9(dest)
    assert not set(ADDED_SINCE_9) & _tables(dest / "index")
    sealed = (dest / "manifest.json").read_bytes()
    index_sum = sha256_file(str(dest / "index" / "data.mdb"))

    done = source("verify", str(dest))
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode() == f"{dest}: OK\n"
    err = done.stderr.decode()
    assert (
        f"note: the backup's index has schema 9, older than this program's "
        f"{schema.SCHEMA_VERSION}: it is checked in a temporary copy upgraded to "
        f"{schema.SCHEMA_VERSION}" in err
    )
    assert f"upgrading the index from schema 9 to {schema.SCHEMA_VERSION} [" in err  # progress
    assert (dest / "manifest.json").read_bytes() == sealed
    assert sha256_file(str(dest / "index" / "data.mdb")) == index_sum
    assert not (dest / "index" / "lock.mdb").exists()

    (tmp_path / "restored").mkdir()
    restored = Cli(tmp_path / "restored")  # its data directory does not exist yet
    out = restored.ok("restore", str(dest))
    files = len(json.loads(sealed)["files"])
    assert out == (
        f"restored {files} file(s) from {dest} into {restored.data}; its index was upgraded "
        f"from schema 9 to {schema.SCHEMA_VERSION}; start the server now\n"
    )
    assert sha256_file(str(dest / "index" / "data.mdb")) == index_sum  # the backup unchanged
    assert set(ADDED_SINCE_9) <= _tables(restored.data / "index")
    assert restored.ok("verify").endswith(": OK\n")

    system = await _serve(restored.data)
    try:
        assert system._db is not None and system._db.schema_version == schema.SCHEMA_VERSION
        with system._db.read() as txn:
            assert txn.count(b"rendered") == 0
            assert txn.count(b"imap_items") == 9  # every message: 6 in INBOX, 3 in Archive
        _assert_in_step(system)
        assert await _answers(system) == before
    finally:
        await system.stop()


@pytest_twisted.ensureDeferred
async def test_verify_of_an_older_backup_removes_its_upgraded_copy(source, tmp_path,
                                                                   monkeypatch):
    """The upgraded copy verify checks lives in a temporary directory (TMPDIR) and is gone
    afterwards; the answer is the same as for the backup before it was made older."""
    await _filled(source.data)
    dest = tmp_path / "backup"
    source.ok("backup", str(dest))
    _downgrade_to_9(dest)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    seen: list[str] = []
    problems = backup_check.verify_backup(
        str(dest), lambda phase, done, total: seen.append(phase), map_size=MAP_SIZE
    )
    assert problems == []
    assert f"upgrading the index from schema 9 to {schema.SCHEMA_VERSION}" in seen
    assert list(scratch.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_a_backup_of_a_newer_schema_is_refused_with_the_versions(source, tmp_path):
    """verify and restore of a backup made by a newer version (schema above this program's)
    fail with one line naming both versions and what to use; nothing is restored."""
    await _filled(source.data)
    dest = tmp_path / "backup"
    source.ok("backup", str(dest))
    newer = schema.SCHEMA_VERSION + 1
    _set_version(dest, newer)
    expected = (
        f"error: the index at {dest / 'index'} has schema {newer}, newer than this program's "
        f"{schema.SCHEMA_VERSION}: it was made by a newer mailserver; verify or restore it "
        "with that version (or a later one)"
    )
    done = source("verify", str(dest))
    assert done.returncode == 1
    assert done.stderr.decode().splitlines()[-1] == expected  # after the checking bar
    assert done.stdout.decode() == ""
    (tmp_path / "restored").mkdir()
    restored = Cli(tmp_path / "restored")
    done = restored("restore", str(dest))
    assert done.returncode == 1
    assert done.stderr.decode().splitlines()[-1] == expected
    assert not restored.data.exists()


@pytest_twisted.ensureDeferred
async def test_an_older_backup_whose_upgraded_index_has_problems_restores_nothing(source,
                                                                                   tmp_path):
    """An older backup whose index (sealed in its manifest) disagrees with itself, here
    INBOX's EXISTS (5 messages: 6 appended, 1 moved), is named by verify; restore upgrades
    and checks it, then removes what it wrote and says so, with the command that lists
    every problem."""
    await _filled(source.data)
    dest = tmp_path / "backup"
    source.ok("backup", str(dest))
    _downgrade_to_9(dest)
    env = _open(dest / "index")
    try:
        with env.begin(write=True) as txn:
            finfo = env.open_db(b"finfo", txn=txn, create=False)
            for key, value in list(txn.cursor(db=finfo)):
                record = schema.load(bytes(value))
                if record["name"] == "INBOX":
                    record["exists"] += 1
                    txn.put(bytes(key), schema.dump(record), db=finfo)
    finally:
        env.close()
    _reseal(dest, 9)
    problem = (
        f"index: {ALICE} INBOX: exists is 6, its messages say 5; run: mailserver reindex {ALICE}"
    )
    done = source("verify", str(dest))
    assert done.returncode == 1
    assert done.stdout.decode().splitlines() == [problem]
    (tmp_path / "restored").mkdir()
    restored = Cli(tmp_path / "restored")
    restored.data.mkdir()  # an empty data directory is kept, and left empty
    done = restored("restore", str(dest))
    assert done.returncode == 1
    assert done.stderr.decode().splitlines()[-1] == (
        f"error: the index of the backup in {dest}, upgraded from schema 9 to "
        f"{schema.SCHEMA_VERSION}, has 1 problem(s), e.g. {problem}; nothing was restored; "
        f"see them all with: mailserver verify {dest}"
    )
    assert restored.data.is_dir() and list(restored.data.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_an_older_backup_that_cannot_be_upgraded_is_refused_and_restores_nothing(
    source, tmp_path, monkeypatch
):
    """An older backup with a message record no migration can read (sealed in its manifest,
    so the files check out) fails verify and restore with one line naming the index, both
    versions, the record's error and what to do; verify leaves no temporary copy and
    restore nothing in the data directory."""
    await _filled(source.data)
    dest = tmp_path / "backup"
    source.ok("backup", str(dest))
    _downgrade_to_9(dest)
    env = _open(dest / "index")
    try:
        with env.begin(write=True) as txn:
            messages = env.open_db(b"messages", txn=txn, create=False)
            key = bytes(next(iter(txn.cursor(db=messages)))[0])
            txn.put(key, b"not json", db=messages)
    finally:
        env.close()
    _reseal(dest, 9)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(BackupError) as raised:
        backup_check.verify_backup(str(dest), map_size=MAP_SIZE)
    assert str(raised.value).startswith("cannot upgrade the index at ")
    assert list(scratch.iterdir()) == []

    done = source("verify", str(dest))
    assert done.returncode == 1
    line = done.stderr.decode().splitlines()[-1]
    assert line.startswith("error: cannot upgrade the index at ")
    assert f"from schema 9 to {schema.SCHEMA_VERSION}: JSONDecodeError: " in line
    assert line.endswith(
        "; the index is damaged or this program cannot upgrade it: restore the backup with "
        "the mailserver version that made it (and report this error)"
    )
    (tmp_path / "restored").mkdir()
    restored = Cli(tmp_path / "restored")
    done = restored("restore", str(dest))
    assert done.returncode == 1
    line = done.stderr.decode().splitlines()[-1]
    assert line.startswith(f"error: cannot upgrade the index at {restored.data / 'index'} ")
    assert not restored.data.exists()


def test_an_index_that_records_no_schema_version_is_refused(source, tmp_path):
    """A backup index without a schema version is not upgraded as if it were empty (that
    would start a new index over the old one): verify names it and the fix."""
    source.ok("domain", "add", "example.org")
    dest = tmp_path / "backup"
    source.ok("backup", str(dest))
    env = _open(dest / "index")
    try:
        with env.begin(write=True) as txn:
            txn.delete(b"schema_version", db=env.open_db(b"meta", txn=txn, create=False))
    finally:
        env.close()
    _reseal(dest, 0)
    done = source("verify", str(dest))
    assert done.returncode == 1
    assert "note:" not in done.stderr.decode()
    assert done.stderr.decode().splitlines()[-1] == (
        f"error: the index at {dest / 'index'} records no schema version: it was not written "
        "by mailserver, or it is damaged; take the backup again"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="changing file owners needs root")
@pytest_twisted.ensureDeferred
async def test_an_older_backup_restored_as_root_keeps_the_servers_user_as_owner(source,
                                                                                tmp_path):
    """Run as root, restore of an older backup leaves every file the server's (the data
    directory's owner), the lock file the upgrade made in the index directory and the
    ``spool/`` the backup made (the source had none) included."""
    await _filled(source.data)
    assert not (source.data / "spool").exists()
    owner = (4321, 4321)
    for current, dirs, files in os.walk(source.data):
        for name in [*dirs, *files, "."]:
            os.chown(os.path.join(current, name), *owner)
    dest = tmp_path / "backup"
    source.ok("backup", str(dest))
    _downgrade_to_9(dest)
    (tmp_path / "restored").mkdir()
    restored = Cli(tmp_path / "restored")
    restored.ok("restore", str(dest))
    assert (restored.data / "index" / "lock.mdb").exists()
    owners = {
        (stat.st_uid, stat.st_gid)
        for current, dirs, files in os.walk(restored.data)
        for stat in [os.stat(os.path.join(current, n)) for n in [*dirs, *files, "."]]
    }
    assert owners == {owner}
