"""The serialised ENVELOPE/BODYSTRUCTURE cache: bounded, least recently used dropped first,
and a FETCH answered from it says exactly what one rendered afresh says."""

from __future__ import annotations

import pytest_twisted

from mailserver.imap.rendered import ENTRY_OVERHEAD, RenderedCache
from mailserver.store import imap_items
from tests.imap.conftest import in_thread, message
from tests.imap.test_server_fetch import MULTIPART


def test_cache_is_bounded_and_drops_the_least_recently_used():
    """Entries are counted with their overhead; the oldest unused one goes first, a value
    bigger than the whole cache is not kept."""
    cache = RenderedCache(max_bytes=3 * (10 + ENTRY_OVERHEAD))
    for name in "abc":
        cache.put((name, "ENVELOPE", False), b"x" * 10)
    assert cache.get(("a", "ENVELOPE", False)) == b"x" * 10  # a is now the newest
    cache.put(("d", "ENVELOPE", False), b"y" * 10)
    assert ("b", "ENVELOPE", False) not in cache
    assert ("a", "ENVELOPE", False) in cache and ("c", "ENVELOPE", False) in cache
    assert cache.size == 3 * (10 + ENTRY_OVERHEAD) and len(cache) == 3
    cache.put(("e", "BODY", True), b"z" * cache.max_bytes)
    assert ("e", "BODY", True) not in cache and len(cache) == 3
    cache.put(("a", "ENVELOPE", False), b"w" * 20)  # replacing counts the new size only
    assert cache.size <= cache.max_bytes and cache.get(("a", "ENVELOPE", False)) == b"w" * 20


def _fetch(server, utf8: bool) -> list[bytes]:
    client = server.raw()
    client.login()
    if utf8:
        client.command("E", "ENABLE UTF8=ACCEPT")
    client.command("S", "SELECT INBOX")
    client.send("F FETCH 1:* (ENVELOPE BODYSTRUCTURE BODY UID)\r\n")
    lines = client.until_bytes("F")
    client.close()
    assert lines[-1].startswith(b"F OK")
    return lines[:-1]


@pytest_twisted.ensureDeferred
async def test_fetch_from_the_cache_equals_a_fresh_rendering(memory_imap):
    """Over a store that keeps no rendered items: the second FETCH of ENVELOPE,
    BODYSTRUCTURE and BODY (served from the cache) is byte for byte the first; a UTF-8
    client gets its own rendering (8-bit subject quoted, not encoded words), cached apart."""
    await memory_imap.deliver(MULTIPART)
    await memory_imap.deliver(message("Grüße", body="Hallo\r\n"))
    cache = memory_imap.factory.rendered
    first = await in_thread(_fetch, memory_imap, False)
    assert len(cache) == 6  # two messages x three items
    second = await in_thread(_fetch, memory_imap, False)
    assert second == first and len(cache) == 6
    assert b"=?utf-8?" in first[1]
    utf8 = await in_thread(_fetch, memory_imap, True)
    assert len(cache) == 12
    assert "Grüße".encode() in utf8[1] and b"=?utf-8?" not in utf8[1]
    cache.clear()  # a fresh rendering again
    assert await in_thread(_fetch, memory_imap, False) == first


@pytest_twisted.ensureDeferred
async def test_fetch_of_items_rendered_at_delivery_equals_a_fresh_rendering(maildir_imap):
    """The maildir store keeps each message's items rendered at delivery: FETCH sends them
    and leaves the cache empty, and the answer is byte for byte the one rendered afresh from
    the parse results once the stored items are gone (objects indexed before version 9)."""
    await maildir_imap.deliver(MULTIPART)
    await maildir_imap.deliver(message("Grüße", body="Hallo\r\n"))
    cache = maildir_imap.factory.rendered
    stored = await in_thread(_fetch, maildir_imap, False)
    stored_utf8 = await in_thread(_fetch, maildir_imap, True)
    assert len(cache) == 0
    assert b"=?utf-8?" in stored[1] and "Grüße".encode() in stored_utf8[1]

    def forget(txn):  # every entry as an object in an older layout has it: no items
        for key, value in list(txn.prefix(b"imap_items", b"")):
            txn.put(b"imap_items", key, imap_items.entry(*imap_items.split(value)[:3], b""))

    await maildir_imap.store.db.write(forget)
    assert await in_thread(_fetch, maildir_imap, False) == stored
    assert await in_thread(_fetch, maildir_imap, True) == stored_utf8
    assert len(cache) == 12  # rendered afresh, and cached
