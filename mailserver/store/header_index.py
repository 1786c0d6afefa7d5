"""The header index (issue 6): each message's header block and its SEARCH texts, kept per
folder and UID, so FETCH of header items and SEARCH SUBJECT/FROM/TO/CC/BCC read one LMDB
value per message (or walk one key range) instead of the message file or its parse results.

Plain functions of a :class:`mailserver.db.Txn`, called by :mod:`mailserver.store.index`
in the transaction that adds or removes a message; the layouts (``headers``,
``header_text``) are documented in :mod:`mailserver.db.schema`.

- ``header_text`` holds, for every message, :func:`mailserver.message.search_text.field_text`
  of its envelope for each field of :data:`~mailserver.message.search_text.FIELDS`, so
  :func:`search_field` is one cursor walk over ``(folder, field)`` with a byte substring test
  per message. Schema version 10 filled it for the messages already indexed; a folder where
  any message lacks its text (counted against the folder's ``exists``) gets None, and the
  server searches the parse results as before.
- ``headers`` holds a message's header block when it was known exactly at delivery and is at
  most :data:`HEADER_LIMIT` octets; otherwise (a message indexed before version 10, a huge
  header section) the block is read from the file as before. A copy (COPY, MOVE) takes the
  block and texts of the object it labels.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from mailserver.db import Txn
from mailserver.db.schema import header_text_key, msg_key, u32
from mailserver.message import body_text, search_text

__all__ = [
    "HEADER_LIMIT",
    "add",
    "exact_header",
    "header_blocks",
    "remove",
    "search_field",
    "text_parts",
]

#: Header blocks longer than this stay in the file only (bounds the index per message).
HEADER_LIMIT = 64 * 1024


def exact_header(meta: Mapping[str, object]) -> bytes | None:
    """The header block delivered in ``meta["header"]`` when it is exactly the file's: no
    longer than :data:`HEADER_LIMIT` and ending where the parsed structure says the body
    starts (a bounded parse of a huge message may have shortened it)."""
    header = meta.get("header")
    structure = meta.get("bodystructure")
    if not isinstance(header, bytes) or len(header) > HEADER_LIMIT:
        return None
    if not isinstance(structure, Mapping) or structure.get("body_offset") != len(header):
        return None
    return header


def add(txn: Txn, fid: int, uid: int, object_id: str, meta: Mapping[str, object] | None) -> None:
    """Index the new message ``uid`` of folder ``fid``: from ``meta`` (its parse results and
    ``header``) when given, else (a copy) from the object's record and another label."""
    key = msg_key(fid, uid)
    header: bytes | None = None
    leaves: bytes | None = None
    if meta is not None:
        envelope = meta.get("envelope")
        header = exact_header(meta)
        leaves = body_text.stored_form(meta.get("bodystructure"))
    else:
        record = txn.get_json(b"objects", object_id.encode()) or {}
        envelope = record.get("envelope")
        for label, _ in txn.prefix(b"labels", object_id.encode("ascii") + b"\0"):
            other = bytes(label[-8:])
            if other != key:
                found = txn.get(b"headers", other)
                header = None if found is None else bytes(found)
                found = txn.get(b"text_parts", other)
                leaves = None if found is None else bytes(found)
                break
    for tag, text in search_text.texts(envelope if isinstance(envelope, Mapping) else {}).items():
        txn.put(b"header_text", header_text_key(fid, tag, uid), text)
    if header is not None:
        txn.put(b"headers", key, header)
    if leaves is not None:
        txn.put(b"text_parts", key, leaves)


def remove(txn: Txn, fid: int, uid: int) -> None:
    """Forget the removed message ``uid`` of folder ``fid``."""
    txn.delete(b"headers", msg_key(fid, uid))
    txn.delete(b"text_parts", msg_key(fid, uid))
    for tag in search_text.FIELDS.values():
        txn.delete(b"header_text", header_text_key(fid, tag, uid))


def header_blocks(txn: Txn, fid: int, uids: list[int]) -> Iterator[tuple[int, bytes]]:
    """(uid, header block) of each of ``uids`` (ascending) whose block is kept, in that order:
    one cursor walk over their range when they fill a quarter of it, else a look-up each."""
    if not uids:
        return
    raw, db = txn.raw, txn.dbs[b"headers"]
    first, last = uids[0], uids[-1]
    if len(uids) * 4 < last - first + 1:
        for uid in uids:
            value = raw.get(msg_key(fid, uid), db=db)
            if value is not None:
                yield uid, bytes(value)
        return
    wanted = set(uids)
    cursor = raw.cursor(db=db)
    if not cursor.set_range(msg_key(fid, first)):
        return
    prefix = u32(fid)
    from_bytes = int.from_bytes
    for key, value in cursor.iternext():
        if key[:4] != prefix:
            return
        uid = from_bytes(key[4:8], "big")
        if uid > last:
            return
        if uid in wanted:
            yield uid, bytes(value)


def search_field(
    txn: Txn, record: Mapping[str, object], field: str, value: str
) -> list[int] | None:
    """UIDs (ascending) of the folder ``record``'s messages whose ``field`` text holds
    ``value`` (:func:`mailserver.message.search_text.needle`); None when some message of the
    folder has no text kept. Fastest in a transaction that reads values as ``bytes``."""
    wanted = search_text.needle(value)
    fid = int(record["id"])  # type: ignore[call-overload]
    prefix = header_text_key(fid, search_text.FIELDS[field], 0)[:5]
    cursor = txn.raw.cursor(db=txn.dbs[b"header_text"])
    found: list[int] = []
    seen = 0
    if cursor.set_range(prefix):
        from_bytes = int.from_bytes
        for key, text in cursor.iternext():
            if key[:5] != prefix:
                break
            seen += 1
            if wanted in text if type(text) is bytes else wanted in bytes(text):
                found.append(from_bytes(key[5:9], "big"))
    return found if seen == record.get("exists") else None


def text_parts(txn: Txn, fid: int, uids: list[int]) -> Iterator[tuple[int, bytes]]:
    """(uid, packed text leaves) of each of ``uids`` (ascending) whose leaves are kept, in
    that order (:func:`mailserver.message.body_text.unpack` reads them)."""
    raw, db = txn.raw, txn.dbs[b"text_parts"]
    for uid in uids:
        value = raw.get(msg_key(fid, uid), db=db)
        if value is not None:
            yield uid, bytes(value)
