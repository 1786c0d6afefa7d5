"""Index values prepared before the write transaction (issue 3): ``index.prepare`` computes,
on the thread that parsed a message, what ``add_message`` would compute from its parse
results (the object's record, the header index's values, the FETCH items), so the write lock
is held only to allocate the UID and modseq and put them. The records written are the same
bytes with or without a prepared value, for every kind of message, for a message without
parse results and for a copy; a verdict given after the values were prepared is noticed."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from mailserver.db import Database, Txn, schema
from mailserver.store import header_index, index
from mailserver.store.local import LocalDeliveryTarget
from mailserver.store.mailbox import message_meta, spam_record
from mailserver.types import Address, Envelope, SpamVerdict

ALICE = "alice@example.org"
ATTACHED = (
    b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.de>\r\nTo: a@example.org, B <b@example.org>\r\n"
    b"Subject: Quarterly =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMessage-ID: <q@example.de>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
    b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n"
    b"--XX\r\nContent-Type: application/pdf; name=a.pdf\r\n"
    b"Content-Disposition: attachment; filename=a.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--XX--\r\n"
)
MESSAGES = [
    ATTACHED,
    b"From: x@example.org\nSubject: LF only\n\nbody\n",
    b"Subject: no body at all",
    b"X-Big: " + b"y" * header_index.HEADER_LIMIT + b"\r\nSubject: big\r\n\r\nbody\r\n",
    "Subject: Grüße in UTF-8\r\nFrom: Jürgen <jü@exämple.de>\r\n\r\nbody\r\n".encode(),
]
VERDICT = SpamVerdict(score=0.25, is_spam=False, reasons=("bayes 0.25",), classifier="test")


def _open(path: Path) -> Database:
    return Database.open(str(path), map_size=64 << 20, reactor=reactor, sync=False)


@pytest.fixture
def twin(tmp_path: Path):
    """Two databases in the same state: one account with INBOX and Archive."""
    first = _open(tmp_path / "a")

    def setup(txn: Txn) -> None:
        index.create_account(txn, ALICE, "a", default_folders=False)
        index.create_folder(txn, ALICE, "INBOX", None)
        index.create_folder(txn, ALICE, "Archive", None)

    first.write_sync(setup)
    (tmp_path / "b").mkdir()
    first.env.copy(str(tmp_path / "b"))
    second = _open(tmp_path / "b")
    yield first, second
    for database in (first, second):
        pytest_twisted.blockon(database.close())


def _deliveries(use_prepared: bool) -> Callable[[Txn], None]:
    """Every kind of add: parsed messages, a verdict given after the values were prepared, a
    message without parse results, a second label of an object with parse results again,
    and a copy into another folder (no parse results, the object known)."""

    def run(txn: Txn) -> None:
        inbox = index.folder(txn, index.folder_id(txn, ALICE, "INBOX"))  # type: ignore[arg-type]
        archive = index.folder(txn, index.folder_id(txn, ALICE, "Archive"))  # type: ignore[arg-type]
        for n, data in enumerate(MESSAGES, 1):
            meta = message_meta(data)
            prepared = index.prepare(meta) if use_prepared else None
            if n == 2:  # the filter's verdict arrives after the values were prepared
                meta["spam"] = spam_record(VERDICT)
            index.add_message(
                txn, inbox, f"b{n}", frozenset(), len(data), 1e9 + n, f"M{n}", meta, prepared
            )
        index.add_message(txn, inbox, "b6", frozenset({"\\Seen"}), 10, 1e9, "M6", None)
        again = message_meta(MESSAGES[0])
        prepared = index.prepare(again) if use_prepared else None
        index.add_message(txn, inbox, "b7", frozenset(), 10, 1e9, "M1", again, prepared)
        index.add_message(txn, archive, "b8", frozenset(), 10, 1e9, "M1", None)

    return run


def _records(database: Database) -> dict[bytes, dict[bytes, Any]]:
    """Every record of every sub-db; a message record's save date (the clock at the add)
    taken out after checking that it is a number."""
    out: dict[bytes, dict[bytes, Any]] = {}
    with database.read() as txn:
        for name in schema.SUBDBS:
            table = {bytes(key): bytes(value) for key, value in txn.prefix(name, b"")}
            if name == b"messages":
                decoded = {key: schema.load(value) for key, value in table.items()}
                for record in decoded.values():
                    assert isinstance(record.pop("savedate"), float)
                table = decoded  # type: ignore[assignment]
            out[name] = table
    return out


def test_prepared_values_write_the_same_records(twin):
    """Adding with values prepared beforehand writes, in every sub-db, exactly the records
    that adding without them writes (messages with and without a body, header block or
    attachments, UTF-8, over the header limit; one without parse results; a second label
    and a copy), and a verdict set after preparing is stored, not the prepared one."""
    plain, prepared = twin
    plain.write_sync(_deliveries(False))
    prepared.write_sync(_deliveries(True))
    records = _records(plain)
    assert records == _records(prepared)
    assert len(records[b"flags"]) == 8  # no object record for M6, which has no parse results
    assert sorted(records[b"objects"]) == [b"M1", b"M2", b"M3", b"M4", b"M5"]
    # every header block but the big one and M6's (no parse results); the copy's from M1
    assert len(records[b"headers"]) == 6
    spam = schema.load(records[b"objects"][b"M2"])["spam"]
    assert spam == spam_record(VERDICT)


def test_prepare_leaves_the_header_block_out_of_the_object(twin):
    """The prepared object record is the parse results without their header block, encoded
    as the index encodes JSON; the block itself is among the header index's values."""
    meta = message_meta(MESSAGES[0])
    values = index.prepare(meta)
    assert schema.load(values.objects) == {k: v for k, v in meta.items() if k != "header"}
    assert values.headers[1] == meta["header"]


@pytest_twisted.ensureDeferred
async def test_local_delivery_stores_the_verdict_with_prepared_values(storage):
    """Final delivery prepares the index values on the pool thread that parsed the message,
    and a verdict given by the filter before the body is in the stored object record."""
    await storage.directory.add_domain("example.org")
    await storage.directory.add_user(ALICE, "pw")
    await storage.store.create_account(ALICE)
    target = LocalDeliveryTarget(storage.store, storage.directory)
    delivery = target.start(Envelope(sender=Address("carol", "example.net"), queue_id="Q1"))
    await delivery.add_recipient(Address("alice", "example.org"))
    delivery.classified(VERDICT)
    await delivery.body(io.BytesIO(MESSAGES[0]))
    [uid] = await delivery.commit()
    inbox = storage.store.account(ALICE).folder("INBOX")
    with storage.db.read() as txn:
        record, _modseq, _flags = index.message(txn, inbox.folder_id, uid)  # type: ignore[misc]
        stored = index.object_meta(txn, record["object_id"])
    assert stored["spam"] == spam_record(VERDICT)
    assert stored["envelope"]["subject"] == "Quarterly Grüße"
