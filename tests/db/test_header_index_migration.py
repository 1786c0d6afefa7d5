"""The upgrade of an index made before the header index (schema 9 -> 10 -> 11) on records in
older layouts: after it, SEARCH SUBJECT/FROM/TO/CC/BCC answered from ``header_text`` gives
exactly what searching each message's stored envelope gives (the way the server searched
before), including for a message whose object has no envelope or is gone; text leaves are
kept only where the structure has body offsets; nothing is left out of step."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from mailserver.db import Database, schema
from mailserver.db.env import migrate
from mailserver.message import search_text
from mailserver.store import header_audit, header_index, index
from mailserver.store.mailbox import message_meta

ALICE = "alice@example.org"
NEEDLES = ["", "quarterly", "GRÜSSE", "example.org", "b <b@", "nobody", "zz"]


@pytest.fixture
def db(tmp_path):
    database = Database.open(str(tmp_path / "index"), map_size=64 << 20, reactor=reactor)
    yield database
    if not database._done:
        pytest_twisted.blockon(database.close())


def _meta(data: bytes) -> dict:
    meta = message_meta(data)
    meta.pop("header")
    return meta


def _old_index(txn) -> int:
    """A folder of six messages as a schema-9 index holds them: no header index; object 3's
    structure without body offsets, object 4 with no envelope, message 5's object gone, and
    message 6 a copy (a second label) of object 1."""
    index.create_account(txn, ALICE, "a", default_folders=False)
    record = index.create_folder(txn, ALICE, "INBOX", None)
    metas = [
        _meta(
            b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.de>\r\nTo: B <b@example.org>\r\n"
            b"Subject: Quarterly =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\nbody\r\n"
        ),
        _meta(b"From: x@example.org\nCc: c@example.org\nSubject: lf\n\nbody\n"),
        _meta(b"Subject: old layout quarterly\r\nBcc: zz@example.org\r\n\r\nbody\r\n"),
        _meta(b"Subject: no envelope\r\n\r\nbody\r\n"),
        _meta(b"Subject: object gone\r\n\r\nbody\r\n"),
    ]
    for key in ("header_offset", "body_offset", "body_length"):
        metas[2]["bodystructure"].pop(key, None)
    metas[3]["envelope"] = None
    for n, meta in enumerate(metas, 1):
        index.add_message(txn, record, f"b{n}", frozenset(), 10, 0.0, f"M{n}", meta)
    index.add_message(txn, record, "b6", frozenset(), 10, 0.0, "M1", None)
    txn.delete(b"objects", b"M5")
    for table in header_audit.TABLES:
        for key, _ in list(txn.prefix(table, b"")):
            txn.delete(table, bytes(key))
    txn.put_json(b"meta", b"schema_version", 9)
    return int(record["id"])


def _by_envelope(txn, fid: int, field: str, value: str) -> list[int]:
    """What searching each message's stored envelope answers (the server's other way)."""
    wanted = value.casefold()
    return [
        uid
        for uid, record, _modseq, _flags in index.messages(txn, fid, range(1, 7))
        if wanted in search_text.field_text(index.object_envelope(txn, record["object_id"]), field)
    ]


def test_an_old_layout_index_searches_the_same_after_the_upgrade(db):
    fid = db.write_sync(_old_index)
    with db.read() as txn:
        folder = index.folder(txn, fid)
        assert header_index.search_field(txn, folder, "SUBJECT", "") is None  # not yet kept
    assert migrate(db.env, db.dbs) == schema.SCHEMA_VERSION
    with db.read() as txn:
        folder = index.folder(txn, fid)
        for field in search_text.FIELDS:
            for value in NEEDLES:
                kept = header_index.search_field(txn, folder, field, value)
                assert kept == _by_envelope(txn, fid, field, value), (field, value)
        assert header_index.search_field(txn, folder, "SUBJECT", "quarterly") == [1, 3, 6]
        assert [uid for uid, _ in header_index.text_parts(txn, fid, list(range(1, 7)))] == [
            1,
            2,
            4,
            6,
        ]
        audit = header_audit.audit_folder(txn.raw, txn.dbs, fid)
        assert not audit.problems
        assert audit.missing_leaves == [3, 5]  # an older layout, an object gone: not kept
