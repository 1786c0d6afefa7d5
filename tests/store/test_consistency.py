"""The start-up consistency check (mailserver/store/consistency.py): which folders' files,
index entries and EXISTS disagree, which maildirs the index does not know, and the one line
for a damaged index."""

from __future__ import annotations

import io
import os
import shutil

import lmdb
import pytest_twisted

from mailserver.store.consistency import check, damaged_index, unknown_accounts
from mailserver.store.reindex import reindex


async def two_messages(storage) -> None:
    await storage.store.create_account("alice@example.org")
    inbox = storage.store.account("alice@example.org").folder("INBOX")
    for n in range(2):
        await inbox.append(io.BytesIO(f"Subject: {n}\r\n\r\nbody\r\n".encode()), ["\\Seen"])


@pytest_twisted.ensureDeferred
async def test_a_consistent_store_has_no_problems(storage):
    await two_messages(storage)
    assert check(storage.store) == []
    assert unknown_accounts(storage.store) == []


@pytest_twisted.ensureDeferred
async def test_a_file_without_entry_is_a_mismatch_until_reindexed(storage):
    """A message file the index does not know (copied in behind the server's back) is
    reported for its folder; reindex makes files, entries and EXISTS agree again."""
    await two_messages(storage)
    inbox = storage.store.account("alice@example.org").folder("INBOX")
    cur = os.path.join(inbox.path, "cur")
    name = sorted(os.listdir(cur))[0]
    shutil.copy(os.path.join(cur, name), os.path.join(cur, "1.M1P1Q1.copied:2,S"))
    [mismatch] = check(storage.store)
    assert (mismatch.address, mismatch.folder) == ("alice@example.org", "INBOX")
    assert (mismatch.files, mismatch.entries, mismatch.exists) == (3, 2, 2)
    assert "3 message file(s), 2 index entries, EXISTS 2" in str(mismatch)
    report = await reindex(storage.store, "alice@example.org")
    assert report.messages_added == 1
    assert check(storage.store) == []


@pytest_twisted.ensureDeferred
async def test_a_maildir_unknown_to_the_index_is_found(storage):
    await two_messages(storage)
    os.makedirs(os.path.join(storage.store.root, "example.org", "bob", "cur"))
    assert unknown_accounts(storage.store) == ["bob@example.org"]


def test_a_damaged_index_is_one_line_with_the_repair():
    line = damaged_index(lmdb.CorruptedError("mdb_get: MDB_CORRUPTED"), "/srv/mail/index")
    assert line is not None and "\n" not in line
    assert "/srv/mail/index is damaged" in line and "mailserver reindex --adopt" in line
    assert damaged_index(ValueError("not an index problem"), "/srv/mail/index") is None
