"""IMailboxRecords.records on the maildir store: the values cut out of a message record's text
equal the decoded record's, for the layout add_message writes and for any other layout
(keys in another order, no save date, an integer or exponent internal date)."""

from __future__ import annotations

import io
import json

import pytest_twisted

from mailserver.db.schema import dump, msg_key
from mailserver.store import index

ALICE = "alice@example.org"
MESSAGE = b"From: Bob <bob@example.net>\r\nSubject: Records\r\n\r\nbody\r\n"


@pytest_twisted.ensureDeferred
async def test_records_read_any_message_record_layout(storage):
    store = storage.store
    await store.create_account(ALICE)
    inbox = store.account(ALICE).folder("INBOX")
    uids = [await inbox.append(io.BytesIO(MESSAGE), internaldate=1704070200.25) for _ in range(4)]
    [written] = inbox.records([uids[0]])
    assert written[3:5] == (len(MESSAGE), 1704070200.25)
    fid = inbox.folder_id

    def rewrite(txn):
        for uid, change in zip(uids[1:], ("reorder", "no savedate", "exponent")):
            key = msg_key(fid, uid)
            record = json.loads(bytes(txn.get(b"messages", key)))
            if change == "reorder":
                record = dict(reversed(list(record.items())))
            elif change == "no savedate":
                del record["savedate"]
                record["internaldate"] = 1704070200
            else:
                record["internaldate"] = 1.5e9
            txn.put(b"messages", key, dump(record))

    await store.db.write(rewrite)
    with store.db.read() as txn:
        cut = index.records(txn, fid, uids)
        decoded = [json.loads(bytes(txn.get(b"messages", msg_key(fid, uid)))) for uid in uids]
    assert [(r[0], r[3], r[4], r[5]) for r in cut] == [
        (uid, d["size"], d["internaldate"], d["object_id"]) for uid, d in zip(uids, decoded)
    ]
    assert [type(r[4]) for r in cut] == [float, float, int, float]
    assert [r[:6] for r in inbox.records(uids)] == [
        (m.info.uid, m.info.flags, m.info.modseq, m.info.size, m.info.internaldate,
         m.info.object_id)
        for m in inbox.messages(uids, meta=False)
    ]
