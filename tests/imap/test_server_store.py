"""STORE, COPY, MOVE, EXPUNGE, UID EXPUNGE and CLOSE, against both store providers."""

from __future__ import annotations

import pytest_twisted

from tests.imap.conftest import in_thread, message


async def three(server) -> None:
    for subject in ("one", "two", "three"):
        await server.deliver(message(subject))


@pytest_twisted.ensureDeferred
async def test_store_flags(imap_server):
    """+FLAGS, -FLAGS and FLAGS answer each message's flags (with UID for UID STORE);
    .SILENT answers nothing; a new keyword is announced with FLAGS and PERMANENTFLAGS;
    \\Recent cannot be set."""
    await three(imap_server)

    def dialog():
        client = imap_server.raw()
        client.login()
        client.command("s", "SELECT INBOX")
        assert client.command("a", "STORE 1:2 +FLAGS (\\Seen \\Recent)") == [
            "* 1 FETCH (FLAGS (\\Seen))",
            "* 2 FETCH (FLAGS (\\Seen))",
            "a OK STORE completed",
        ]
        assert client.command("b", "UID STORE 2 -FLAGS.SILENT (\\Seen)") == [
            "b OK UID STORE completed"
        ]
        assert client.command("c", "STORE 3 FLAGS ($Todo \\Flagged)") == [
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Todo)",
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Todo \\*)]"
            " Flags permitted",
            "* 3 FETCH (FLAGS (\\Flagged $Todo))",
            "c OK STORE completed",
        ]
        assert client.command("d", "UID STORE 1:* -FLAGS (\\Seen)") == [
            "* 1 FETCH (FLAGS () UID 1)",
            "* 2 FETCH (FLAGS () UID 2)",
            "* 3 FETCH (FLAGS (\\Flagged $Todo) UID 3)",
            "d OK UID STORE completed",
        ]
        assert client.command("e", "STORE 4 +FLAGS (\\Seen)") == [
            "e BAD Invalid message sequence number (the mailbox has 3)"
        ]
        client.command("f", "EXAMINE INBOX")
        assert client.command("g", "STORE 1 +FLAGS (\\Seen)") == [
            "g NO [READ-ONLY] The mailbox is selected read-only (EXAMINE)"
        ]
        client.close()

    await in_thread(dialog)
    flags = {f.uid: f.flags for f in imap_server.folder().flags()}
    assert flags == {1: frozenset(), 2: frozenset(), 3: frozenset({"\\Flagged", "$Todo"})}


@pytest_twisted.ensureDeferred
async def test_expunge_reports_numbers_highest_first(imap_server):
    """EXPUNGE removes every \\Deleted message and reports each removal with a number that
    is valid when the client reads it; UID EXPUNGE removes only the \\Deleted ones of its
    set (RFC 4315)."""
    for n in range(5):
        await imap_server.deliver(message(f"m{n}"))

    def dialog():
        client = imap_server.raw()
        client.login()
        client.command("s", "SELECT INBOX")
        client.command("a", "STORE 2,4,5 +FLAGS.SILENT (\\Deleted)")
        assert client.command("b", "UID EXPUNGE 1:4") == [
            "* 4 EXPUNGE",
            "* 2 EXPUNGE",
            "b OK UID EXPUNGE completed",
        ]
        assert client.command("c", "UID SEARCH ALL") == [
            "* SEARCH 1 3 5",
            "c OK UID SEARCH completed",
        ]
        assert client.command("d", "EXPUNGE") == ["* 3 EXPUNGE", "d OK EXPUNGE completed"]
        assert client.command("e", "EXPUNGE") == ["e OK EXPUNGE completed"]
        client.close()

    await in_thread(dialog)
    assert list(imap_server.folder().uids()) == [1, 3]


@pytest_twisted.ensureDeferred
async def test_copy_and_move(imap_server):
    """COPY answers OK [COPYUID]; MOVE sends COPYUID in an untagged OK before the EXPUNGE
    responses; a missing target is NO [TRYCREATE]."""
    await three(imap_server)
    trash = imap_server.folder("Trash").info().uidvalidity
    archive = imap_server.folder("Archive").info().uidvalidity

    def dialog():
        client = imap_server.raw()
        client.login()
        client.command("s", "SELECT INBOX")
        assert client.command("a", "COPY 2:3 Archive") == [
            f"a OK [COPYUID {archive} 2:3 1:2] COPY completed"
        ]
        assert client.command("b", "UID MOVE 1,3 Trash") == [
            f"* OK [COPYUID {trash} 1,3 1:2] Moved",
            "* 3 EXPUNGE",
            "* 1 EXPUNGE",
            "b OK UID MOVE completed",
        ]
        assert client.command("c", "MOVE 1 Nowhere") == [
            "c NO [TRYCREATE] The target mailbox does not exist"
        ]
        assert client.command("d", "UID COPY 99 Archive") == ["d OK COPY completed (no messages)"]
        assert client.command("e", "FETCH 1 (UID)") == ["* 1 FETCH (UID 2)", "e OK FETCH completed"]
        client.close()

    await in_thread(dialog)
    subjects = []
    for uid in imap_server.folder("Trash").uids():
        subjects.append(imap_server.folder("Trash").message(uid).info.envelope["subject"])
    assert subjects == ["one", "three"]
    assert len(list(imap_server.folder("Archive").uids())) == 2


@pytest_twisted.ensureDeferred
async def test_close_expunges_silently_unselect_does_not(imap_server):
    """CLOSE removes \\Deleted messages without EXPUNGE responses; UNSELECT removes none."""
    await three(imap_server)

    def dialog():
        client = imap_server.raw()
        client.login()
        client.command("s", "SELECT INBOX")
        client.command("a", "STORE 1 +FLAGS.SILENT (\\Deleted)")
        assert client.command("b", "UNSELECT") == ["b OK UNSELECT completed"]
        client.command("t", "SELECT INBOX")
        client.command("c", "STORE 2 +FLAGS.SILENT (\\Deleted)")
        assert client.command("d", "CLOSE") == ["d OK CLOSE completed"]
        assert client.command("e", "FETCH 1 FLAGS") == ["e BAD No mailbox selected"]
        client.close()

    await in_thread(dialog)
    assert list(imap_server.folder().uids()) == [3]
