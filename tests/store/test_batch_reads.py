"""The LMDB index's batch reads (IMailbox.messages): the envelope-only read of an object
record takes its first JSON value, and still reads a record written in another key order."""

from __future__ import annotations

import io

import pytest_twisted

from mailserver.db.schema import dump
from mailserver.store import index

ALICE = "alice@example.org"
MESSAGE = b"From: Bob <bob@example.net>\r\nSubject: Batch\r\n\r\nbody\r\n"


@pytest_twisted.ensureDeferred
async def test_envelope_only_read_of_any_record_layout(storage):
    store = storage.store
    await store.create_account(ALICE)
    inbox = store.account(ALICE).folder("INBOX")
    uid = await inbox.append(io.BytesIO(MESSAGE))
    full = inbox.message(uid).info
    [lean] = inbox.messages([uid], meta="envelope")
    assert lean.info.envelope == full.envelope and lean.info.envelope["subject"] == "Batch"
    assert lean.info.bodystructure == {}
    key = full.object_id.encode()

    def reorder(txn):
        record = txn.get_json(b"objects", key)
        # An object record with the envelope last (another writer's layout).
        reordered = {k: v for k, v in record.items() if k != "envelope"}
        reordered["envelope"] = record["envelope"]
        txn.put(b"objects", key, dump(reordered))

    await store.db.write(reorder)
    with store.db.read() as txn:
        assert not bytes(txn.get(b"objects", key)).startswith(b'{"envelope":')
        assert index.object_envelope(txn, full.object_id) == full.envelope
        assert index.object_envelope(txn, "Mmissing") == {}
    [again] = inbox.messages([uid], meta="envelope")
    assert again.info.envelope == full.envelope
