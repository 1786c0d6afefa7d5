"""IMailbox.messages(meta="rendered") on the maildir store: the IMAP items rendered at
delivery, without the parse results; a message with nothing rendered (its object indexed
before schema 9) comes with its parse results instead, so a FETCH can render it."""

from __future__ import annotations

import io

import pytest_twisted

from mailserver.db import Txn
from mailserver.db.schema import msg_key
from mailserver.imap import response
from mailserver.imap.rendered import stored
from mailserver.interfaces.rendered_items import IRenderedItems
from mailserver.message import imap_render
from mailserver.store import imap_items
from mailserver.types import FlagMode

ALICE = "alice@example.org"
MESSAGE = "From: Bób <bob@example.net>\r\nSubject: Grüße\r\n\r\nbody\r\n".encode()


@pytest_twisted.ensureDeferred
async def test_rendered_read_gives_the_stored_items_else_the_parse_results(storage):
    """Flags, size and UID as always; ENVELOPE and BODY as the IMAP serialiser renders them
    for both kinds of client, with no parse results decoded; once an object's rendered items
    are gone, its parse results (with offsets) instead; meta=True never reads them."""
    store = storage.store
    await store.create_account(ALICE)
    inbox = store.account(ALICE).folder("INBOX")
    first = await inbox.append(io.BytesIO(MESSAGE), ["\\Seen"])
    second = await inbox.append(io.BytesIO(MESSAGE))
    full = inbox.message(first).info
    lean, other = inbox.messages([first, second], meta="rendered")
    assert lean.info.envelope == {} and lean.info.bodystructure == {}
    assert (lean.info.uid, lean.info.flags, lean.info.size) == (first, {"\\Seen"}, full.size)
    for utf8 in (False, True):
        rendered = lean.info.rendered
        assert imap_render.item(rendered, "ENVELOPE", utf8) == response.envelope(
            full.envelope, utf8=utf8
        )
        assert imap_render.item(rendered, "BODY", utf8) == response.body_structure(
            full.bodystructure, extended=False, utf8=utf8
        )
    key = msg_key(inbox.folder_id, second)

    def forget(txn):  # the entry of an object in an older layout: no items
        parts = imap_items.split(bytes(txn.get(b"imap_items", key)))
        txn.put(b"imap_items", key, imap_items.entry(*parts[:3], b""))

    await store.db.write(forget)
    [unrendered] = inbox.messages([second], meta="rendered")
    assert unrendered.info.rendered == {}
    assert unrendered.info.envelope["subject"] == "Grüße"
    assert "body_offset" in unrendered.info.bodystructure
    [plain] = inbox.messages([first], meta=True)
    assert plain.info.rendered == {}  # asked for the parse results only


def _from_records(inbox, uids, tag, utf8):
    """rendered_item's rows as records() and the IMAP stored-form reader give them."""
    return [
        (uid, modseq, size, stored(packed, tag, utf8))
        for uid, _, modseq, size, _, _, packed in inbox.records(uids, rendered=True)
    ]


@pytest_twisted.ensureDeferred
async def test_rendered_item_equals_the_records_stored_item(storage):
    """IRenderedItems.rendered_item gives (uid, modseq, size, item) for each present UID of
    an ascending run, the item as records() keeps it stored (the UTF-8 variant for a UTF-8
    client), for every item and both kinds of client, gaps in the run skipped; a sparse run
    gets None (the caller reads records())."""
    store = storage.store
    await store.create_account(ALICE)
    inbox = store.account(ALICE).folder("INBOX")
    assert IRenderedItems.providedBy(inbox)
    uids = [await inbox.append(io.BytesIO(MESSAGE), ["\\Seen"] if n % 2 else []) for n in range(6)]
    await inbox.store_flags([uids[1]], ["\\Flagged"], FlagMode.ADD)  # a later modseq
    gone = msg_key(inbox.folder_id, uids[2])
    await store.db.write(lambda txn: txn.delete(b"flags", gone))  # its entry alone: not used
    for name, tag in imap_render.ITEMS.items():
        for utf8 in (False, True):
            rows = inbox.rendered_item(uids, tag[0], utf8)
            assert rows == _from_records(inbox, uids, tag[0], utf8)
            assert [row[0] for row in rows] == uids[:2] + uids[3:]
            assert all(row[3] for row in rows), name
    [first] = inbox.rendered_item([uids[0]], imap_render.ITEMS["ENVELOPE"][0], True)
    assert "Grüße".encode() in first[3]  # the UTF-8 variant
    assert inbox.rendered_item([uids[0], uids[5]], imap_render.ITEMS["BODY"][0], False) is None
    assert inbox.rendered_item([], imap_render.ITEMS["BODY"][0], False) == []


@pytest_twisted.ensureDeferred
async def test_rendered_item_is_none_when_an_entry_is_missing_short_or_without_items(storage):
    """A run with a message whose imap_items entry is absent, cut short before the item (or
    anywhere, for a UTF-8 client), or holds no rendered items (an older layout) gets None,
    so FETCH reads records() and renders those; a transaction reading buffers gives the same
    rows as one reading bytes."""
    store = storage.store
    await store.create_account(ALICE)
    inbox = store.account(ALICE).folder("INBOX")
    uids = [await inbox.append(io.BytesIO(MESSAGE)) for _ in range(3)]
    tag = imap_render.ITEMS["BODYSTRUCTURE"][0]
    rows = inbox.rendered_item(uids, tag, False)
    with store.db.env.begin(buffers=True) as raw:
        txn = Txn(raw, store.db.dbs)
        assert imap_items.rendered_item(txn, inbox.folder_id, uids, tag, False) == rows
    key = msg_key(inbox.folder_id, uids[1])
    with store.db.env.begin() as raw:
        value = bytes(raw.get(key, db=store.db.dbs[b"imap_items"]))
    parts = imap_items.split(value)
    cut = value[:-3]  # the last item cut short: read up to the item, as stored() does
    await store.db.write(lambda txn: txn.put(b"imap_items", key, cut))
    assert inbox.rendered_item(uids, tag, False) == _from_records(inbox, uids, tag, False)
    assert inbox.rendered_item(uids, tag, True) is None  # scanned to the end for a variant
    for damaged in (None, value[:20], imap_items.entry(*parts[:3], b"")):

        def put(txn, damaged=damaged):
            if damaged is None:
                txn.delete(b"imap_items", key)
            else:
                txn.put(b"imap_items", key, damaged)

        await store.db.write(put)
        assert inbox.rendered_item(uids, tag, False) is None
        assert inbox.rendered_item(uids[:1], tag, False) == rows[:1]
