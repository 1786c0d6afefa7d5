"""Snapshots of selected folders (mailserver/imap/snapshots.py): a re-SELECT of an unchanged
folder is served from what an earlier SELECT read, and never from a stale one; and STORE's
answers for messages it did and did not change, against both store providers."""

from __future__ import annotations

import re
from array import array

import pytest_twisted

from mailserver.imap.snapshots import FolderSnapshot, FolderSnapshots, key_of, state_of
from mailserver.types import FlagMode
from tests.imap.conftest import in_thread, message

# -- the cache itself ------------------------------------------------------------------------


def snapshot(state: tuple[int, int, int], count: int) -> FolderSnapshot:
    return FolderSnapshot(state, array("I", range(1, count + 1)), frozenset(), None)


def test_a_snapshot_is_returned_only_at_its_state():
    """get() answers the snapshot kept for a folder only while the folder's state is the one
    it was read at; asked at another state it answers None and drops it."""
    cache = FolderSnapshots()
    key = ("alice@example.org", "INBOX", 7, "Fabc")
    kept = snapshot((11, 10, 30), 10)
    cache.put(key, kept)
    assert cache.get(key, (11, 10, 30)) is kept
    assert cache.get(("bob@example.org", "INBOX", 7, "Fabc"), (11, 10, 30)) is None
    assert cache.get(key, (11, 10, 31)) is None
    assert len(cache) == 0 and cache.size == 0
    assert cache.get(key, (11, 10, 30)) is None


def test_the_cache_is_bounded_by_the_uids_it_holds():
    """Beyond max_bytes the least recently used snapshots go; one bigger than the bound is
    not kept (and replaces nothing); max_bytes 0 keeps nothing."""
    one = snapshot((1, 1000, 1), 1000)
    cache = FolderSnapshots(max_bytes=2 * one.weight)
    keys = [("u", f"F{n}", 1, f"M{n}") for n in range(3)]
    cache.put(keys[0], one)
    cache.put(keys[1], one)
    assert cache.get(keys[0], (1, 1000, 1)) is one  # keys[1] is now the least recent
    cache.put(keys[2], one)
    assert len(cache) == 2 and cache.size == 2 * one.weight
    assert cache.get(keys[1], (1, 1000, 1)) is None
    assert cache.get(keys[0], (1, 1000, 1)) is one
    cache.put(keys[0], snapshot((1, 5000, 1), 5000))
    assert cache.get(keys[0], (1, 1000, 1)) is None and len(cache) == 1
    empty = FolderSnapshots(max_bytes=0)
    empty.put(keys[0], one)
    assert len(empty) == 0


# -- through the server ----------------------------------------------------------------------


def without_closed(lines: list[str]) -> list[str]:
    return [line for line in lines if "[CLOSED]" not in line]


@pytest_twisted.ensureDeferred
async def test_reselect_of_an_unchanged_folder_answers_as_the_first(imap_server):
    """SELECT, EXAMINE and STATUS of a folder that did not change answer exactly as the first
    SELECT did, from the snapshot it left (the listener keeps one per folder, shared by
    sessions), and the snapshot keeps its UIDs when the sessions' views change."""
    for n in range(6):
        await imap_server.deliver(message(f"m{n}"))
    folder = imap_server.folder()
    await folder.store_flags([1, 2, 4], ["\\Seen", "$Work"], FlagMode.ADD)
    info = folder.info()

    def dialog():
        first = imap_server.raw()
        first.login()
        selected = first.command("a", "SELECT INBOX")
        assert "* OK [UNSEEN 3] First unseen" in selected
        assert "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)" in selected
        assert "* 6 EXISTS" in selected
        assert len(imap_server.factory.snapshots) == 1
        assert without_closed(first.command("b", "SELECT INBOX"))[:-1] == selected[:-1]
        examined = first.command("c", "EXAMINE INBOX")
        assert [line for line in examined if "EXISTS" in line or "UNSEEN" in line] == [
            "* 6 EXISTS",
            "* OK [UNSEEN 3] First unseen",
        ]
        second = imap_server.raw()
        second.login()
        assert second.command("d", "SELECT INBOX")[:-1] == selected[:-1]
        assert second.command("e", "STATUS INBOX (MESSAGES RECENT UNSEEN)")[0] == (
            "* STATUS INBOX (MESSAGES 6 RECENT 0 UNSEEN 3)"
        )
        # The second session expunges in its own view; the snapshot is not that view.
        second.command("f", "STORE 2 +FLAGS (\\Deleted)")
        assert second.command("g", "EXPUNGE")[:1] == ["* 2 EXPUNGE"]
        first.close()
        second.close()

    await in_thread(dialog)
    snapshots = imap_server.factory.snapshots
    key = key_of("alice@example.org", "INBOX", info)
    kept = snapshots.get(key, state_of(info))
    assert kept is not None and list(kept.uids) == [1, 2, 3, 4, 5, 6]  # views are copies
    assert snapshots.get(key, state_of(folder.info())) is None  # the folder changed since


@pytest_twisted.ensureDeferred
async def test_reselect_after_changes_elsewhere_sees_them(imap_server):
    """After a delivery, another session's flag change (with a new keyword) and another
    session's expunge, a SELECT of the folder reports the folder as it now is, never the
    snapshot an earlier SELECT left."""
    for n in range(4):
        await imap_server.deliver(message(f"m{n}"))

    def exists_unseen_flags(lines: list[str]) -> tuple[str, ...]:
        wanted = re.compile(r"\* (\d+ EXISTS|OK \[UNSEEN \d+\].*|OK \[UIDNEXT \d+\].*|FLAGS .*)")
        return tuple(line for line in lines if wanted.fullmatch(line))

    def select(client, tag):
        return exists_unseen_flags(client.command(tag, "SELECT INBOX"))

    watcher = await in_thread(imap_server.raw)
    other = await in_thread(imap_server.raw)
    await in_thread(watcher.login)
    await in_thread(other.login)
    assert await in_thread(select, watcher, "a") == (
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
        "* 4 EXISTS",
        "* OK [UNSEEN 1] First unseen",
        "* OK [UIDNEXT 5] Predicted next UID",
    )
    await imap_server.deliver(message("late"))
    assert await in_thread(select, watcher, "b") == (
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
        "* 5 EXISTS",
        "* OK [UNSEEN 1] First unseen",
        "* OK [UIDNEXT 6] Predicted next UID",
    )

    def elsewhere():
        other.command("c", "SELECT INBOX")
        other.command("d", "STORE 1:2 +FLAGS ($Later \\Seen)")
        other.command("e", "STORE 4 +FLAGS (\\Deleted)")
        other.command("f", "EXPUNGE")

    await in_thread(elsewhere)
    assert await in_thread(select, watcher, "g") == (
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Later)",
        "* 4 EXISTS",
        "* OK [UNSEEN 3] First unseen",
        "* OK [UIDNEXT 6] Predicted next UID",
    )
    assert await in_thread(watcher.command, "h", "UID SEARCH ALL") == [
        "* SEARCH 1 2 3 5",
        "h OK UID SEARCH completed",
    ]
    await in_thread(watcher.close)
    await in_thread(other.close)


@pytest_twisted.ensureDeferred
async def test_store_answers_changed_and_unchanged_messages(imap_server):
    """STORE 1:* answers every message with its flags after the store, whether it changed
    (its new flags, the command's new MODSEQ) or already had them (its flags and MODSEQ as
    they were), for unchanged messages in runs and scattered alike; FETCH agrees after."""
    for n in range(12):
        await imap_server.deliver(message(f"m{n}"))
    folder = imap_server.folder()
    await folder.store_flags([2, 3, 11, 12], ["\\Flagged"], FlagMode.ADD)  # two runs
    await folder.store_flags([3], ["$Work"], FlagMode.ADD)
    modseqs = {info.uid: info.modseq for info in folder.flags()}

    def dialog():
        client = imap_server.raw()
        client.login()
        client.command("a", "SELECT INBOX (CONDSTORE)")
        stored = client.command("b", "STORE 1:* +FLAGS (\\Flagged)")
        assert stored[-1] == "b OK STORE completed"
        new = int(re.search(r"MODSEQ \((\d+)\)", stored[0]).group(1))
        assert new > max(modseqs.values())
        expected = []
        for uid in range(1, 13):
            flags = "\\Flagged $Work" if uid == 3 else "\\Flagged"
            modseq = modseqs[uid] if uid in (2, 3, 11, 12) else new
            expected.append(f"* {uid} FETCH (FLAGS ({flags}) MODSEQ ({modseq}))")
        assert stored[:-1] == expected
        fetched = client.command("c", "FETCH 1:* (FLAGS MODSEQ)")
        assert fetched[:-1] == expected
        # Scattered: every other message already without the flag.
        client.command("d", "STORE 2,4,6,8,10,12 -FLAGS.SILENT (\\Flagged)")
        stored = client.command("e", "UID STORE 1:* -FLAGS (\\Flagged)")
        assert [re.sub(r" MODSEQ \(\d+\)", "", line) for line in stored[:-1]] == [
            f"* {uid} FETCH (FLAGS ({'$Work' if uid == 3 else ''}) UID {uid})"
            for uid in range(1, 13)
        ]
        fetched = client.command("f", "FETCH 1:* (FLAGS UID MODSEQ)")
        assert fetched[:-1] == stored[:-1]
        client.close()

    await in_thread(dialog)
