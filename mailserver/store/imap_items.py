"""Each message's FETCH record (issue 6): its size, internal date and object id with its
IMAP ENVELOPE, BODYSTRUCTURE and BODY as sent, kept per folder and UID in ``imap_items``, so
``FETCH 1:* BODYSTRUCTURE`` reads one value per message in UID order (a cursor's pages in
sequence) instead of a look-up of the object's rendered items by object id (a jump across the
B-tree per message) beside the message record.

Plain functions of a :class:`mailserver.db.Txn`, called by :mod:`mailserver.store.index` in
the transaction that adds or removes a message; the layout is documented in
:mod:`mailserver.db.schema`. Guarantees:

1. An entry is written with its message (:func:`add`: at delivery and APPEND from the parse
   results; on COPY/MOVE from another copy's entry, else from the object's parse results)
   and deleted with it (:func:`remove`). Size, internal date and object id never change for a
   folder id + UID (neither is ever reused), so the entry can not go stale.
2. The rendered part is :func:`mailserver.message.imap_render.pack`'s form, or empty when the
   object's parse results are in an older layout (FETCH then renders them as before).
3. :func:`records` answers every present message whether or not it has an entry: a message
   without one (a damaged index) is read from its message record, with nothing rendered. The
   answers equal the message records' values: an entry is never trusted over a missing
   ``flags`` entry (the message is gone), and a damaged entry reads as absent.
4. :func:`rendered_item` answers one item of a run of messages from the entries alone, or
   None when any of them lacks it (the caller then uses :func:`records`); what it answers
   equals what :func:`records` gives, read as IMAP reads the stored form.
"""

from __future__ import annotations

import bisect
import itertools
import json
import operator
import re
import struct
from collections.abc import Iterable
from typing import Any

from mailserver.db import Txn
from mailserver.db.schema import IMAP_ITEMS_HEAD, flag_set, msg_key, u32
from mailserver.message import imap_render

__all__ = [
    "Record",
    "add",
    "entry",
    "records",
    "remove",
    "rendered",
    "rendered_item",
    "split",
]

#: One :func:`records` row: (uid, flags, modseq, size, internaldate, object_id, packed).
Record = tuple[int, frozenset[str], int, int, float, str, bytes | None]

#: An entry's head: size (u64), internal date (IEEE double), length of the object id (u8);
#: then the object id (ASCII, RFC 8474: 1-255 characters) and the packed items.
_HEAD = IMAP_ITEMS_HEAD

#: The end of a message record as :func:`mailserver.store.index.add_message` writes it
#: (``json.dumps`` of its dict, keys in that order): size, internal date (a JSON number) and
#: object id (RFC 8474 characters), cut out without decoding the record (:func:`records`).
_RECORD_TAIL = re.compile(
    rb'"size":(\d+),"internaldate":(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?),'
    rb'"savedate":[^,]*,"object_id":"([A-Za-z0-9_-]+)"\}\Z'
)
_DECODER = json.JSONDecoder()
_LENGTH = struct.Struct(">I")
#: A message key (folder id, uid) or a flags value's modseq as one big-endian integer.
_KEY_NUMBER = struct.Struct(">Q")


def entry(size: int, internaldate: float, object_id: str, packed: bytes) -> bytes:
    """The ``imap_items`` value of a message."""
    oid = object_id.encode("ascii")
    return _HEAD.pack(size, internaldate, len(oid)) + oid + packed


def split(value: bytes) -> tuple[int, float, str, bytes] | None:
    """(size, internal date, object id, packed items) of an entry; None when it is damaged
    (shorter than its head says)."""
    if len(value) < _HEAD.size:
        return None
    size, internaldate, length = _HEAD.unpack_from(value)
    end = _HEAD.size + length
    if length == 0 or len(value) < end:
        return None
    try:
        object_id = value[_HEAD.size : end].decode("ascii")
    except UnicodeDecodeError:
        return None
    return size, internaldate, object_id, value[end:]


def add(
    txn: Txn,
    fid: int,
    uid: int,
    size: int,
    internaldate: float,
    object_id: str,
    meta: dict[str, Any] | None,
) -> None:
    """Write the entry of the new message ``uid`` of folder ``fid``: its items rendered from
    ``meta`` (its parse results) when given, else (a copy) taken from another copy of the
    object, else rendered from the object's parse results."""
    key = msg_key(fid, uid)
    packed: bytes | None = None
    if meta is None:
        packed = _from_other_copy(txn, key, object_id)
        if packed is None:
            meta = txn.get_json(b"objects", object_id.encode()) or {}
    if packed is None:
        items = imap_render.render(meta or {})
        packed = b"" if items is None else imap_render.pack(items)
    txn.put(b"imap_items", key, entry(size, internaldate, object_id, packed))


def _from_other_copy(txn: Txn, key: bytes, object_id: str) -> bytes | None:
    """The packed items of another message holding ``object_id`` that has an entry."""
    raw, db = txn.raw, txn.dbs[b"imap_items"]
    for label, _ in txn.prefix(b"labels", object_id.encode("ascii") + b"\0"):
        other = bytes(label[-8:])
        if other == key:
            continue
        value = raw.get(other, db=db)
        parts = None if value is None else split(bytes(value))
        if parts is not None and parts[2] == object_id:
            return parts[3]
    return None


def remove(txn: Txn, fid: int, uid: int) -> None:
    """Forget the entry of the removed message ``uid`` of folder ``fid``."""
    txn.delete(b"imap_items", msg_key(fid, uid))


def rendered(txn: Txn, fid: int, uid: int) -> dict[str, bytes]:
    """The message's IMAP items as rendered at delivery (:func:`imap_render.unpack`); empty
    when none are kept (no entry, an older layout, a damaged value)."""
    value = txn.raw.get(msg_key(fid, uid), db=txn.dbs[b"imap_items"])
    parts = None if value is None else split(bytes(value))
    if not parts or not parts[3]:
        return {}
    try:
        return imap_render.unpack(parts[3])
    except ValueError:
        return {}


def records(txn: Txn, fid: int, uids: Iterable[int], rendered: bool = False) -> list[Record]:
    """(uid, flags, modseq, size, internaldate, object_id, packed rendered items or None)
    of each of ``uids`` present in the folder, in the order given (IMailboxRecords.records). Reads
    each sub-db with one cursor (``getmulti``: ascending keys stay on a page LMDB already
    holds), values as ``bytes`` or buffers alike.

    With ``rendered``, size, internal date, object id and the items come from ``imap_items``;
    otherwise (and for a message without an entry) from the message record, cut out of its
    text as :func:`~mailserver.store.index.add_message` writes it (:data:`_RECORD_TAIL`), a
    record in any other layout decoded whole."""
    prefix = u32(fid)
    wanted = list(uids)
    keys = [prefix + uid.to_bytes(4, "big") for uid in wanted]
    flags = _read(txn, b"flags", keys)
    if not flags:
        return []
    out: list[Record] = []
    missing: list[tuple[Any, Any]] = flags
    if rendered:
        items = _read(txn, b"imap_items", keys)
        if len(items) == len(flags) == len(keys):  # every message has an entry
            aligned = _aligned(wanted, flags, items)
            if aligned is not None:
                return aligned
        get = dict(items).get
        unpack, head = _HEAD.unpack_from, _HEAD.size
        missing = []
        for key, value in flags:
            found = get(key)
            if found is not None:
                try:
                    size, internaldate, length = unpack(found)
                    end = head + length
                    object_id = found[head:end].decode("ascii")
                except (struct.error, ValueError):  # cut short: as if absent
                    pass
                else:
                    if length and len(found) >= end:
                        out.append(_row(key, value, size, internaldate, object_id, found[end:]))
                        continue
            missing.append((key, value))
        if not missing:
            return out
    found_records = dict(_read(txn, b"messages", [k for k, _ in missing]))
    cut = _RECORD_TAIL.search
    decode = _DECODER.raw_decode
    for key, value in missing:
        record = found_records.get(key)
        if record is None:
            continue
        text = bytes(record)
        tail = cut(text)
        if tail is not None:
            size, internaldate, object_id = int(tail[1]), float(tail[2]), tail[3].decode()
        else:
            fields = decode(text.decode())[0]
            size, internaldate = fields["size"], fields["internaldate"]
            object_id = fields["object_id"]
        out.append(_row(key, value, size, internaldate, object_id, None))
    if len(out) > len(missing):  # some from entries, some not: back in the order given
        order = {uid: n for n, uid in enumerate(wanted)}
        out.sort(key=lambda row: order[row[0]])
    return out


def _row(
    key: bytes, flags: bytes, size: int, internaldate: float, object_id: str, packed: bytes | None
) -> Record:
    """One row of :func:`records` from a ``flags`` entry (key and value) and the message's
    index fields; ``packed`` None when empty."""
    return (
        int.from_bytes(key[4:], "big"),
        flag_set(flags[8:]),
        int.from_bytes(flags[:8], "big"),
        size,
        internaldate,
        object_id,
        packed or None,
    )


def _aligned(
    uids: list[int], flags: list[tuple[bytes, bytes]], items: list[tuple[bytes, bytes]]
) -> list[Record] | None:
    """:func:`records`' rows when ``flags`` and ``items`` hold the entries of ``uids``, each
    in that order; None when an entry is damaged (then each message is looked at alone)."""
    from_bytes, unpack, head = int.from_bytes, _HEAD.unpack_from, _HEAD.size
    out: list[Record] = []
    append = out.append
    try:
        for uid, (_, value), (_, found) in zip(uids, flags, items, strict=True):
            size, internaldate, length = unpack(found)
            end = head + length
            if not length or len(found) < end:
                return None
            append(
                (
                    uid,
                    flag_set(value[8:]),
                    from_bytes(value[:8], "big"),
                    size,
                    internaldate,
                    found[head:end].decode("ascii"),
                    found[end:] or None,
                )
            )
    except (struct.error, ValueError):  # cut short, not ASCII: as if absent
        return None
    return out


#: A run of keys is walked with one cursor (:func:`_read`) when the keys between its first and
#: last are at most this many times as many as the run itself.
_DENSE = 2


def _read(txn: Txn, table: bytes, keys: list[bytes]) -> list[tuple[bytes, bytes]]:
    """(key, value) of each of ``keys`` (message keys of one folder) present in ``table``, as
    ``bytes``, ascending when ``keys`` are. An ascending, dense run (``FETCH 1:*``: at most
    :data:`_DENSE` times as many keys between its ends as asked for) is one cursor walk
    from the first key (``set_range``, then the next entries in order: each page of the
    B-tree read once), cut at the last key and filtered to ``keys``; other runs get one
    descent per key (``getmulti``)."""
    if not keys:
        return []
    cursor = txn.raw.cursor(db=txn.dbs[table])
    first, last = keys[0], keys[-1]
    span = int.from_bytes(last[4:], "big") - int.from_bytes(first[4:], "big") + 1
    if 0 < span <= _DENSE * len(keys) and keys == sorted(keys):
        if not cursor.set_range(first):
            return []
        rows: list[tuple[Any, Any]] = list(itertools.islice(cursor.iternext(), span))
        if rows and type(rows[0][1]) is not bytes:  # a transaction reading buffers
            rows = [(bytes(key), bytes(value)) for key, value in rows]
        del rows[bisect.bisect_right(rows, last, key=_KEY) :]
        if len(rows) != len(keys) or list(map(_KEY, rows)) != keys:
            chosen = set(keys)
            rows = [row for row in rows if row[0] in chosen]
        return rows
    found: list[tuple[Any, Any]] = cursor.getmulti(keys)
    if found and type(found[0][1]) is not bytes:
        found = [(bytes(key), bytes(value)) for key, value in found]
    return found


_KEY = operator.itemgetter(0)


def rendered_item(
    txn: Txn, fid: int, uids: Iterable[int], tag: int, utf8: bool
) -> list[tuple[int, int, int, bytes]] | None:
    """(uid, modseq, size, item) of each of ``uids`` (ascending) present in the folder, in
    that order (IRenderedItems.rendered_item): the item with one-letter ``tag``
    (:data:`imap_render.ITEMS`, as an int), its UTF-8 variant (the tag in lower case) for a
    ``utf8`` client when one is kept; None when a present message has no entry or its entry
    lacks the item or is damaged (the caller then reads :func:`records`).

    ``flags`` says which messages exist; an ascending, dense run is walked with one cursor
    per sub-db in step (each B-tree page read once), and only the item's octets are copied
    out of each entry, inside the transaction. Equals :func:`records` followed by
    :func:`mailserver.imap.rendered.stored` of the packed items, octet for octet."""
    wanted = list(uids)
    if not wanted:
        return []
    prefix = u32(fid)
    first, last = wanted[0], wanted[-1]
    span = last - first + 1
    if not 0 < span <= _DENSE * len(wanted) or wanted != sorted(wanted):
        return None  # a sparse or unordered run: records() descends per key
    raw = txn.raw
    flag_cursor = raw.cursor(db=txn.dbs[b"flags"])
    item_cursor = raw.cursor(db=txn.dbs[b"imap_items"])
    start = prefix + first.to_bytes(4, "big")
    if not flag_cursor.set_range(start):
        return []
    if not item_cursor.set_range(start):
        return None
    chosen = None if span == len(wanted) else set(wanted)
    items = item_cursor.iternext()
    # Keys compared as integers (folder id << 32 | uid), read from bytes and buffers alike.
    number, unpack, head = _KEY_NUMBER.unpack_from, _HEAD.unpack_from, _HEAD.size
    length_at = _LENGTH.unpack_from
    end_number = (fid << 32) | last
    variant = tag + 32
    out: list[tuple[int, int, int, bytes]] = []
    append = out.append
    try:
        for key, value in itertools.islice(flag_cursor.iternext(), span):
            (at,) = number(key)
            if at > end_number:
                break
            uid = at & 0xFFFFFFFF
            if chosen is not None and uid not in chosen:
                continue
            item_key, entry_value = next(items)
            while number(item_key)[0] < at:  # an entry without a flags entry: never used
                item_key, entry_value = next(items)
            if number(item_key)[0] != at:
                return None  # no entry for this message
            size, _, id_length = unpack(entry_value)
            position = head + id_length
            end = len(entry_value)
            if not id_length or position > end:
                return None
            found = None
            while position + 5 <= end:
                kind = entry_value[position]
                item_start = position + 5
                position = item_start + length_at(entry_value, position + 1)[0]
                if position > end:
                    return None
                if kind == tag:
                    found = entry_value[item_start:position]
                    if not utf8:
                        break
                elif utf8 and kind == variant:
                    found = entry_value[item_start:position]
                    break
            else:
                if position != end:  # a few octets left over: cut short
                    return None
            if found is None:
                return None
            append((uid, number(value)[0], size, bytes(found)))
    except (StopIteration, struct.error):  # entries end early, or one is cut short
        return None
    return out
