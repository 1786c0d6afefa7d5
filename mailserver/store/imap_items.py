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
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable
from typing import Any

from mailserver.db import Txn
from mailserver.db.schema import IMAP_ITEMS_HEAD, flag_set, msg_key, u32
from mailserver.message import imap_render

__all__ = ["Record", "add", "entry", "records", "remove", "rendered", "split"]

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
    of each of ``uids`` present in the folder, in the order given (IMailbox.records). Reads
    each sub-db with one cursor (``getmulti``: ascending keys stay on a page LMDB already
    holds), values as ``bytes`` or buffers alike.

    With ``rendered``, size, internal date, object id and the items come from ``imap_items``;
    otherwise (and for a message without an entry) from the message record, cut out of its
    text as :func:`~mailserver.store.index.add_message` writes it (:data:`_RECORD_TAIL`), a
    record in any other layout decoded whole."""
    raw = txn.raw
    prefix = u32(fid)
    wanted = list(uids)
    keys = [prefix + uid.to_bytes(4, "big") for uid in wanted]
    flags = raw.cursor(db=txn.dbs[b"flags"]).getmulti(keys)
    if not flags:
        return []
    from_bytes = int.from_bytes
    out: list[Record] = []
    missing: list[tuple[Any, Any]] = flags
    if rendered:
        if flags and type(flags[0][1]) is not bytes:  # a transaction reading buffers
            flags = [(bytes(key), bytes(value)) for key, value in flags]
        items = raw.cursor(db=txn.dbs[b"imap_items"]).getmulti(keys)
        if items and type(items[0][1]) is not bytes:
            items = [(bytes(key), bytes(value)) for key, value in items]
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
                        out.append(
                            (
                                from_bytes(key[4:], "big"),
                                flag_set(value[8:]),
                                from_bytes(value[:8], "big"),
                                size,
                                internaldate,
                                object_id,
                                found[end:] or None,
                            )
                        )
                        continue
            missing.append((key, value))
        if not missing:
            return out
    found_records = dict(raw.cursor(db=txn.dbs[b"messages"]).getmulti([k for k, _ in missing]))
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
        out.append(
            (
                from_bytes(key[4:], "big"),
                flag_set(bytes(value[8:])),
                from_bytes(value[:8], "big"),
                size,
                internaldate,
                object_id,
                None,
            )
        )
    if len(out) > len(missing):  # some from entries, some not: back in the order given
        order = {uid: n for n, uid in enumerate(wanted)}
        out.sort(key=lambda row: order[row[0]])
    return out
