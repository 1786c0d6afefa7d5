"""Schema version 9: the ``rendered`` sub-db holds each object's IMAP items as sent; the
migration from 8 fills it for the objects in the current layout, batch by batch, and the
index keeps it with the object (written at delivery, dropped with the last copy)."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from mailserver.db import Database, schema
from mailserver.db.env import migrate
from mailserver.imap import response
from mailserver.message import imap_render
from mailserver.message.mime import parse
from mailserver.store import index


@pytest.fixture
def db(tmp_path):
    database = Database.open(str(tmp_path / "index"), map_size=64 << 20, reactor=reactor)
    yield database
    if not database._done:
        pytest_twisted.blockon(database.close())


def _meta(subject: str) -> dict[str, object]:
    parsed = parse(f"Subject: {subject}\r\nContent-Type: text/plain\r\n\r\nbody\r\n".encode())
    return {"envelope": parsed.envelope, "bodystructure": parsed.bodystructure, "spam": None}


def test_migration_fills_rendered_for_current_objects_only(db, monkeypatch):
    """An index at version 8 with 25 objects (read 10 per batch here) gets the rendered items
    of the 24 in the current layout, equal to the IMAP serialiser's; the one whose structure
    has no body offsets (an older layout) is left out; the version becomes 9 (and then the
    current one, through the later migrations)."""
    monkeypatch.setattr(schema, "_RENDER_BATCH", 10)
    current = {f"M{n:03d}": _meta(f"subject {n} Grüße") for n in range(24)}
    old = _meta("old")
    old["bodystructure"] = {k: v for k, v in old["bodystructure"].items() if k != "body_offset"}

    def setup(txn):
        for key, meta in [*current.items(), ("Mold", old)]:
            txn.put_json(b"objects", key.encode(), meta)
        for key, _ in list(txn.prefix(b"rendered", b"")):
            txn.delete(b"rendered", key)
        txn.put_json(b"meta", b"schema_version", 8)

    db.write_sync(setup)
    assert migrate(db.env, db.dbs) == schema.SCHEMA_VERSION  # 9, then the later ones
    with db.read() as txn:
        assert index.object_rendered(txn, "Mold") == {}
        for key, meta in current.items():
            items = index.object_rendered(txn, key)
            for utf8 in (False, True):
                assert imap_render.item(items, "ENVELOPE", utf8) == response.envelope(
                    meta["envelope"], utf8=utf8
                )
                assert imap_render.item(items, "BODYSTRUCTURE", utf8) == response.body_structure(
                    meta["bodystructure"], utf8=utf8
                )


def test_rendered_items_live_and_die_with_the_object(db):
    """add_message stores the object's rendered items beside its parse results; removing
    the last copy of the object removes them too."""

    def add(txn):
        index.create_account(txn, "a@example.org", "a", default_folders=False)
        record = index.create_folder(txn, "a@example.org", "INBOX", None)
        index.add_message(txn, record, "base1", frozenset(), 10, 0.0, "Mone", _meta("hello"))
        return record["id"]

    fid = db.write_sync(add)
    with db.read() as txn:
        items = index.object_rendered(txn, "Mone")
        assert items["ENVELOPE"] == response.envelope(_meta("hello")["envelope"])
    db.write_sync(lambda txn: index.remove_messages(txn, index.folder(txn, fid), [1]))
    with db.read() as txn:
        assert index.object_rendered(txn, "Mone") == {}
        assert txn.get(b"rendered", b"Mone") is None


def test_damaged_rendered_value_reads_as_absent(db):
    """A damaged stored value is not an error: the object reads as having nothing rendered
    (FETCH then renders it from the parse results)."""
    db.write_sync(lambda txn: txn.put(b"rendered", b"Mbad", b"E\x00\x00\x00\x09ab"))
    with db.read() as txn:
        assert index.object_rendered(txn, "Mbad") == {}
