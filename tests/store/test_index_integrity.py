"""The header index (``headers``, ``header_text``, ``text_parts``) under the tools that check
and rebuild the index (mailserver/store/header_audit.py): an entry whose message is gone next
to a message without its SEARCH text makes SEARCH miss that message; the start-up check and
``mailserver verify`` name such a folder with the command that repairs it, and ``mailserver
reindex`` repairs it (and drops entries of folders that are gone). Deleting folders and
accounts leaves no entry behind, and a folder made afterwards never sees an old text."""

from __future__ import annotations

import io
import os

import pytest
import pytest_twisted

from mailserver.db import schema
from mailserver.message import search_text
from mailserver.store import header_audit
from mailserver.store.backup_check import index_problems
from mailserver.store.consistency import check, header_index_problems
from mailserver.store.local import LocalDeliveryTarget
from mailserver.store.mailbox import message_meta
from mailserver.store.reindex import reindex
from mailserver.types import Address, Envelope, FlagMode

ALICE = "alice@example.org"
SUBJECTS = ["quarterly report", "lunch", "quarterly numbers"]


def _message(n: int, subject: str) -> bytes:
    return (
        f"From: sender{n}@example.net\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
        f"Message-ID: <m{n}@example.net>\r\nContent-Type: text/plain\r\n\r\nbody {n}\r\n"
    ).encode()


async def _inbox(storage, subjects=SUBJECTS):
    await storage.store.create_account(ALICE)
    inbox = storage.store.account(ALICE).folder("INBOX")
    for n, subject in enumerate(subjects, 1):
        await inbox.append(io.BytesIO(_message(n, subject)))
    return inbox


def _all_entries(storage) -> dict[bytes, list[bytes]]:
    with storage.db.read() as txn:
        return {
            table: [bytes(key) for key, _ in txn.prefix(table, b"")]
            for table in header_audit.TABLES
        }


def _verify(storage) -> list[str]:
    with storage.db.env.begin(write=False) as raw:
        return index_problems(raw, storage.db.dbs)


def _damage(storage, fid: int) -> None:
    """What a partly restored index can hold: the SUBJECT text of message 3 lost, and the
    texts of an expunged message 9 left behind (so the count of texts still matches)."""

    def damage(txn):
        txn.delete(b"header_text", schema.header_text_key(fid, b"S", 3))
        for tag, text in search_text.texts({"subject": "quarterly old"}).items():
            txn.put(b"header_text", schema.header_text_key(fid, tag, 9), text)
        txn.put(b"text_parts", schema.msg_key(fid, 9), b"")

    storage.db.write_sync(damage)


@pytest_twisted.ensureDeferred
async def test_an_orphan_beside_a_missing_text_misleads_search_until_reindexed(storage):
    """With message 3's SUBJECT text lost and an expunged message's texts left, the count of
    texts matches EXISTS and SEARCH SUBJECT "quarterly" misses message 3; the header audit
    (verify's, and the start-up check's for the folders it audits) names the folder and the
    repair; reindex deletes the orphans and writes the missing text from the message's
    envelope, so SEARCH answers right again."""
    inbox = await _inbox(storage)
    assert inbox.search_field("SUBJECT", "quarterly") == [1, 3]
    _damage(storage, inbox.folder_id)
    assert inbox.search_field("SUBJECT", "quarterly") == [1, 9]  # wrong: 3 missed
    assert check(storage.store) == []  # files, entries and EXISTS still agree
    [problem] = header_index_problems(storage.store)
    assert (problem.address, problem.folder) == (ALICE, "INBOX")
    assert header_index_problems(storage.store, only={(ALICE, "Sent")}) == []
    assert header_index_problems(storage.store, only={(ALICE, "INBOX")}) == [problem]
    assert "5 header_text entries of expunged messages" in str(problem)
    assert "1 text_parts entry of expunged messages" in str(problem)
    assert "1 message(s) without their SEARCH texts" in str(problem)
    [line] = _verify(storage)
    assert line.startswith(f"index: {ALICE} INBOX: header index has ")
    assert line.endswith(f"; run: mailserver reindex {ALICE}")
    report = await reindex(storage.store, ALICE)
    assert report.header_index_fixed == 7  # 6 orphans deleted, 1 text written
    assert inbox.search_field("SUBJECT", "quarterly") == [1, 3]
    assert header_index_problems(storage.store) == []
    assert _verify(storage) == []
    again = await reindex(storage.store, ALICE)
    assert again.header_index_fixed == 0  # a consistent index is left as it is


@pytest_twisted.ensureDeferred
async def test_entries_of_a_folder_that_is_gone_are_named_and_dropped(storage):
    """Header index entries under a folder id with no folder (left by a damaged index) are
    named by verify and dropped by reindex; the folders that exist keep theirs."""
    inbox = await _inbox(storage)
    kept = _all_entries(storage)

    def stray(txn):
        txn.put(b"headers", schema.msg_key(4000, 1), b"Subject: old\r\n\r\n")
        for tag, text in search_text.texts({"subject": "old"}).items():
            txn.put(b"header_text", schema.header_text_key(4000, tag, 1), text)

    storage.db.write_sync(stray)
    assert _verify(storage) == [
        "index: 6 header index entries of folder id 4000, which does not exist; "
        "run: mailserver reindex"
    ]
    report = await reindex(storage.store, ALICE)
    assert report.header_index_fixed == 6
    assert _all_entries(storage) == kept
    assert inbox.search_field("SUBJECT", "") == [1, 2, 3]


@pytest_twisted.ensureDeferred
async def test_deleted_folders_and_accounts_leave_nothing_and_ids_are_not_reused(storage):
    """Deleting a folder (with messages and a copy of one elsewhere) and then the account
    leaves no entry in any header index sub-db; a folder of the same name made afterwards
    gets a new folder id and finds nothing; quota usage follows the messages."""
    inbox = await _inbox(storage)
    account = storage.store.account(ALICE)
    await inbox.copy([1, 2], "Archive")
    archive = account.folder("Archive")
    old_id = archive.folder_id
    await account.delete_folder("Archive")
    with storage.db.read() as txn:
        for table in header_audit.TABLES:
            assert list(txn.prefix(table, schema.u32(old_id))) == []
    assert account.quota().used_messages == 3
    await account.create_folder("Archive")
    again = account.folder("Archive")
    assert again.folder_id != old_id
    assert again.search_field("SUBJECT", "") == []
    await storage.store.delete_account(ALICE)
    assert _all_entries(storage) == {table: [] for table in header_audit.TABLES}
    await _inbox(storage)
    fresh = storage.store.account(ALICE).folder("INBOX")
    assert fresh.folder_id not in (inbox.folder_id, old_id, again.folder_id)
    assert fresh.search_field("SUBJECT", "quarterly") == [1, 3]
    assert _verify(storage) == []


def _lose_name(storage, fid: int, uid: int) -> str:
    """Delete the ``names`` entry of message ``uid``; its file's base."""
    with storage.db.read() as txn:
        base = txn.get_json(b"messages", schema.msg_key(fid, uid))["base"]
    storage.db.write_sync(lambda txn: txn.delete(b"names", schema.name_key(fid, base)))
    return base


@pytest_twisted.ensureDeferred
async def test_reindex_keeps_a_message_whose_names_entry_was_lost(storage):
    """A file whose ``names`` entry (file -> UID) was lost keeps its UID, flags and header
    index entries through reindex instead of coming back as a second message; its entry is
    written again."""
    inbox = await _inbox(storage)
    await inbox.store_flags([2], ["\\Seen", "$done"], FlagMode.ADD)
    base = _lose_name(storage, inbox.folder_id, 2)
    report = await reindex(storage.store, ALICE)
    assert (report.messages_added, report.messages_dropped) == (0, 0)
    assert [(i.uid, i.flags) for i in inbox.flags()] == [
        (1, frozenset()),
        (2, frozenset({"\\Seen", "$done"})),
        (3, frozenset()),
    ]
    with storage.db.read() as txn:
        assert txn.get(b"names", schema.name_key(inbox.folder_id, base)) == schema.u32(2)
    assert inbox.search_field("SUBJECT", "") == [1, 2, 3]
    assert check(storage.store) == [] and _verify(storage) == []


@pytest_twisted.ensureDeferred
async def test_reindex_drops_an_entry_whose_names_entry_and_file_are_gone(storage):
    """A message entry with neither its file nor its ``names`` entry is dropped like an
    expunge (its header index entries with it), not kept forever."""
    inbox = await _inbox(storage)
    path = inbox.message(2).path()
    _lose_name(storage, inbox.folder_id, 2)
    os.unlink(path)
    report = await reindex(storage.store, ALICE)
    assert (report.messages_added, report.messages_dropped) == (0, 1)
    assert list(inbox.uids()) == [1, 3]
    assert inbox.search_field("SUBJECT", "") == [1, 3]
    assert inbox.expunged_since(0) == [2]
    assert check(storage.store) == [] and _verify(storage) == []


@pytest_twisted.ensureDeferred
async def test_header_entries_commit_with_the_message_or_not_at_all(storage):
    """The header block, texts and leaves are written in the transaction that adds the
    message: a write that fails after adding it (a crash before the commit) leaves none."""
    inbox = await _inbox(storage)
    before = _all_entries(storage)
    meta = message_meta(_message(9, "never committed"))

    def op(txn):
        inbox._add(txn, "1.M1P1.crash", frozenset(), 100, 0.0, meta)
        with_entries = {
            table: len(list(txn.prefix(table, schema.u32(inbox.folder_id))))
            for table in (b"headers", b"header_text", b"text_parts")
        }
        assert with_entries == {b"headers": 4, b"header_text": 20, b"text_parts": 4}
        raise RuntimeError("crash before the commit")

    with pytest.raises(RuntimeError):
        await storage.store.write(op)
    assert _all_entries(storage) == before
    assert inbox.search_field("SUBJECT", "never") == []


@pytest_twisted.ensureDeferred
async def test_deleting_one_recipients_account_leaves_the_others_entries(storage):
    """A message delivered to two accounts is one object with two labels: deleting one
    account drops that account's entries only; the other keeps its block, texts, leaves,
    rendered items and quota usage, and both the check and verify stay clean."""
    await storage.directory.add_domain("example.org")
    for user in (ALICE, "bob@example.org"):
        await storage.directory.add_user(user, "pw")
        await storage.store.create_account(user)
    target = LocalDeliveryTarget(storage.store, storage.directory)
    delivery = target.start(Envelope(sender=Address("carol", "example.net"), queue_id="Q1"))
    for user in ("alice", "bob"):
        await delivery.add_recipient(Address(user, "example.org"))
    await delivery.body(io.BytesIO(_message(1, "shared quarterly")))
    assert await delivery.commit() == [1, 1]
    bob = storage.store.account("bob@example.org")
    inbox = bob.folder("INBOX")
    kept = dict(inbox.header_blocks([1]))
    await storage.store.delete_account(ALICE)
    assert dict(inbox.header_blocks([1])) == kept and kept
    assert inbox.search_field("SUBJECT", "quarterly") == [1]
    assert list(inbox.text_leaves([1]))
    assert next(iter(inbox.messages([1], "rendered"))).info.rendered
    assert bob.quota().used_messages == 1
    with storage.db.read() as txn:
        for table in header_audit.TABLES:
            fids = {bytes(key[:4]) for key, _ in txn.prefix(table, b"")}
            assert fids == {schema.u32(inbox.folder_id)}
    assert header_index_problems(storage.store) == [] and _verify(storage) == []
