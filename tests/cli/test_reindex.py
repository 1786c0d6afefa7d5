"""``mailserver reindex``: the maildir files are the truth for messages and their flags."""

from __future__ import annotations

import shutil

import pytest_twisted

from tests.cli.conftest import ALICE

MESSAGE = b"From: bob@example.net\r\nSubject: %d\r\n\r\nbody %d\r\n"


def flags_by_subject(storage, address=ALICE):
    """{subject: flags} of the messages in ``address``'s INBOX, as the index has them."""
    inbox = storage.store.account(address).folder("INBOX")
    found = {}
    for uid in inbox.uids():
        message = inbox.message(uid)
        found[message.info.envelope["subject"]] = message.info.flags
    return found


@pytest_twisted.ensureDeferred
async def test_lost_index_rebuilt_with_adopt(example):
    """After the index is deleted, 'reindex --adopt' finds the maildir again and restores
    every message with the flags in its file name."""
    cur = example.maildir() / "cur"
    (cur / "1700000001.M1P1.host:2,S").write_bytes(MESSAGE % (1, 1))
    (cur / "1700000002.M2P2.host:2,FS").write_bytes(MESSAGE % (2, 2))
    (cur / "1700000003.M3P3.host").write_bytes(MESSAGE % (3, 3))
    shutil.rmtree(example.data / "index")
    done = example("reindex", "--adopt")
    assert done.returncode == 0, done.stderr
    err = done.stderr.decode()
    assert f"adopted mailbox {ALICE}" in err
    assert f"mailserver user add {ALICE}" in err  # the users went with the index
    assert f"[1/1] {ALICE}: INBOX" in err
    assert done.stdout.decode() == (
        f"{ALICE}: 3 file(s); messages +3 -0; flags fixed 0; folders +6 -0; header index fixed 0\n"
    )
    storage = example.storage()
    try:
        assert flags_by_subject(storage) == {
            "1": frozenset({"\\Seen"}),
            "2": frozenset({"\\Flagged", "\\Seen"}),
            "3": frozenset(),
        }
        assert len(list(cur.iterdir())) == 3
    finally:
        await storage.aclose()


@pytest_twisted.ensureDeferred
async def test_file_dropped_into_cur_is_indexed(example):
    """A file dropped into a folder's cur/ is indexed by 'reindex ADDRESS' with its flags."""
    (example.maildir() / "cur" / "1700000009.M9P9.host:2,RS").write_bytes(MESSAGE % (9, 9))
    out = example.ok("reindex", ALICE)
    assert out == (
        f"{ALICE}: 1 file(s); messages +1 -0; flags fixed 0; folders +0 -0; header index fixed 0\n"
    )
    storage = example.storage()
    try:
        assert flags_by_subject(storage) == {"9": frozenset({"\\Answered", "\\Seen"})}
    finally:
        await storage.aclose()


def test_unknown_mailbox_suggests_adopt(example):
    """Reindexing an address the index does not know suggests --adopt."""
    err = example.fails("reindex", "bob@example.org")
    assert err == (
        "error: no mailbox for bob@example.org in the index; "
        "if its maildir is on disk, add --adopt\n"
    )
