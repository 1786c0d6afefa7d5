"""Is the header index in step with the message entries? Audit and repair of ``headers``,
``header_text`` and ``text_parts`` (issue 6, :mod:`mailserver.store.header_index`) for the
start-up check, ``mailserver verify`` and ``mailserver reindex``.

The readers rest on two facts: every entry of these sub-dbs belongs to a message of its
folder (its key's folder id + UID has a ``flags`` entry), and a folder whose ``header_text``
holds as many texts of a field as the folder has messages holds one for each message
(:func:`~mailserver.store.header_index.search_field` counts them against EXISTS). A missing
text alone only makes the count differ (SEARCH then reads the parse results: slower, right);
an *orphan* (its message gone) next to a missing text makes the count agree while a message
has no text, and SEARCH would never find that message. Neither can come from the store's own
writes (a message's entries are written and removed in the transaction that adds or removes
it); both come from a damaged or partly restored index. So:

- :func:`audit_folder` finds, in one read transaction, a folder's orphans (per sub-db) and the
  messages lacking one of their five texts or their text leaves: its UIDs (from ``flags``)
  merged with each sub-db's key range, seven cursor walks (about 4 µs per message: a few
  seconds for a million, which the start-up check spends in a worker thread).
- :func:`stray_folders` finds entries whose folder id no longer exists: one cursor seek per
  folder id present, not a walk of every entry.
- :func:`repair_folder` (one write transaction) deletes the orphans, writes the missing texts
  from the object's envelope and the missing text leaves from its structure (when it has body
  offsets); :func:`drop_stray` deletes stray folders' entries.

A message without a kept header block is not a problem: its block is read from its file (a
message indexed before schema 10, or a header section over the limit).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mailserver.db import Txn
from mailserver.db.schema import SUBDBS, header_text_key, load, msg_key, u32
from mailserver.message import body_text, search_text

__all__ = [
    "TABLES",
    "FolderAudit",
    "audit_folder",
    "drop_stray",
    "repair_folder",
    "stray_folders",
]

#: The per-message sub-dbs of the header index, all keyed by folder id first, and (from
#: schema 12) ``imap_items``, keyed the same way, whose orphans are checked and dropped too
#: (a message without one is read from its record: not a problem).
TABLES = tuple(
    table
    for table in (b"headers", b"header_text", b"text_parts", b"imap_items")
    if table in SUBDBS
)


@dataclass
class FolderAudit:
    """What :func:`audit_folder` found in one folder."""

    #: sub-db -> keys of entries whose message is gone
    orphans: dict[bytes, list[bytes]] = field(default_factory=dict)
    #: UIDs of messages lacking one of their SEARCH texts (ascending)
    missing_texts: list[int] = field(default_factory=list)
    #: UIDs of messages without text leaves (legitimate for an older layout: not a problem)
    missing_leaves: list[int] = field(default_factory=list)

    @property
    def problems(self) -> bool:
        """Whether the readers could be misled or slowed: orphans or missing texts."""
        return bool(self.missing_texts) or any(self.orphans.values())

    def describe(self) -> str:
        """One line: how many orphans (per sub-db) and messages without their texts."""
        parts = [
            f"{len(keys)} {table.decode()} entr{'y' if len(keys) == 1 else 'ies'} of "
            "expunged messages"
            for table, keys in self.orphans.items()
            if keys
        ]
        if self.missing_texts:
            parts.append(f"{len(self.missing_texts)} message(s) without their SEARCH texts")
        return ", ".join(parts)


def _keys(raw: Any, db: Any, prefix: bytes) -> Iterator[bytes]:
    """Every key of ``db`` starting with ``prefix``, in order."""
    cursor = raw.cursor(db=db)
    if not cursor.set_range(prefix):
        return
    for key in cursor.iternext(keys=True, values=False):
        key = bytes(key)
        if not key.startswith(prefix):
            return
        yield key


def _tails(raw: Any, db: Any, prefix: bytes, at: int) -> list[bytes]:
    """The 4-octet UID of every key of ``db`` starting with ``prefix`` (at offset ``at`` of
    the key), in key order: one cursor walk, no integer decoded."""
    cursor = raw.cursor(db=db)
    if not cursor.set_range(prefix):
        return []
    size, end = len(prefix), at + 4
    out: list[bytes] = []
    append = out.append
    for key in cursor.iternext(keys=True, values=False):
        if key[:size] != prefix:
            break
        append(bytes(key[at:end]))
    return out


def _merge(uids: list[bytes], found: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """(UIDs of ``found`` not in ``uids``, UIDs of ``uids`` not in ``found``), both lists in
    ascending order (big-endian, so byte order is numeric order). Equal lists, the usual
    case, are compared in one step."""
    if found == uids:
        return [], []
    orphans: list[bytes] = []
    missing: list[bytes] = []
    i, count = 0, len(uids)
    for uid in found:
        while i < count and uids[i] < uid:
            missing.append(uids[i])
            i += 1
        if i < count and uids[i] == uid:
            i += 1
        else:
            orphans.append(uid)
    missing.extend(uids[i:])
    return orphans, missing


def _numbers(uids: list[bytes]) -> list[int]:
    return [int.from_bytes(uid, "big") for uid in uids]


def audit_folder(raw: Any, dbs: dict[bytes, Any], fid: int) -> FolderAudit:
    """Orphans and missing entries of folder ``fid``'s header index. ``raw`` is an LMDB
    transaction (a :class:`mailserver.db.Txn`'s ``raw``, or a backup's), ``dbs`` its
    sub-dbs. Memory: a few dozen octets per message of the folder."""
    prefix = u32(fid)
    uids = _tails(raw, dbs[b"flags"], prefix, 4)
    audit = FolderAudit()
    for table in TABLES:
        if table == b"header_text":
            continue
        orphans, missing = _merge(uids, _tails(raw, dbs[table], prefix, 4))
        audit.orphans[table] = [prefix + uid for uid in orphans]
        if table == b"text_parts":
            audit.missing_leaves = _numbers(missing)
    lacking: set[bytes] = set()
    texts: list[bytes] = []
    tags = set(search_text.FIELDS.values())
    for tag in tags:
        orphans, missing = _merge(uids, _tails(raw, dbs[b"header_text"], prefix + tag, 5))
        texts += [prefix + tag + uid for uid in orphans]
        lacking.update(missing)
    # A tag no field uses (a damaged key): an orphan too. Seeks to each tag present.
    cursor = raw.cursor(db=dbs[b"header_text"])
    found = cursor.set_range(prefix)
    while found:
        key = bytes(cursor.key())
        if key[:4] != prefix:
            break
        tag = key[4:5]
        if tag not in tags:
            texts.append(key)
            found = cursor.next()
        elif tag == b"\xff":
            break
        else:
            found = cursor.set_range(prefix + bytes([tag[0] + 1]))
    audit.orphans[b"header_text"] = sorted(texts)
    audit.missing_texts = sorted(_numbers(list(lacking)))
    return audit


def stray_folders(raw: Any, dbs: dict[bytes, Any], known: set[int]) -> dict[int, int]:
    """Folder id -> number of header index entries, for every folder id with entries but
    not in ``known`` (the ids of existing folders). One seek per folder id present, plus a
    walk of the stray ones' entries."""
    stray: dict[int, int] = {}
    for table in TABLES:
        cursor = raw.cursor(db=dbs[table])
        found = cursor.first()
        while found:
            key = bytes(cursor.key())
            if len(key) < 4:  # not a key this table is written with: skip it
                found = cursor.next()
                continue
            fid = int.from_bytes(key[:4], "big")
            if fid in known:
                if fid == 0xFFFFFFFF:
                    break
                found = cursor.set_range(u32(fid + 1))
                continue
            count = 0
            while found and bytes(cursor.key())[:4] == key[:4]:
                count += 1
                found = cursor.next()
            stray[fid] = stray.get(fid, 0) + count
    return stray


def drop_stray(txn: Txn) -> int:
    """Delete every header index entry of a folder id that no longer exists; how many."""
    known = {int.from_bytes(bytes(key), "big") for key, _ in txn.prefix(b"finfo", b"")}
    stray = stray_folders(txn.raw, txn.dbs, known)
    dropped = 0
    for fid in stray:
        for table in TABLES:
            for key in list(_keys(txn.raw, txn.dbs[table], u32(fid))):
                txn.delete(table, key)
                dropped += 1
    return dropped


def repair_folder(txn: Txn, fid: int) -> int:
    """Bring folder ``fid``'s header index in step with its messages (see the module
    docstring); the number of entries deleted or written."""
    audit = audit_folder(txn.raw, txn.dbs, fid)
    changed = 0
    for table, keys in audit.orphans.items():
        for key in keys:
            txn.delete(table, key)
            changed += 1
    texts, leaves = set(audit.missing_texts), set(audit.missing_leaves)
    for uid in sorted(texts | leaves):
        record = _object(txn, fid, uid)
        if uid in texts:
            envelope = record.get("envelope")
            given = envelope if isinstance(envelope, dict) else {}
            for tag, text in search_text.texts(given).items():
                key = header_text_key(fid, tag, uid)
                if txn.get(b"header_text", key) is None:
                    txn.put(b"header_text", key, text)
                    changed += 1
        if uid in leaves:
            packed = body_text.stored_form(record.get("bodystructure"))
            if packed is not None:
                txn.put(b"text_parts", msg_key(fid, uid), packed)
                changed += 1
    return changed


def _object(txn: Txn, fid: int, uid: int) -> dict[str, Any]:
    """The object record (parse results) of message ``uid``; {} when it has none."""
    raw = txn.get(b"messages", msg_key(fid, uid))
    object_id = load(raw).get("object_id") if raw is not None else None
    found = txn.get(b"objects", str(object_id).encode()) if object_id else None
    record = load(found) if found is not None else None
    return record if isinstance(record, dict) else {}

