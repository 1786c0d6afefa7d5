"""Index operations on one LMDB transaction: folders, UIDs, flags, modseqs and labels.

These are plain functions of a :class:`mailserver.db.Txn`, so they compose into one
transaction (a MOVE is add + remove, atomically) and are tested without files. The record
layouts are documented in :mod:`mailserver.db.schema`.

Expunge tombstones (QRESYNC, RFC 7162 §3.2.5-6): every removal of a message writes
(folder id, modseq of the removal, uid) into ``vanished`` in the same transaction, and the
removal raises the folder's HIGHESTMODSEQ (§3.2.10: an expunge is a change a client must be
able to detect). Tombstones cost 16 bytes of key each; a folder keeps at most
``TOMBSTONES_KEPT`` of them. Pruning drops the oldest and raises the folder's
``vanished_floor`` to the newest modseq dropped: :func:`expunged_since` is exact for any
modseq at or above the floor and answers None below it, and the IMAP server then falls
back to a full resync (every UID the client knows that is not present, §3.2.5.2).

Subscriptions (RFC 9051 §6.3.7-8) are a set of names per account in ``subscriptions``,
apart from the folders: a name may be subscribed with no folder (SUBSCRIBE before CREATE, or
after DELETE, which leaves the name subscribed), and RENAME leaves them alone (the old name
stays subscribed, the new one is not, as in Dovecot). Creating a folder subscribes its name;
deleting the account drops its subscriptions.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections.abc import Iterable, Iterator
from typing import Any

from mailserver.db import Txn
from mailserver.db.schema import (
    decode_flags,
    encode_flags,
    flag_set,
    folder_key,
    from_u32,
    label_key,
    load,
    modseq_key,
    modseq_uid_key,
    msg_key,
    name_key,
    split_modseq_key,
    split_msg_key,
    u32,
)
from mailserver.errors import FolderExists, NoSuchFolder, NoSuchUser
from mailserver.store import header_index, imap_items, quota
from mailserver.types import DEFAULT_FOLDERS, SEEN, FlagInfo, FlagMode

Record = dict[str, Any]

#: How an object record written by :func:`mailserver.db.schema.dump` starts when it holds an
#: envelope as its first key, and the decoder that reads that one value (:func:`object_envelope`).
_ENVELOPE_FIRST = '{"envelope":'
_DECODER = json.JSONDecoder()
#: Expunge tombstones kept per folder (see the module docstring); pruning starts when a
#: folder holds an eighth more than this.
TOMBSTONES_KEPT = 100_000


def new_object_id() -> str:
    """An RFC 8474 object id: 1-255 characters of ``[A-Za-z0-9_-]``, unguessable."""
    return "M" + secrets.token_hex(12)


def _next_uidvalidity(txn: Txn) -> int:
    # RFC 9051 §2.3.1.1: a re-created folder must get a different UIDVALIDITY. A clock
    # value that never repeats (strictly above the last one handed out) does that.
    last = int(txn.get_json(b"meta", b"last_uidvalidity") or 0)
    value = max(int(time.time()), last + 1) & 0xFFFFFFFF
    txn.put_json(b"meta", b"last_uidvalidity", value)
    return value


def _next_folder_id(txn: Txn) -> int:
    value = int(txn.get_json(b"meta", b"next_folder_id") or 1)
    txn.put_json(b"meta", b"next_folder_id", value + 1)
    return value


# -- accounts and folders ---------------------------------------------------------------


def account(txn: Txn, address: str) -> Record | None:
    record: Record | None = txn.get_json(b"accounts", address.encode())
    return record


def create_account(txn: Txn, address: str, dirname: str, default_folders: bool = True) -> Record:
    record = {"dirname": dirname, "created": time.time(), "used_bytes": 0, "used_messages": 0}
    txn.put_json(b"accounts", address.encode(), record)
    for name, special in DEFAULT_FOLDERS if default_folders else ():
        if folder_id(txn, address, name) is None:
            create_folder(txn, address, name, special.value if special else None)
    return record


def delete_account(txn: Txn, address: str) -> list[Record]:
    """Drop the account and every folder; return the removed folder records."""
    if account(txn, address) is None:
        raise NoSuchUser(detail=address)
    removed = []
    for _name, fid, record in list(folders(txn, address)):
        delete_folder(txn, fid)
        removed.append(record)
    for name in subscriptions(txn, address):
        unsubscribe(txn, address, name)
    txn.delete(b"accounts", address.encode())
    return removed


def subscribe(txn: Txn, address: str, name: str) -> None:
    """Add ``name`` (normalised by the caller) to the account's subscriptions."""
    txn.put(b"subscriptions", folder_key(address, name), b"")


def unsubscribe(txn: Txn, address: str, name: str) -> None:
    """Remove ``name`` from the account's subscriptions; nothing happens if it is absent."""
    txn.delete(b"subscriptions", folder_key(address, name))


def is_subscribed(txn: Txn, address: str, name: str) -> bool:
    return txn.get(b"subscriptions", folder_key(address, name)) is not None


def subscriptions(txn: Txn, address: str) -> list[str]:
    """The account's subscribed names, in key (utf-8 byte) order."""
    prefix = address.encode() + b"\0"
    return [bytes(key[len(prefix) :]).decode() for key, _ in txn.prefix(b"subscriptions", prefix)]


def folder_id(txn: Txn, address: str, name: str) -> int | None:
    raw = txn.get(b"folders", folder_key(address, name))
    return None if raw is None else from_u32(raw)


def folder(txn: Txn, fid: int) -> Record:
    record: Record | None = txn.get_json(b"finfo", u32(fid))
    if record is None:
        raise NoSuchFolder(detail=f"folder id {fid}")
    return record


def folders(txn: Txn, address: str) -> Iterator[tuple[str, int, Record]]:
    """(name, folder id, record) of every folder of the account, by name."""
    prefix = address.encode() + b"\0"
    for key, value in list(txn.prefix(b"folders", prefix)):
        fid = from_u32(value)
        yield key[len(prefix) :].decode(), fid, folder(txn, fid)


def create_folder(
    txn: Txn, address: str, name: str, special_use: str | None, dirname: str | None = None
) -> Record:
    if folder_id(txn, address, name) is not None:
        raise FolderExists(detail=name)
    fid = _next_folder_id(txn)
    record = {
        "id": fid,
        "account": address,
        "name": name,
        "uidvalidity": _next_uidvalidity(txn),
        "uidnext": 1,
        "highestmodseq": 1,
        "vanished_floor": 0,
        "tombstones": 0,
        "exists": 0,
        "unseen": 0,
        "size": 0,
        "special_use": special_use,
        "mailbox_id": "F" + secrets.token_hex(12),  # RFC 8474 §4: unguessable, never reused
    }
    if dirname is not None:
        record["dirname"] = dirname
    txn.put(b"folders", folder_key(address, name), u32(fid))
    txn.put_json(b"finfo", u32(fid), record)
    subscribe(txn, address, name)
    return record


def rename_folder(txn: Txn, fid: int, new_name: str) -> Record:
    record = folder(txn, fid)
    address = record["account"]
    if folder_id(txn, address, new_name) is not None:
        raise FolderExists(detail=new_name)
    txn.delete(b"folders", folder_key(address, record["name"]))
    record["name"] = new_name
    txn.put(b"folders", folder_key(address, new_name), u32(fid))
    txn.put_json(b"finfo", u32(fid), record)
    return record


def update_folder(txn: Txn, record: Record) -> None:
    txn.put_json(b"finfo", u32(record["id"]), record)


def delete_folder(txn: Txn, fid: int) -> list[tuple[int, str, frozenset[str]]]:
    """Remove a folder and its messages from the index; return (uid, base, flags) of each
    message so the caller can remove the files."""
    record = folder(txn, fid)
    uids = [uid for uid, _flags, _modseq in flag_range(txn, fid, 1, None)]
    removed = remove_messages(txn, record, uids)
    for key, _ in list(txn.prefix(b"vanished", u32(fid))):
        txn.delete(b"vanished", key)
    txn.delete(b"folders", folder_key(record["account"], record["name"]))
    txn.delete(b"finfo", u32(fid))
    return removed


# -- messages -----------------------------------------------------------------------------


def add_message(
    txn: Txn,
    record: Record,
    base: str,
    flags: frozenset[str],
    size: int,
    internaldate: float,
    object_id: str,
    meta: Record | None = None,
) -> int:
    """Append a message to the folder ``record`` (updated in place and written back); return
    its UID. ``meta`` (envelope, bodystructure, attachments) is stored once per object."""
    quota.charge(txn, record["account"], size, 1)
    fid = record["id"]
    uid = record["uidnext"]
    modseq = record["highestmodseq"] + 1
    key = msg_key(fid, uid)
    txn.put(b"flags", key, encode_flags(modseq, flags))
    txn.put_json(
        b"messages",
        key,
        {
            "base": base,
            "size": size,
            "internaldate": internaldate,
            "savedate": time.time(),
            "object_id": object_id,
        },
    )
    txn.put(b"modseq", modseq_uid_key(fid, modseq, uid), b"")
    txn.put(b"names", name_key(fid, base), u32(uid))
    txn.put(b"labels", label_key(object_id, fid, uid), b"")
    header_index.add(txn, fid, uid, object_id, meta)  # issue 6: header block, SEARCH texts
    if meta is not None and "header" in meta:  # the block goes to the header index only
        meta = {name: value for name, value in meta.items() if name != "header"}
    if meta is not None and txn.get(b"objects", object_id.encode()) is None:
        txn.put_json(b"objects", object_id.encode(), meta)
    # issue 6: FETCH writes these bytes as stored, read in UID order
    imap_items.add(txn, fid, uid, size, internaldate, object_id, meta)
    record["uidnext"] = uid + 1
    record["highestmodseq"] = modseq
    record["exists"] += 1
    record["size"] += size
    if SEEN not in flags:
        record["unseen"] += 1
    update_folder(txn, record)
    return uid


def message(txn: Txn, fid: int, uid: int) -> tuple[Record, int, frozenset[str]] | None:
    """(message record, modseq, flags) or None."""
    key = msg_key(fid, uid)
    raw = txn.get(b"flags", key)
    if raw is None:
        return None
    modseq, flags = decode_flags(raw)
    return txn.get_json(b"messages", key), modseq, flags


def messages(
    txn: Txn, fid: int, uids: Iterable[int]
) -> Iterator[tuple[int, Record, int, frozenset[str]]]:
    """(uid, message record, modseq, flags) of each of ``uids`` present in the folder, in
    the order given: the batch form of :func:`message` (FETCH, SEARCH)."""
    raw = txn.raw
    flags_db, messages_db = txn.dbs[b"flags"], txn.dbs[b"messages"]
    from_bytes = int.from_bytes
    for uid in uids:
        key = msg_key(fid, uid)
        value = raw.get(key, db=flags_db)
        if value is None:
            continue
        record = raw.get(key, db=messages_db)
        if record is None:
            continue
        yield uid, load(bytes(record)), from_bytes(value[:8], "big"), flag_set(bytes(value[8:]))


#: IMailboxRecords.records: see :func:`mailserver.store.imap_items.records`.
records = imap_items.records


def object_envelope(txn: Txn, object_id: str) -> Record:
    """The envelope of an object's record, without decoding the rest of it: the record is
    written envelope first (:func:`add_message`), so its JSON value is decoded alone."""
    raw = txn.raw.get(object_id.encode(), db=txn.dbs[b"objects"])
    if raw is None:
        return {}
    text = bytes(raw).decode()
    if text.startswith(_ENVELOPE_FIRST):
        envelope, _end = _DECODER.raw_decode(text, len(_ENVELOPE_FIRST))
    else:  # another layout (written by an older version): the whole record
        envelope = json.loads(text).get("envelope")
    return envelope if isinstance(envelope, dict) else {}


def object_meta(txn: Txn, object_id: str) -> Record:
    record: Record = txn.get_json(b"objects", object_id.encode()) or {}
    return record


def flag_range(
    txn: Txn, fid: int, first: int, last: int | None
) -> Iterator[tuple[int, frozenset[str], int]]:
    """(uid, flags, modseq) for the UIDs in ``first..last`` present in the folder."""
    # The listing hot path (FETCH FLAGS, POP3 UIDL, resync): one cursor walk, integers
    # straight from the key and value buffers, flag sets memoised by their encoding.
    last_uid = 0xFFFFFFFF if last is None else min(last, 0xFFFFFFFF)
    cursor = txn.raw.cursor(db=txn.dbs[b"flags"])
    if not cursor.set_range(msg_key(fid, max(first, 0))):
        return
    prefix = u32(fid)
    from_bytes = int.from_bytes
    for key, value in cursor.iternext():
        if key[:4] != prefix:
            return
        uid = from_bytes(key[4:8], "big")
        if uid > last_uid:
            return
        yield uid, flag_set(bytes(value[8:])), from_bytes(value[:8], "big")


def changed_since(txn: Txn, fid: int, modseq: int) -> list[FlagInfo]:
    """FlagInfo of the folder's messages whose modseq is above ``modseq``, oldest change
    first (CONDSTORE/QRESYNC): one walk of the ``modseq`` log and a look-up of each message's
    flags, no JSON decoded. The look-ups go through one cursor: the UIDs of one change (a
    STORE gives all its messages one modseq) ascend, so they mostly stay on its page."""
    prefix = u32(fid)
    log = txn.raw.cursor(db=txn.dbs[b"modseq"])
    if not log.set_range(modseq_key(fid, modseq + 1)):
        return []
    flags = txn.raw.cursor(db=txn.dbs[b"flags"])
    from_bytes = int.from_bytes
    found = []
    for key in log.iternext(values=False):
        if key[:4] != prefix:
            break
        uid_key = bytes(key[12:16])
        if flags.set_key(prefix + uid_key):
            value = flags.value()
            found.append(
                FlagInfo(
                    from_bytes(uid_key, "big"),
                    flag_set(bytes(value[8:])),
                    from_bytes(value[:8], "big"),
                )
            )
    return found


def combine(current: frozenset[str], given: frozenset[str], mode: FlagMode) -> frozenset[str]:
    if mode is FlagMode.ADD:
        return current | given
    if mode is FlagMode.REMOVE:
        return current - given
    return given


def store_flags(
    txn: Txn,
    record: Record,
    uids: Iterable[int],
    given: frozenset[str],
    mode: FlagMode,
    unchangedsince: int | None = None,
) -> tuple[list[tuple[FlagInfo, frozenset[str], str]], list[int]]:
    """Change flags; every changed message gets the same new modseq (RFC 7162 §3.1.3 allows
    one modseq per command). With ``unchangedsince``, a message whose modseq is above it is
    left alone (RFC 7162 §3.1.3 UNCHANGEDSINCE). Returns ((new state, old flags, file base)
    per changed message, UIDs left alone by ``unchangedsince``).

    Per message: one look-up of its flags, the flags value and the two ``modseq`` log keys
    written, and its file base read from the record's text (:func:`_record_base`), through
    one cursor per sub-db (LMDB looks on a cursor's current page first, so ascending keys
    seldom need a search from the root). What a flags value becomes is worked out once per
    distinct value (:func:`_flag_step`): a folder has few distinct flag sets, so
    ``STORE 1:*`` decodes and encodes flags a handful of times, not once per message
    (issue 6)."""
    fid = record["id"]
    modseq = record["highestmodseq"] + 1
    raw = txn.raw
    flags = raw.cursor(db=txn.dbs[b"flags"])
    log = raw.cursor(db=txn.dbs[b"modseq"])
    messages = raw.cursor(db=txn.dbs[b"messages"])
    prefix = u32(fid)
    head = modseq.to_bytes(8, "big")
    log_head = prefix + head
    steps: dict[bytes, _Step | None] = {}
    changed = []
    refused = []
    unseen = 0
    for uid in sorted(set(uids)):
        uid_key = uid.to_bytes(4, "big")
        key = prefix + uid_key
        if not flags.set_key(key):
            continue
        value = bytes(flags.value())
        old_modseq = value[:8]
        if unchangedsince is not None and int.from_bytes(old_modseq, "big") > unchangedsince:
            refused.append(uid)
            continue
        tail = value[8:]
        if tail in steps:
            step = steps[tail]
        else:
            step = steps[tail] = _flag_step(tail, given, mode)
        if step is None:
            continue
        new_tail, old, new, unseen_change = step
        flags.put(key, head + new_tail)
        if log.set_key(prefix + old_modseq + uid_key):
            log.delete()
        log.put(log_head + uid_key, b"")
        unseen += unseen_change
        base = _record_base(bytes(messages.value())) if messages.set_key(key) else ""
        changed.append((FlagInfo(uid, new, modseq), old, base))
    if changed:
        record["unseen"] += unseen
        record["highestmodseq"] = modseq
        update_folder(txn, record)
    return changed, refused


#: What one flags value becomes in a STORE: (new value after the modseq, old flags, new
#: flags, change of the folder's unseen count); None when the flags stay as they are.
_Step = tuple[bytes, frozenset[str], frozenset[str], int]


def _flag_step(tail: bytes, given: frozenset[str], mode: FlagMode) -> _Step | None:
    old = flag_set(tail)
    new = combine(old, given, mode)
    if new == old:
        return None
    return encode_flags(0, new)[8:], old, new, int(SEEN in old) - int(SEEN in new)


#: How a ``messages`` record written by :func:`add_message` starts: the file base first.
_BASE_FIRST = b'{"base":"'


def _record_base(raw: bytes) -> str:
    """The file base of a message record without decoding the rest of it: the record is
    written base first (:func:`add_message`), and a base with no backslash (maildir names
    have none but an escaped host name's) is its JSON text as it is."""
    if raw.startswith(_BASE_FIRST):
        end = raw.find(b'"', len(_BASE_FIRST))
        text = raw[len(_BASE_FIRST) : end]
        if end > 0 and b"\\" not in text:
            return text.decode()
    return str(load(raw)["base"])


def remove_messages(
    txn: Txn, record: Record, uids: Iterable[int], keep: int = TOMBSTONES_KEPT
) -> list[tuple[int, str, frozenset[str]]]:
    """Remove messages from the folder; return (uid, base, flags) of each removed one. An
    object whose last label goes is forgotten too. UIDs are never handed out again because
    UIDNEXT does not move back (RFC 9051 §2.3.1.1). Each removal leaves a tombstone at the
    folder's new HIGHESTMODSEQ; beyond ``keep`` tombstones the oldest are pruned."""
    fid = record["id"]
    modseq = record["highestmodseq"] + 1
    size_before = record["size"]
    removed = []
    for uid in sorted(set(uids)):
        key = msg_key(fid, uid)
        raw = txn.get(b"flags", key)
        if raw is None:
            continue
        old_modseq, flags = decode_flags(raw)
        info = txn.get_json(b"messages", key)
        txn.delete(b"flags", key)
        txn.delete(b"messages", key)
        txn.delete(b"modseq", modseq_uid_key(fid, old_modseq, uid))
        txn.delete(b"names", name_key(fid, info["base"]))
        txn.put(b"vanished", modseq_uid_key(fid, modseq, uid), b"")
        header_index.remove(txn, fid, uid)
        imap_items.remove(txn, fid, uid)
        object_id = info["object_id"]
        txn.delete(b"labels", label_key(object_id, fid, uid))
        if next(txn.prefix(b"labels", object_id.encode("ascii") + b"\0"), None) is None:
            txn.delete(b"objects", object_id.encode())
        record["exists"] -= 1
        record["size"] -= info["size"]
        if SEEN not in flags:
            record["unseen"] -= 1
        removed.append((uid, info["base"], flags))
    if removed:
        quota.charge(txn, record["account"], record["size"] - size_before, -len(removed))
        record["highestmodseq"] = modseq
        record["tombstones"] = record.get("tombstones", 0) + len(removed)
        if record["tombstones"] > keep + keep // 8:
            _prune_tombstones(txn, record, record["tombstones"] - keep)
        update_folder(txn, record)
    return removed


def _prune_tombstones(txn: Txn, record: Record, count: int) -> None:
    """Drop the ``count`` oldest tombstones of the folder and raise its floor past them."""
    fid = record["id"]
    dropped = [key for key, _ in itertools.islice(txn.prefix(b"vanished", u32(fid)), count)]
    for key in dropped:
        txn.delete(b"vanished", key)
    if dropped:
        floor = split_modseq_key(dropped[-1])[1]
        record["vanished_floor"] = max(record.get("vanished_floor", 0), floor)
    record["tombstones"] -= len(dropped)


def expunged_since(txn: Txn, record: Record, modseq: int) -> list[int] | None:
    """UIDs (ascending) removed from the folder at a modseq above ``modseq``; None when
    tombstones that old were pruned (or predate them), so the answer is unknown."""
    if modseq < record.get("vanished_floor", 0):
        return None
    prefix = u32(record["id"])
    cursor = txn.raw.cursor(db=txn.dbs[b"vanished"])
    if not cursor.set_range(modseq_key(record["id"], modseq + 1)):
        return []
    uids = []
    from_bytes = int.from_bytes
    for key in cursor.iternext(values=False):  # one cursor walk, UIDs straight from keys
        if key[:4] != prefix:
            break
        uids.append(from_bytes(key[12:16], "big"))
    uids.sort()
    return uids


def labels(txn: Txn, object_id: str) -> list[tuple[int, int]]:
    """(folder id, uid) of every place holding ``object_id``."""
    prefix = object_id.encode("ascii") + b"\0"
    return [split_msg_key(key[len(prefix) :]) for key, _ in txn.prefix(b"labels", prefix)]


def uid_for_name(txn: Txn, fid: int, base: str) -> int | None:
    raw = txn.get(b"names", name_key(fid, base))
    return None if raw is None else from_u32(raw)
