"""Schema version 7: subscriptions move out of the folder records into their own sub-db."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor

from mailserver.db import Database, schema

ALICE = "alice@example.org"


def _folder(txn, fid: int, name: str, subscribed: bool) -> None:
    """A folder as a version 6 index wrote it: the flag in its ``finfo`` record."""
    txn.put(b"folders", schema.folder_key(ALICE, name), schema.u32(fid))
    record = {"id": fid, "account": ALICE, "name": name, "subscribed": subscribed}
    txn.put(b"finfo", schema.u32(fid), schema.dump(record))


@pytest_twisted.ensureDeferred
async def test_migration_from_v6_copies_subscribed_folders(tmp_path):
    """An index at v6 with a subscribed and an unsubscribed folder upgrades to v7 with
    exactly the subscribed one in ``subscriptions`` (key address NUL name)."""
    path = str(tmp_path / "index")
    db = Database.open(path, map_size=16 << 20, reactor=reactor)

    def as_v6(txn):
        _folder(txn, 1, "Lists/IETF", True)
        _folder(txn, 2, "Old", False)
        for key, _ in list(txn.prefix(b"subscriptions", b"")):
            txn.delete(b"subscriptions", key)
        txn.put_json(b"meta", b"schema_version", 6)

    db.write_sync(as_v6)
    await db.close()
    db = Database.open(path, map_size=16 << 20, reactor=reactor)
    try:
        assert db.schema_version == schema.SCHEMA_VERSION >= 7
        with db.read() as txn:
            rows = [(bytes(k), bytes(v)) for k, v in txn.prefix(b"subscriptions", b"")]
        assert rows == [(schema.folder_key(ALICE, "Lists/IETF"), b"")]
    finally:
        await db.close()


@pytest_twisted.ensureDeferred
async def test_migration_reads_a_record_without_the_flag_as_subscribed(tmp_path):
    """A folder record with no ``subscribed`` key (every folder was subscribed unless told
    otherwise) is subscribed after the upgrade."""
    path = str(tmp_path / "index")
    db = Database.open(path, map_size=16 << 20, reactor=reactor)

    def as_v6(txn):
        txn.put(b"folders", schema.folder_key(ALICE, "INBOX"), schema.u32(1))
        txn.put(b"finfo", schema.u32(1), schema.dump({"id": 1, "name": "INBOX"}))
        txn.put_json(b"meta", b"schema_version", 6)

    db.write_sync(as_v6)
    await db.close()
    db = Database.open(path, map_size=16 << 20, reactor=reactor)
    try:
        with db.read() as txn:
            keys = [bytes(k) for k, _ in txn.prefix(b"subscriptions", b"")]
        assert keys == [schema.folder_key(ALICE, "INBOX")]
    finally:
        await db.close()
