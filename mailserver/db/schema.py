"""LMDB sub-databases, key encodings and the schema version with its migrations.

Every key layout used anywhere lives here, so a reader can see the whole index at once:

============= ======================================= =========================================
sub-db        key                                     value
============= ======================================= =========================================
meta          ascii name                              JSON (schema_version, next_folder_id, ...)
domains       domain (lower-case, utf-8)              JSON Domain
users         address (utf-8)                         JSON User
aliases       source (``local@domain``/``@domain``)   JSON list of targets
accounts      address (utf-8)                         JSON {dirname, created, used_bytes,
                                                      used_messages}: quota counters
folders       address NUL name (utf-8)                folder id (u32)
finfo         folder id (u32)                         JSON folder record (counters, UIDVALIDITY,
                                                      mailbox_id of RFC 8474)
subscriptions address NUL name (utf-8)                empty: the account's subscribed names,
                                                      with or without a folder (RFC 9051
                                                      §6.3.7); a ``subscribed`` key left in an
                                                      older ``finfo`` record means nothing
flags         folder id (u32) + uid (u32)             modseq (u64) + system flag bits (u8) +
                                                      keywords (utf-8, space separated)
messages      folder id (u32) + uid (u32)             JSON {base, size, internaldate, savedate,
                                                      object_id}
objects       object id (ascii)                       JSON {envelope, bodystructure,
                                                      attachments, spam, size}
rendered      object id (ascii)                       versions 9-11 only: the object's IMAP
                                                      ENVELOPE, BODYSTRUCTURE and BODY as sent;
                                                      emptied by version 12 (moved to
                                                      ``imap_items``)
imap_items    folder id (u32) + uid (u32)             size (u64) + internal date (IEEE double)
                                                      + object id length (u8) + object id
                                                      (ascii) + the object's IMAP ENVELOPE,
                                                      BODYSTRUCTURE and BODY as sent (packed by
                                                      :mod:`mailserver.message.imap_render`;
                                                      empty for an older layout):
                                                      :mod:`mailserver.store.imap_items`
headers       folder id (u32) + uid (u32)             the message's header block as in its file
                                                      (when known exactly at delivery and small:
                                                      :mod:`mailserver.store.header_index`)
header_text   folder id (u32) + field tag (1 byte,    the case-folded text SEARCH SUBJECT/FROM/
              ``S``/``F``/``T``/``C``/``B``) + uid    TO/CC/BCC look in, UTF-8
              (u32)                                   (:mod:`mailserver.message.search_text`)
text_parts    folder id (u32) + uid (u32)             where the message's text/* leaves sit and
                                                      how to decode them, packed by
                                                      :mod:`mailserver.message.body_text`
labels        object id + NUL + folder id + uid       empty: every place an object sits
modseq        folder id (u32) + modseq (u64) + uid    empty: the change log for CONDSTORE
vanished      folder id (u32) + modseq (u64) + uid    empty: expunge tombstones for QRESYNC
                                                      (the modseq of the expunge; see
                                                      :mod:`mailserver.store.index`)
names         folder id (u32) + file base name        uid (u32): file -> UID, for recovery
queue         queue id (ascii)                        JSON QueueEntry (spool/queue.py)
due           next attempt ms (u64) + queue id        empty: the spool's schedule
app_passwords address NUL app password id (ascii)     JSON {name, scopes, created, expires,
                                                      hash, last_used, last_ip}
totp          address (utf-8)                         JSON {secret, confirmed, created,
                                                      last_step, recovery: [hash, ...]}
tokens        HMAC-SHA256 of the token (32 bytes)     JSON {id, user, scopes, name, created,
                                                      expires, last_used, last_ip}
dmarc_reports domain NUL date_end (u64) + 16 bytes    JSON summary of a received DMARC
              of SHA-256(reporter NUL report id)      aggregate report (msgauth/report_store.py)
filter_lists  scope NUL kind NUL entry (utf-8)        JSON {added, by, note}: allow/block list
                                                      entries (filter/lists.py); scope ``*``
                                                      (server), a domain or an address; kind
                                                      ``allow``/``block``, or ``=`` with entry
                                                      ``prefixes``: the network prefix lengths
                                                      listed in the scope {"4": [..], "6": [..]}
greylist      ``t`` + 16 bytes of SHA-256 of          JSON {first, last, passed}: a triplet
              network NUL sender NUL recipient;       (passed: when; 0 while waiting);
              ``c`` + client network;                 JSON {passes, last}: triplets passed by
              ``d`` + sender domain (utf-8)           retrying (filter/greylist.py)
spam_models   model name (``global`` or an address)   the trained classifier state
                                                      (filter/spam/model.py)
spam_classifications
              time ms (u64) + 8 random bytes          JSON {message_id, recipients, source,
                                                      score, is_spam, classifier, reasons}:
                                                      every verdict and user report
trace         time ms (u64) + sequence (u32) + 4      JSON message trace record {kind, time,
              random bytes                            keys, ...} (mailserver/trace/)
trace_keys    kind (1 byte) + 16 bytes of SHA-256     empty: which records name a Message-ID
              of the value + record key               (``m``), queue id (``q``) or SMTP
                                                      session (``s``)
============= ======================================= =========================================

``app_passwords``, ``totp`` and ``tokens`` belong to :mod:`mailserver.auth.credentials`, which
documents the hashes (HMAC-SHA256 under the server's credentials key).

Big-endian integers keep cursor order equal to numeric order, so UID and modseq ranges are
plain cursor walks.
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Callable, Iterator
from typing import Any

from mailserver.message import body_text, imap_render, search_text

#: Bump with a migration below whenever a key or value layout changes.
SCHEMA_VERSION = 12

SUBDBS = (
    b"meta",
    b"domains",
    b"users",
    b"aliases",
    b"accounts",
    b"folders",
    b"finfo",
    b"flags",
    b"messages",
    b"objects",
    b"labels",
    b"modseq",
    b"vanished",
    b"names",
    b"queue",
    b"due",
    b"app_passwords",
    b"totp",
    b"tokens",
    b"dmarc_reports",
    b"filter_lists",
    b"greylist",
    b"spam_models",
    b"spam_classifications",
    b"subscriptions",
    b"trace",
    b"trace_keys",
    b"rendered",
    b"headers",
    b"header_text",
    b"text_parts",
    b"imap_items",
)

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_FLAGS_HEAD = struct.Struct(">QB")

#: System flags <-> bits in a flags value.
FLAG_BITS = {
    "\\Seen": 1,
    "\\Answered": 2,
    "\\Flagged": 4,
    "\\Deleted": 8,
    "\\Draft": 16,
}


def u32(n: int) -> bytes:
    return _U32.pack(n)


def from_u32(b: bytes) -> int:
    return int(_U32.unpack(b)[0])


def msg_key(folder_id: int, uid: int) -> bytes:
    """Key of a message in ``flags`` and ``messages``."""
    return _U32.pack(folder_id) + _U32.pack(uid)


def split_msg_key(key: bytes) -> tuple[int, int]:
    return int(_U32.unpack_from(key, 0)[0]), int(_U32.unpack_from(key, 4)[0])


def modseq_key(folder_id: int, modseq: int) -> bytes:
    return _U32.pack(folder_id) + _U64.pack(modseq)


def modseq_uid_key(folder_id: int, modseq: int, uid: int) -> bytes:
    return _U32.pack(folder_id) + _U64.pack(modseq) + _U32.pack(uid)


def split_modseq_key(key: bytes) -> tuple[int, int, int]:
    """(folder id, modseq, uid) of a ``modseq`` key."""
    return (
        int(_U32.unpack_from(key, 0)[0]),
        int(_U64.unpack_from(key, 4)[0]),
        int(_U32.unpack_from(key, 12)[0]),
    )


def header_text_key(folder_id: int, tag: bytes, uid: int) -> bytes:
    """Key of a message's text for one SEARCH field (``tag``) in ``header_text``."""
    return _U32.pack(folder_id) + tag + _U32.pack(uid)


def folder_key(address: str, name: str) -> bytes:
    return address.encode() + b"\0" + name.encode()


def label_key(object_id: str, folder_id: int, uid: int) -> bytes:
    return object_id.encode("ascii") + b"\0" + msg_key(folder_id, uid)


def name_key(folder_id: int, base: str) -> bytes:
    return _U32.pack(folder_id) + base.encode()


def encode_flags(modseq: int, flags: frozenset[str]) -> bytes:
    """Pack a message's modseq and flags: system flags as bits, keywords as text."""
    bits = 0
    keywords = []
    for flag in flags:
        bit = FLAG_BITS.get(flag)
        if bit is None:
            keywords.append(flag)
        else:
            bits |= bit
    return _FLAGS_HEAD.pack(modseq, bits) + " ".join(sorted(keywords)).encode()


@functools.lru_cache(maxsize=4096)
def flag_set(tail: bytes) -> frozenset[str]:
    """The flags of a ``flags`` value after its modseq: system bits + keywords. Memoised:
    a folder has few distinct flag combinations, so listing decodes each only once."""
    bits = tail[0]
    flags = {name for name, bit in FLAG_BITS.items() if bits & bit}
    if len(tail) > 1:
        flags.update(tail[1:].decode().split(" "))
    return frozenset(flags)


def decode_flags(value: bytes) -> tuple[int, frozenset[str]]:
    modseq, bits = _FLAGS_HEAD.unpack_from(value, 0)
    flags = {name for name, bit in FLAG_BITS.items() if bits & bit}
    rest = bytes(value[_FLAGS_HEAD.size :])
    if rest:
        flags.update(rest.decode().split(" "))
    return int(modseq), frozenset(flags)


def dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def load(raw: bytes) -> Any:
    return json.loads(raw)


#: Migrations: MIGRATIONS[n] upgrades a schema at version n to n + 1 inside one write
#: transaction. Version 0 is an empty database.
Migration = Callable[[Any, dict[bytes, Any]], None]


def _create_v1(txn: Any, dbs: dict[bytes, Any]) -> None:
    txn.put(b"next_folder_id", dump(1), db=dbs[b"meta"])


def _add_spool_v2(txn: Any, dbs: dict[bytes, Any]) -> None:
    """Version 2 adds the spool's ``queue`` and ``due`` sub-dbs (created empty on open)."""


def _add_credentials_v3(txn: Any, dbs: dict[bytes, Any]) -> None:
    """Version 3 adds the ``app_pw``, ``totp`` and ``tokens`` sub-dbs of issue 5 (app
    passwords, TOTP, bearer tokens), created empty on open."""


def _add_vanished_v4(txn: Any, dbs: dict[bytes, Any]) -> None:
    """Version 4 adds the ``vanished`` sub-db (expunge tombstones, created empty on open).
    Expunges before the upgrade were not recorded, so every existing folder's
    ``vanished_floor`` becomes its HIGHESTMODSEQ: a QRESYNC client that last synced before
    the upgrade gets a full resync (RFC 7162 §3.2.5.2) instead of a wrong answer."""
    cursor = txn.cursor(db=dbs[b"finfo"])
    updates = []
    for key, value in cursor:
        record = load(bytes(value))
        record["vanished_floor"] = record.get("highestmodseq", 0)
        updates.append((bytes(key), dump(record)))
    for key, value in updates:
        txn.put(key, value, db=dbs[b"finfo"])


def _add_dmarc_reports_v5(txn: Any, dbs: dict[bytes, Any]) -> None:
    """Version 5 adds the ``dmarc_reports`` sub-db (received DMARC aggregate reports, issue
    8), created empty on open."""


def _add_filter_v6(txn: Any, dbs: dict[bytes, Any]) -> None:
    """Version 6 adds the filter's sub-dbs (issue 9): ``filter_lists``, ``greylist``,
    ``spam_models`` and ``spam_classifications``, created empty on open."""


def _add_subscriptions_v7(txn: Any, dbs: dict[bytes, Any]) -> None:
    """Version 7 keeps subscriptions in their own sub-db (``subscriptions``), apart from the
    folders, so that a name stays subscribed after its folder is deleted (RFC 9051 §6.3.7).
    Every folder whose record says ``subscribed`` (the default when the key is absent) gets
    its name in the table."""
    names = txn.cursor(db=dbs[b"folders"])
    subscribed = []
    for key, value in names:
        raw = txn.get(bytes(value), db=dbs[b"finfo"])
        if raw is not None and load(bytes(raw)).get("subscribed", True):
            subscribed.append(bytes(key))
    for key in subscribed:
        txn.put(key, b"", db=dbs[b"subscriptions"])


def _add_trace_v8(txn: Any, dbs: dict[bytes, Any]) -> None:
    """Version 8 adds the message trace log (issue 10): ``trace`` and ``trace_keys``,
    created empty on open (nothing before the upgrade was traced)."""


#: Objects rendered per cursor pass of :func:`_add_rendered_v9`.
_RENDER_BATCH = 1000


def _add_rendered_v9(txn: Any, dbs: dict[bytes, Any]) -> None:
    """Version 9 adds ``rendered`` (issue 6): every object's IMAP ENVELOPE, BODYSTRUCTURE and
    BODY, rendered once so FETCH writes stored bytes. Filled here for the objects whose parse
    results are in the current layout, read :data:`_RENDER_BATCH` at a time (a cursor pass,
    then the writes); an object in an older layout is left out and FETCH renders it as before.
    """
    start: bytes | None = b""
    while start is not None:
        cursor = txn.cursor(db=dbs[b"objects"])
        found = cursor.set_range(start) if start else cursor.first()
        batch = []
        while found and len(batch) < _RENDER_BATCH:
            batch.append((bytes(cursor.key()), bytes(cursor.value())))
            found = cursor.next()
        start = bytes(cursor.key()) if found else None
        for key, value in batch:
            items = imap_render.render(load(value))
            if items is not None:
                txn.put(key, imap_render.pack(items), db=dbs[b"rendered"])


def _message_objects(txn: Any, dbs: dict[bytes, Any]) -> Iterator[tuple[bytes, Any]]:
    """(``messages`` key, its object's record or None) of every message, read
    :data:`_RENDER_BATCH` at a time (a cursor pass, then the caller's writes)."""
    start: bytes | None = b""
    while start is not None:
        cursor = txn.cursor(db=dbs[b"messages"])
        found = cursor.set_range(start) if start else cursor.first()
        batch = []
        while found and len(batch) < _RENDER_BATCH:
            batch.append((bytes(cursor.key()), load(bytes(cursor.value())).get("object_id")))
            found = cursor.next()
        start = bytes(cursor.key()) if found else None
        for key, object_id in batch:
            raw = txn.get(str(object_id).encode(), db=dbs[b"objects"]) if object_id else None
            yield key, load(bytes(raw)) if raw is not None else None


def _add_header_index_v10(txn: Any, dbs: dict[bytes, Any]) -> None:
    """Version 10 adds the header index (issue 6): ``header_text`` is filled here for every
    message from its object's envelope (:func:`_message_objects`); ``headers`` starts empty
    (the blocks are in the files, which the server reads for those messages as before)."""
    for key, record in _message_objects(txn, dbs):
        envelope = record.get("envelope") if isinstance(record, dict) else None
        folder_id, uid = split_msg_key(key)
        for tag, text in search_text.texts(envelope or {}).items():
            txn.put(header_text_key(folder_id, tag, uid), text, db=dbs[b"header_text"])


def _add_text_parts_v11(txn: Any, dbs: dict[bytes, Any]) -> None:
    """Version 11 adds ``text_parts`` (issue 6): each message's text leaves, filled here from
    its object's structure when that has body offsets (the current layout); SEARCH BODY
    decodes the structure of any other message as before."""
    for key, record in _message_objects(txn, dbs):
        structure = record.get("bodystructure") if isinstance(record, dict) else None
        packed = body_text.stored_form(structure)
        if packed is not None:
            txn.put(key, packed, db=dbs[b"text_parts"])


#: The head of an ``imap_items`` value (:mod:`mailserver.store.imap_items`, which reads it).
IMAP_ITEMS_HEAD = struct.Struct(">QdB")


def _add_imap_items_v12(txn: Any, dbs: dict[bytes, Any]) -> None:
    """Version 12 adds ``imap_items`` (issue 6): each message's size, internal date, object id
    and its object's rendered items (from ``rendered``, or none when the object has none), so
    FETCH reads them in UID order; ``rendered`` is emptied (nothing reads it any more). Read
    :data:`_RENDER_BATCH` messages at a time (a cursor pass, then the writes)."""
    start: bytes | None = b""
    while start is not None:
        cursor = txn.cursor(db=dbs[b"messages"])
        found = cursor.set_range(start) if start else cursor.first()
        batch: list[tuple[bytes, Any]] = []
        while found and len(batch) < _RENDER_BATCH:
            batch.append((bytes(cursor.key()), load(bytes(cursor.value()))))
            found = cursor.next()
        start = bytes(cursor.key()) if found else None
        for key, record in batch:
            try:
                object_id = str(record["object_id"]).encode("ascii")
                head = IMAP_ITEMS_HEAD.pack(record["size"], record["internaldate"], len(object_id))
            except (KeyError, TypeError, UnicodeEncodeError, struct.error):
                continue  # not a record add_message wrote: FETCH reads it as before
            packed = txn.get(object_id, db=dbs[b"rendered"])
            value = head + object_id + (b"" if packed is None else bytes(packed))
            txn.put(key, value, db=dbs[b"imap_items"])
    txn.drop(dbs[b"rendered"], delete=False)


MIGRATIONS: dict[int, Migration] = {
    0: _create_v1,
    1: _add_spool_v2,
    2: _add_credentials_v3,
    3: _add_vanished_v4,
    4: _add_dmarc_reports_v5,
    5: _add_filter_v6,
    6: _add_subscriptions_v7,
    7: _add_trace_v8,
    8: _add_rendered_v9,
    9: _add_header_index_v10,
    10: _add_text_parts_v11,
    11: _add_imap_items_v12,
}
