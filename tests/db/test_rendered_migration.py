"""Schemas 9 and 12: each message's IMAP items as sent. Version 9 rendered them per object
(``rendered``); version 12 keeps them per folder and UID with the message's size, internal
date and object id (``imap_items``, read in UID order by FETCH): its migration moves them
there, batch by batch, and empties ``rendered``; the index writes an entry with the message
and drops it with the message."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from mailserver.db import Database, schema
from mailserver.db.env import migrate
from mailserver.imap import response
from mailserver.message import imap_render
from mailserver.message.mime import parse
from mailserver.store import imap_items, index

ALICE = "alice@example.org"


@pytest.fixture
def db(tmp_path):
    database = Database.open(str(tmp_path / "index"), map_size=64 << 20, reactor=reactor)
    yield database
    if not database._done:
        pytest_twisted.blockon(database.close())


def _meta(subject: str) -> dict[str, object]:
    parsed = parse(f"Subject: {subject}\r\nContent-Type: text/plain\r\n\r\nbody\r\n".encode())
    return {"envelope": parsed.envelope, "bodystructure": parsed.bodystructure, "spam": None}


def _old(meta: dict[str, object]) -> dict[str, object]:
    """``meta`` as an older version parsed it: a structure without body offsets."""
    structure = meta["bodystructure"]
    assert isinstance(structure, dict)
    return {**meta, "bodystructure": {k: v for k, v in structure.items() if k != "body_offset"}}


def _folder(txn) -> dict[str, object]:
    index.create_account(txn, ALICE, "a", default_folders=False)
    return index.create_folder(txn, ALICE, "INBOX", None)


def _as_version_8(txn) -> None:
    """The index as version 8 left it: no rendered items of any kind."""
    for table in (b"rendered", b"imap_items"):
        for key, _ in list(txn.prefix(table, b"")):
            txn.delete(table, key)
    txn.put_json(b"meta", b"schema_version", 8)


def test_migration_moves_rendered_items_to_each_message(db, monkeypatch):
    """An index at version 8 with 24 messages (read 10 per batch here), two of them copies
    of one object and one of an object in an older layout, gets through versions 9 and 12:
    every message an entry with its size, internal date and object id, its items equal to
    the IMAP serialiser's for both kinds of client (none for the older layout), records()
    answering from them; ``rendered`` ends empty."""
    monkeypatch.setattr(schema, "_RENDER_BATCH", 10)
    metas = {f"M{n:03d}": _meta(f"subject {n} Grüße") for n in range(22)}
    metas["Mold"] = _old(_meta("old"))

    def setup(txn):
        record = _folder(txn)
        for n, (object_id, meta) in enumerate(metas.items()):
            index.add_message(txn, record, f"b{n}", frozenset(), 100 + n, 1e9 + n / 4,
                              object_id, meta)
        index.add_message(txn, record, "copy", frozenset({"\\Seen"}), 100, 1e9, "M000", None)
        _as_version_8(txn)
        return record["id"]

    fid = db.write_sync(setup)
    assert migrate(db.env, db.dbs) == schema.SCHEMA_VERSION
    with db.read() as txn:
        assert txn.count(b"rendered") == 0
        assert txn.count(b"imap_items") == 24
        rows = imap_items.records(txn, fid, range(1, 26), rendered=True)
        plain = imap_items.records(txn, fid, range(1, 26))
        mold = imap_items.rendered(txn, fid, 23)
    assert [row[:6] for row in rows] == [row[:6] for row in plain]
    assert [row[0] for row in rows] == list(range(1, 25))
    assert rows[-1][3:6] == (100, 1e9, "M000") and rows[-1][6] == rows[0][6]
    assert rows[22][5] == "Mold" and rows[22][6] is None and mold == {}
    for row in rows[:22]:
        meta = metas[row[5]]
        assert row[3:5] == (100 + row[0] - 1, 1e9 + (row[0] - 1) / 4)
        items = imap_render.unpack(row[6])
        for utf8 in (False, True):
            assert imap_render.item(items, "ENVELOPE", utf8) == response.envelope(
                meta["envelope"], utf8=utf8
            )
            assert imap_render.item(items, "BODYSTRUCTURE", utf8) == response.body_structure(
                meta["bodystructure"], utf8=utf8
            )


def test_migration_keeps_the_items_of_version_11(db):
    """An index at version 11 (items per object in ``rendered``, none per message) gets each
    message's items from its object's entry as they were, without rendering them again."""

    def setup(txn):
        record = _folder(txn)
        index.add_message(txn, record, "b1", frozenset(), 10, 5.0, "Mone", _meta("one"))
        _as_version_8(txn)
        txn.put(b"rendered", b"Mone", imap_render.pack({"BODY": b"(kept)"}))
        txn.put_json(b"meta", b"schema_version", 11)
        return record["id"]

    fid = db.write_sync(setup)
    assert migrate(db.env, db.dbs) == schema.SCHEMA_VERSION
    with db.read() as txn:
        assert imap_items.rendered(txn, fid, 1) == {"BODY": b"(kept)"}
        assert txn.count(b"rendered") == 0


def test_items_live_and_die_with_the_message(db):
    """add_message writes the message's entry (a copy's from the other copy's), removing a
    message removes its entry and no other."""

    def add(txn):
        record = _folder(txn)
        index.add_message(txn, record, "base1", frozenset(), 10, 0.0, "Mone", _meta("hello"))
        index.add_message(txn, record, "base2", frozenset(), 10, 0.0, "Mone", None)
        return record["id"]

    fid = db.write_sync(add)
    with db.read() as txn:
        items = imap_items.rendered(txn, fid, 1)
        assert items["ENVELOPE"] == response.envelope(_meta("hello")["envelope"])
        assert imap_items.rendered(txn, fid, 2) == items
    db.write_sync(lambda txn: index.remove_messages(txn, index.folder(txn, fid), [1]))
    with db.read() as txn:
        assert imap_items.rendered(txn, fid, 1) == {}
        assert txn.get(b"imap_items", schema.msg_key(fid, 1)) is None
        assert imap_items.rendered(txn, fid, 2) == items


def test_damaged_entry_reads_as_absent(db):
    """A damaged entry is not an error: the message reads as having nothing rendered, with
    its size, internal date and object id from its message record (FETCH then renders the
    items from the parse results)."""

    def add(txn):
        record = _folder(txn)
        for n in range(4):
            index.add_message(txn, record, f"b{n}", frozenset(), 10 + n, 7.5, f"M{n}",
                              _meta(f"s{n}"))
        fid = record["id"]
        for uid, cut in ((1, 18), (3, 5), (4, -3)):  # inside the object id, head, items
            key = schema.msg_key(fid, uid)
            txn.put(b"imap_items", key, bytes(txn.get(b"imap_items", key))[:cut])
        return fid

    fid = db.write_sync(add)
    with db.read() as txn:
        rows = imap_items.records(txn, fid, [1, 2, 3, 4], rendered=True)
        plain = imap_items.records(txn, fid, [1, 2, 3, 4])
        assert imap_items.rendered(txn, fid, 1) == {}
        assert imap_items.rendered(txn, fid, 4) == {}
    assert [row[:6] for row in rows] == [row[:6] for row in plain]
    assert [row[3:6] for row in rows] == [(10 + n, 7.5, f"M{n}") for n in range(4)]
    assert rows[0][6] is None and rows[2][6] is None and rows[1][6] is not None


def test_copy_of_a_message_without_entry_renders_from_the_parse_results(db):
    """A copy (COPY/MOVE) of a message that has no entry (a damaged index) gets its items
    rendered from the object's parse results; of one whose object is in an older layout, an
    entry without items (FETCH renders those as before)."""

    def add(txn):
        record = _folder(txn)
        index.add_message(txn, record, "b1", frozenset(), 10, 1.0, "Mnew", _meta("new"))
        index.add_message(txn, record, "b2", frozenset(), 20, 2.0, "Mold", _old(_meta("old")))
        txn.delete(b"imap_items", schema.msg_key(record["id"], 1))
        index.add_message(txn, record, "c1", frozenset(), 10, 1.0, "Mnew", None)
        index.add_message(txn, record, "c2", frozenset(), 20, 2.0, "Mold", None)
        return record["id"]

    fid = db.write_sync(add)
    with db.read() as txn:
        copied = imap_items.rendered(txn, fid, 3)
        rows = imap_items.records(txn, fid, [3, 4], rendered=True)
    assert copied["BODYSTRUCTURE"] == response.body_structure(_meta("new")["bodystructure"])
    assert [row[3:7] for row in rows] == [
        (10, 1.0, "Mnew", imap_render.pack(copied)),
        (20, 2.0, "Mold", None),
    ]
