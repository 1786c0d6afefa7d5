"""Serialised ENVELOPE, BODYSTRUCTURE and BODY values kept per message object, so a FETCH of
messages already fetched (another session, another device, a client resync) neither decodes
the objects' parse results from the index nor serialises them again. Since index schema 9 the
maildir store keeps these items rendered at delivery (:mod:`mailserver.message.imap_render`)
and FETCH sends those; this cache serves what a store keeps no rendering of (objects indexed
in an older layout, stores that keep none such as the in-memory one).

Design rules:

1. Keys are (object id, item name, UTF-8 client): a message object's bytes never change
   (RFC 8474 EMAILID names them), and these items depend on nothing else, so an entry never
   goes stale and nothing invalidates it.
2. Bounded by the bytes held (values plus a fixed overhead per entry), least recently used
   dropped first: one cache per factory (:class:`mailserver.imap.factory.IMAPFactory`),
   shared by its sessions, never a global.
"""

from __future__ import annotations

import struct
from collections import OrderedDict

__all__ = ["RenderedCache", "stored"]

_LENGTH = struct.Struct(">I")

#: Bytes counted per entry on top of its value (key tuple, dict slot, bytes header).
ENTRY_OVERHEAD = 200

Key = tuple[str, str, bool]


class RenderedCache:
    """A bounded LRU of serialised values; ``max_bytes = 0`` keeps nothing."""

    def __init__(self, max_bytes: int = 16 << 20) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[Key, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> bytes | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def clear(self) -> None:
        self._entries.clear()
        self.size = 0

    def __contains__(self, key: Key) -> bool:
        return key in self._entries

    def put(self, key: Key, value: bytes) -> None:
        weight = len(value) + ENTRY_OVERHEAD
        if weight > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.size -= len(old) + ENTRY_OVERHEAD
        self._entries[key] = value
        self.size += weight
        while self.size > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self.size -= len(dropped) + ENTRY_OVERHEAD


def stored(packed: bytes, tag: int, utf8: bool) -> bytes | None:
    """The value of the item with one-letter ``tag`` (:data:`imap_render.ITEMS`, as an int)
    in a stored form of :func:`mailserver.message.imap_render.pack`, its UTF-8 variant
    (the tag in lower case) for a ``utf8`` client when one is stored; None when the item is
    not there or the form is cut short where it was scanned (up to the item for a plain
    client, to the end for a UTF-8 one). Scans the form in place, building no mapping."""
    position, end = 0, len(packed)
    found = None
    variant = tag + 32
    while position + 5 <= end:
        kind = packed[position]
        start = position + 5
        position = start + _LENGTH.unpack_from(packed, start - 4)[0]
        if position > end:
            return None
        if kind == tag:
            found = packed[start:position]
            if not utf8:
                return found
        elif utf8 and kind == variant:
            return packed[start:position]
    return found if position == end else None  # a few octets left over: cut short
