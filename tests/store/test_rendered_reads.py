"""IMailbox.messages(meta="rendered") on the maildir store: the IMAP items rendered at
delivery, without the parse results; a message with nothing rendered (its object indexed
before schema 9) comes with its parse results instead, so a FETCH can render it."""

from __future__ import annotations

import io

import pytest_twisted

from mailserver.db.schema import msg_key
from mailserver.imap import response
from mailserver.message import imap_render
from mailserver.store import imap_items

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
