"""The maildir store's header index (issue 6, schemas 10 and 11): every message's SEARCH
texts, text leaves and (when exact and small) its header block, kept per folder and UID from
delivery, carried by COPY and MOVE, dropped by EXPUNGE; the migrations fill the texts and
leaves of messages indexed before them; a folder missing any text answers None so the server
searches another way."""

from __future__ import annotations

import io
import shutil

import pytest_twisted
from zope.interface.verify import verifyObject

from mailserver.db import schema
from mailserver.db.env import migrate
from mailserver.interfaces.header_index import IHeaderIndex
from mailserver.message import body_text, search_text
from mailserver.message.headers import header_length
from mailserver.store import header_index
from mailserver.store.reindex import adopt_accounts, reindex
from tests.conftest import Storage

ALICE = "alice@example.org"
MESSAGES = [
    b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.de>\r\nTo: a@example.org, B <b@example.org>\r\n"
    b"Cc: c@example.org\r\nSubject: Quarterly =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\nbody\r\n",
    b"From: x@example.org\nSubject: LF only\n\nbody\n",
    b"Subject: no body at all",
    b"X-Big: " + b"y" * header_index.HEADER_LIMIT + b"\r\nSubject: big\r\n\r\nbody\r\n",
]


async def _inbox(storage):
    await storage.store.create_account(ALICE)
    inbox = storage.store.account(ALICE).folder("INBOX")
    for data in MESSAGES:
        await inbox.append(io.BytesIO(data))
    return inbox


def _texts(storage, fid: int) -> dict[tuple[bytes, int], bytes]:
    with storage.db.read() as txn:
        return {
            (bytes(key[4:5]), int.from_bytes(key[5:9], "big")): bytes(value)
            for key, value in txn.prefix(b"header_text", schema.u32(fid))
        }


def _expected_texts(inbox) -> dict[tuple[bytes, int], bytes]:
    out = {}
    for message in inbox.messages(list(inbox.uids())):
        for tag, text in search_text.texts(message.info.envelope).items():
            out[(tag, message.info.uid)] = text
    return out


@pytest_twisted.ensureDeferred
async def test_delivery_keeps_exact_blocks_and_every_text(storage):
    """The kept block is the file's header section byte for byte; one over HEADER_LIMIT is
    not kept; every message has its five texts, from its envelope."""
    inbox = await _inbox(storage)
    assert verifyObject(IHeaderIndex, inbox)
    blocks = dict(inbox.header_blocks([1, 2, 3, 4, 9]))
    assert blocks == {n: MESSAGES[n - 1][: header_length(MESSAGES[n - 1])] for n in (1, 2, 3)}
    assert _texts(storage, inbox.folder_id) == _expected_texts(inbox)
    assert inbox.search_field("SUBJECT", "GRÜSSE") == [1]  # case-folded: ß is ss
    assert inbox.search_field("TO", "b <B@EXAMPLE") == [1]
    assert inbox.search_field("SUBJECT", "") == [1, 2, 3, 4]
    assert inbox.search_field("CC", "nobody") == []


@pytest_twisted.ensureDeferred
async def test_copy_move_and_expunge_keep_the_index_in_step(storage):
    """A copy and a moved message get the source's block and texts; an expunged one and a
    deleted folder leave nothing behind."""
    inbox = await _inbox(storage)
    await inbox.copy([1, 3, 4], "Archive")
    await inbox.move([2], "Archive")
    archive = storage.store.account(ALICE).folder("Archive")
    blocks = dict(archive.header_blocks([1, 2, 3, 4]))
    assert blocks == {
        1: MESSAGES[0][: header_length(MESSAGES[0])],
        2: MESSAGES[2],
        4: MESSAGES[1][: header_length(MESSAGES[1])],
    }
    assert _texts(storage, archive.folder_id) == _expected_texts(archive)
    assert archive.search_field("SUBJECT", "lf only") == [4]
    await inbox.expunge([1, 3])
    assert dict(inbox.header_blocks([1, 2, 3, 4])) == {}
    assert sorted({uid for _tag, uid in _texts(storage, inbox.folder_id)}) == [4]
    assert inbox.search_field("SUBJECT", "big") == [4]
    await storage.store.account(ALICE).delete_folder("Archive")
    assert _texts(storage, archive.folder_id) == {}
    with storage.db.read() as txn:
        assert list(txn.prefix(b"headers", schema.u32(archive.folder_id))) == []


@pytest_twisted.ensureDeferred
async def test_a_missing_text_makes_the_search_answer_none(storage):
    """search_field counts the texts against the folder's messages: one missing (an index the
    migration did not reach) gives None rather than a wrong answer."""
    inbox = await _inbox(storage)
    key = schema.header_text_key(inbox.folder_id, b"S", 2)
    storage.db.write_sync(lambda txn: txn.delete(b"header_text", key))
    assert inbox.search_field("SUBJECT", "quarterly") is None
    assert inbox.search_field("FROM", "x@") == [2]


@pytest_twisted.ensureDeferred
async def test_migration_to_10_fills_the_texts_from_the_envelopes(storage, monkeypatch):
    """An index at version 9 (no header index) gets every message's texts, read a batch at a
    time; the header blocks stay unkept (the files are read for them)."""
    monkeypatch.setattr(schema, "_RENDER_BATCH", 3)
    inbox = await _inbox(storage)
    await inbox.copy([1, 2], "Archive")
    archive = storage.store.account(ALICE).folder("Archive")

    def downgrade(txn):
        for table in (b"header_text", b"headers"):
            for key, _ in list(txn.prefix(table, b"")):
                txn.delete(table, bytes(key))
        txn.put_json(b"meta", b"schema_version", 9)

    storage.db.write_sync(downgrade)
    assert inbox.search_field("SUBJECT", "") is None
    assert migrate(storage.db.env, storage.db.dbs) == schema.SCHEMA_VERSION
    for folder in (inbox, archive):
        assert _texts(storage, folder.folder_id) == _expected_texts(folder)
        assert dict(folder.header_blocks([1, 2, 3, 4])) == {}
    assert inbox.search_field("SUBJECT", "quarterly") == [1]


def _leaves(folder, uids) -> dict[int, list]:
    return dict(folder.text_leaves(uids))


def _expected_leaves(folder) -> dict[int, list]:
    return {
        message.info.uid: body_text.text_leaves(message.info.bodystructure)
        for message in folder.messages(list(folder.uids()))
    }


@pytest_twisted.ensureDeferred
async def test_text_leaves_follow_the_messages(storage):
    """Every message's text leaves are its cached structure's; a copy and a moved message
    get the source's; an expunged one leaves none behind."""
    inbox = await _inbox(storage)
    assert _leaves(inbox, [1, 2, 3, 4]) == _expected_leaves(inbox)
    await inbox.copy([1], "Archive")
    await inbox.move([2], "Archive")
    archive = storage.store.account(ALICE).folder("Archive")
    assert _leaves(archive, [1, 2]) == _expected_leaves(archive)
    await inbox.expunge([1])
    assert _leaves(inbox, [1, 2, 3, 4]) == {
        3: _expected_leaves(inbox)[3],
        4: _expected_leaves(inbox)[4],
    }


@pytest_twisted.ensureDeferred
async def test_migration_to_11_fills_the_text_leaves(storage, monkeypatch):
    """An index at version 10 (no text leaves) gets every message's from its structure."""
    monkeypatch.setattr(schema, "_RENDER_BATCH", 3)
    inbox = await _inbox(storage)

    def downgrade(txn):
        for key, _ in list(txn.prefix(b"text_parts", b"")):
            txn.delete(b"text_parts", bytes(key))
        txn.put_json(b"meta", b"schema_version", 10)

    storage.db.write_sync(downgrade)
    assert _leaves(inbox, [1, 2, 3, 4]) == {}
    assert migrate(storage.db.env, storage.db.dbs) == schema.SCHEMA_VERSION
    assert _leaves(inbox, [1, 2, 3, 4]) == _expected_leaves(inbox)


@pytest_twisted.ensureDeferred
async def test_reindex_from_the_files_fills_the_header_index(tmp_path, storage):
    """With the index lost, reindex keeps every message's block, texts and leaves again, a
    hard-linked copy's from the object it shares."""
    inbox = await _inbox(storage)
    await inbox.copy([1], "Archive")
    blocks = dict(inbox.header_blocks([1, 2, 3, 4]))
    await storage.aclose()
    shutil.rmtree(tmp_path / "index")
    fresh = Storage(tmp_path)
    try:
        assert await adopt_accounts(fresh.store) == [ALICE]
        await reindex(fresh.store, ALICE)
        inbox = fresh.store.account(ALICE).folder("INBOX")
        archive = fresh.store.account(ALICE).folder("Archive")
        assert sorted(dict(inbox.header_blocks(list(inbox.uids()))).values()) == sorted(
            blocks.values()
        )
        assert list(dict(archive.header_blocks(list(archive.uids()))).values()) == [blocks[1]]
        for folder in (inbox, archive):
            assert _texts(fresh, folder.folder_id) == _expected_texts(folder)
            assert _leaves(folder, list(folder.uids())) == _expected_leaves(folder)
    finally:
        await fresh.aclose()
