"""``mailserver verify`` and ``mailserver reindex`` on the header index (issue 6): a data
directory whose header index holds texts of expunged messages beside a message without its
SEARCH texts (a partly restored index), or entries of a folder that is gone, is named by
verify with the fix, and running that fix makes verify pass."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor

from mailserver.db import Database, schema
from mailserver.message import search_text
from mailserver.store import index
from tests.cli.conftest import ALICE
from tests.cli.test_backup import fill


@pytest_twisted.ensureDeferred
async def test_verify_names_a_damaged_header_index_and_reindex_repairs_it(example):
    """Orphaned texts, a lost text and a stray folder's entries: one line each in verify's
    output (exit status 1), each with the command that repairs it; after it, OK."""
    await fill(example)
    db = Database.open(str(example.data / "index"), map_size=64 << 20, reactor=reactor)

    def damage(txn):
        fid = index.folder_id(txn, ALICE, "INBOX")
        txn.delete(b"header_text", schema.header_text_key(fid, b"F", 2))
        for tag, text in search_text.texts({"subject": "gone"}).items():
            txn.put(b"header_text", schema.header_text_key(fid, tag, 77), text)
        txn.put(b"headers", schema.msg_key(9999, 1), b"Subject: gone\r\n\r\n")

    db.write_sync(damage)
    await db.close()
    done = example("verify")
    assert done.returncode == 1
    assert done.stdout.decode().splitlines() == [
        f"index: {ALICE} INBOX: header index has 5 header_text entries of expunged messages, "
        f"1 message(s) without their SEARCH texts; run: mailserver reindex {ALICE}",
        "index: 1 header index entry of folder id 9999, which does not exist; run: mailserver "
        "reindex",
    ]
    example.ok("reindex", ALICE)
    assert example.ok("verify").endswith(": OK\n")
