"""FETCH of index items only (mailserver/imap/commands/fetch_index.py): its INTERNALDATE and
stored-item reading equal the general ones, and a group mixing messages with and without
stored rendered items is answered in sequence order, byte for byte as the general path."""

from __future__ import annotations

import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st

from mailserver.db.schema import msg_key
from mailserver.imap import response
from mailserver.imap.commands.fetch_index import date_time
from mailserver.imap.rendered import stored
from mailserver.message import imap_render
from mailserver.store import imap_items
from mailserver.types import FlagMode
from tests.imap.conftest import in_thread, message
from tests.imap.test_server_fetch import MULTIPART


@given(st.floats(min_value=-2e9, max_value=4e9, allow_nan=False))
def test_internaldate_equals_the_general_rendering(value):
    """For any timestamp (fractions and dates before 1970 included) the memoised INTERNALDATE
    is response.date_time's."""
    assert date_time(value) == response.date_time(value)


@given(
    st.dictionaries(
        st.sampled_from(["ENVELOPE", "BODYSTRUCTURE", "BODY"]), st.binary(max_size=40)
    ),
    st.dictionaries(
        st.sampled_from(["ENVELOPE/utf8", "BODYSTRUCTURE/utf8", "BODY/utf8"]),
        st.binary(max_size=40),
    ),
    st.booleans(),
)
def test_stored_item_equals_the_unpacked_one(plain, variants, utf8):
    """stored() reads from the packed form what imap_render.item() picks from its unpacked
    mapping, for plain and UTF-8 clients, with or without UTF-8 variants."""
    packed = imap_render.pack({**plain, **variants})
    items = imap_render.unpack(packed)
    for name, tag in imap_render.ITEMS.items():
        assert stored(packed, tag[0], utf8) == imap_render.item(items, name, utf8)
    if packed:
        assert stored(packed[:-1], ord("S"), utf8) in (
            None,
            imap_render.item(items, "BODYSTRUCTURE", utf8),
        )


def _fetch(server, command: str) -> list[bytes]:
    client = server.raw()
    client.login()
    client.command("S", "SELECT INBOX")
    client.send(f"F {command}\r\n")
    lines = client.until_bytes("F")
    client.close()
    assert lines[-1].startswith(b"F OK")
    return lines[:-1]


@pytest_twisted.ensureDeferred
async def test_group_with_an_unrendered_message_is_answered_in_order(maildir_imap):
    """When a message of a group has no stored rendered items (an object indexed before
    schema 9, or a damaged index without the message's entry), the group is answered by the
    general path: every message once, in sequence order, each FETCH as before the stored
    items went; the flags line answers alike."""
    for n in range(5):
        await maildir_imap.deliver(MULTIPART if n % 2 else message(f"Subject {n}"))
    command = "FETCH 1:* (UID FLAGS BODYSTRUCTURE ENVELOPE RFC822.SIZE INTERNALDATE EMAILID)"
    before = await in_thread(_fetch, maildir_imap, command)
    flags_before = await in_thread(_fetch, maildir_imap, "FETCH 1:* (FLAGS UID RFC822.SIZE)")
    inbox = maildir_imap.store.account("alice@example.org").folder("INBOX")
    third = next(iter(inbox.messages([3], meta=False))).info.object_id

    def forget(txn):  # the entry of an object in an older layout: no items
        key = msg_key(inbox.folder_id, 3)
        parts = imap_items.split(bytes(txn.get(b"imap_items", key)))
        txn.put(b"imap_items", key, imap_items.entry(*parts[:3], b""))
        txn.delete(b"imap_items", msg_key(inbox.folder_id, 4))  # and one with no entry at all

    await maildir_imap.store.db.write(forget)
    after = await in_thread(_fetch, maildir_imap, command)
    assert after == before
    assert [line.split(b" ", 2)[1] for line in after] == [b"1", b"2", b"3", b"4", b"5"]
    assert b"EMAILID (" + third.encode() + b")" in after[2]
    assert await in_thread(_fetch, maildir_imap, "FETCH 1:* (FLAGS UID RFC822.SIZE)") == (
        flags_before
    )


@pytest_twisted.ensureDeferred
async def test_one_rendered_item_read_alone_answers_as_the_records(maildir_imap):
    """FETCH of one rendered item beside UID, RFC822.SIZE and MODSEQ, read straight from the
    index (IRenderedItems), answers byte for byte as the records path does once that path is
    the only one (a message without its entry sends the whole group there): every message
    once, in sequence order, an expunged message skipped; for a UTF-8 client too."""
    for n in range(6):
        await maildir_imap.deliver(MULTIPART if n % 2 else message(f"Subject {n}"))
    inbox = maildir_imap.store.account("alice@example.org").folder("INBOX")
    await inbox.store_flags([2], ["\\Deleted"], FlagMode.ADD)
    await inbox.expunge()
    commands = [
        "FETCH 1:* BODYSTRUCTURE",
        "UID FETCH 1:* (ENVELOPE RFC822.SIZE)",
        "FETCH 2:4 (BODY UID MODSEQ)",
        "FETCH 1,3,5 (UID BODYSTRUCTURE)",
    ]
    before = [await in_thread(_fetch, maildir_imap, command) for command in commands]
    assert [len(lines) for lines in before] == [5, 5, 3, 3]
    utf8_before = await in_thread(_fetch_utf8, maildir_imap, "FETCH 1:* ENVELOPE")

    def forget(txn):  # no entry for message 6: each group goes to records()
        txn.delete(b"imap_items", msg_key(inbox.folder_id, 6))

    await maildir_imap.store.db.write(forget)
    after = [await in_thread(_fetch, maildir_imap, command) for command in commands]
    assert after == before
    assert await in_thread(_fetch_utf8, maildir_imap, "FETCH 1:* ENVELOPE") == utf8_before


def _fetch_utf8(server, command: str) -> list[bytes]:
    client = server.raw()
    client.login()
    client.command("E", "ENABLE UTF8=ACCEPT")
    client.command("S", "SELECT INBOX")
    client.send(f"F {command}\r\n")
    lines = client.until_bytes("F")
    client.close()
    assert lines[-1].startswith(b"F OK")
    return lines[:-1]
