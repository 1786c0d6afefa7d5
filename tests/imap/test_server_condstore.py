"""CONDSTORE and QRESYNC (RFC 7162) against both store providers: raw dialogs with exact
responses, and imaplib.

Modseqs are predictable: a new folder's HIGHESTMODSEQ is 1 and every append, flag change
(one modseq per command) and expunge (one per command) raises it by one. Five deliveries
give the messages modseqs 2..6 and the folder HIGHESTMODSEQ 6.
"""

from __future__ import annotations

import re

import pytest
import pytest_twisted

from mailserver.store import index
from tests.imap.conftest import in_thread, message


async def deliver(server, count: int = 5) -> list[int]:
    return [await server.deliver(message(f"m{n}")) for n in range(count)]


async def session(server, *commands: str):
    """A raw client logged in as alice that ran ``commands`` (tags c0, c1, ...)."""

    def run():
        client = server.raw()
        client.login()
        for n, command in enumerate(commands):
            assert client.command(f"c{n}", command)[-1].startswith(f"c{n} OK"), command
        return client

    return await in_thread(run)


def uidvalidity(lines: list[str]) -> int:
    for line in lines:
        found = re.fullmatch(r"\* OK \[UIDVALIDITY (\d+)\] .*", line)
        if found:
            return int(found.group(1))
    raise AssertionError(lines)


# -- CONDSTORE (RFC 7162 §3.1) -----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_capabilities_and_enable(imap_server):
    """CONDSTORE and QRESYNC are advertised and ENABLE-able; ENABLE lists only what it newly
    enabled, and unknown names are ignored."""

    def dialog():
        client = imap_server.raw()
        caps = client.command("a", "CAPABILITY")[0].split()
        assert "CONDSTORE" in caps and "QRESYNC" in caps
        client.login()
        assert client.command("b", "ENABLE CONDSTORE X-UNKNOWN") == [
            "* ENABLED CONDSTORE",
            "b OK ENABLE completed",
        ]
        assert client.command("c", "ENABLE QRESYNC CONDSTORE") == [
            "* ENABLED QRESYNC",
            "c OK ENABLE completed",
        ]
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_select_and_status_report_highestmodseq(imap_server):
    """SELECT and EXAMINE answer OK [HIGHESTMODSEQ n] (never NOMODSEQ: every folder has
    modseqs), with or without (CONDSTORE), which turns MODSEQ on in FETCH; STATUS
    (HIGHESTMODSEQ) gives the same value and follows changes."""
    await deliver(imap_server, 2)

    def dialog():
        client = imap_server.raw()
        client.login()
        for tag, command in (("a", "SELECT INBOX"), ("b", "EXAMINE INBOX (CONDSTORE)")):
            lines = client.command(tag, command)
            assert "* OK [HIGHESTMODSEQ 3] Highest" in lines
            assert not any("NOMODSEQ" in line for line in lines)
        assert client.command("f", "FETCH 2 (FLAGS)") == [  # (CONDSTORE) enabled it
            "* 2 FETCH (FLAGS () MODSEQ (3))",
            "f OK FETCH completed",
        ]
        client.command("c", "SELECT Archive (CONDSTORE)")
        assert client.command("d", "STATUS INBOX (HIGHESTMODSEQ MESSAGES)") == [
            "* STATUS INBOX (HIGHESTMODSEQ 3 MESSAGES 2)",
            "d OK STATUS completed",
        ]
        other = imap_server.raw()
        other.login()
        other.command("s", "SELECT INBOX")
        other.command("t", "STORE 1 +FLAGS.SILENT (\\Seen)")
        other.close()
        assert client.command("e", "STATUS INBOX (HIGHESTMODSEQ)") == [
            "* STATUS INBOX (HIGHESTMODSEQ 4)",
            "e OK STATUS completed",
        ]
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_fetch_modseq_and_changedsince(imap_server):
    """FETCH MODSEQ answers MODSEQ (n); (CHANGEDSINCE n) keeps only the messages changed
    after n and adds MODSEQ; from then on FLAGS come with MODSEQ."""
    await deliver(imap_server, 3)

    def dialog():
        client = imap_server.raw()
        client.login()
        client.command("s", "SELECT INBOX")
        assert client.command("a", "FETCH 1:2 (FLAGS)") == [
            "* 1 FETCH (FLAGS ())",
            "* 2 FETCH (FLAGS ())",
            "a OK FETCH completed",
        ]
        assert client.command("b", "FETCH 2 (MODSEQ)") == [
            "* 2 FETCH (MODSEQ (3))",
            "b OK FETCH completed",
        ]
        client.command("c", "STORE 2 +FLAGS.SILENT ($Work)")
        assert client.command("d", "FETCH 1:* (FLAGS) (CHANGEDSINCE 3)") == [
            "* 2 FETCH (FLAGS ($Work) MODSEQ (5))",
            "* 3 FETCH (FLAGS () MODSEQ (4))",
            "d OK FETCH completed",
        ]
        assert client.command("e", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 4)") == [
            "* 2 FETCH (UID 2 FLAGS ($Work) MODSEQ (5))",
            "e OK UID FETCH completed",
        ]
        assert client.command("f", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 5)") == [
            "f OK UID FETCH completed"
        ]
        assert client.command("g", "FETCH 1 (FLAGS)") == [
            "* 1 FETCH (FLAGS () MODSEQ (2))",
            "g OK FETCH completed",
        ]
        assert client.command("h", "FETCH 1 (BODY[HEADER.FIELDS (SUBJECT)])") == [
            "* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {15}\r\nSubject: m0\r\n\r\n"
            " FLAGS (\\Seen) MODSEQ (6))",
            "h OK FETCH completed",
        ]
        assert client.command("i", "FETCH 1 (FLAGS) (CHANGEDSINCE x)")[-1].startswith("i BAD ")
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_store_unchangedsince(imap_server):
    """STORE (UNCHANGEDSINCE n) changes only messages not modified after n; the others are
    named in OK [MODIFIED ...] (sequence numbers, or UIDs for UID STORE) and left alone;
    changed messages are reported with MODSEQ even with .SILENT; UNCHANGEDSINCE 0 always
    fails (RFC 7162 §3.1.3)."""
    await deliver(imap_server, 3)

    def dialog():
        client = imap_server.raw()
        client.login()
        client.command("s", "SELECT INBOX")
        other = imap_server.raw()
        other.login()
        other.command("s", "SELECT INBOX")
        other.command("t", "STORE 2 +FLAGS.SILENT (\\Flagged)")  # message 2 now at modseq 5
        other.close()
        assert client.command("a", "STORE 1:3 (UNCHANGEDSINCE 4) +FLAGS.SILENT (\\Seen)") == [
            "* 1 FETCH (MODSEQ (6))",
            "* 3 FETCH (MODSEQ (6))",
            "* 2 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ (5))",
            "a OK [MODIFIED 2] Conditional STORE failed",
        ]
        assert client.command("b", "UID STORE 1:3 (UNCHANGEDSINCE 5) -FLAGS (\\Seen)") == [
            "* 2 FETCH (FLAGS (\\Flagged) UID 2 MODSEQ (5))",
            "b OK [MODIFIED 1,3] Conditional STORE failed",
        ]
        assert client.command("c", "STORE 1:3 (UNCHANGEDSINCE 0) +FLAGS (\\Deleted)") == [
            "c OK [MODIFIED 1:3] Conditional STORE failed"
        ]
        assert client.command("d", "UID STORE 1,3 (UNCHANGEDSINCE 6) FLAGS ($Done)") == [
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Done)",
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Done \\*)]"
            " Flags permitted",
            "* 1 FETCH (FLAGS ($Done) UID 1 MODSEQ (7))",
            "* 3 FETCH (FLAGS ($Done) UID 3 MODSEQ (7))",
            "d OK UID STORE completed",
        ]
        assert client.command("e", "STORE 1 (UNCHANGEDSINCE) FLAGS (x)")[-1].startswith("e BAD ")
        client.close()

    await in_thread(dialog)
    flags = {f.uid: f.flags for f in imap_server.folder().flags()}
    assert flags == {1: {"$Done"}, 2: {"\\Flagged"}, 3: {"$Done"}}


@pytest_twisted.ensureDeferred
async def test_unsolicited_fetch_carries_uid_and_modseq(imap_server):
    """Once CONDSTORE is enabled, a flag change by another session is reported with UID and
    MODSEQ (RFC 7162 §3.1); without it, with UID and FLAGS only."""
    await deliver(imap_server, 2)
    plain = await session(imap_server, "ENABLE IMAP4rev2", "SELECT INBOX")
    condstore = await session(imap_server, "ENABLE IMAP4rev2 CONDSTORE", "SELECT INBOX")
    await session(imap_server, "SELECT INBOX", "STORE 2 +FLAGS.SILENT (\\Answered)")
    assert await in_thread(condstore.command, "a", "NOOP") == [
        "* 2 FETCH (UID 2 FLAGS (\\Answered) MODSEQ (4))",
        "a OK NOOP completed",
    ]
    assert await in_thread(plain.command, "a", "NOOP") == [
        "* 2 FETCH (UID 2 FLAGS (\\Answered))",
        "a OK NOOP completed",
    ]
    condstore.close()
    plain.close()


@pytest_twisted.ensureDeferred
async def test_search_modseq(imap_server):
    """SEARCH MODSEQ n finds messages whose modseq is at least n and ends with (MODSEQ m),
    the highest of them; ESEARCH gives MODSEQ m; no match gives no MODSEQ; the entry name
    and type are accepted (RFC 7162 §3.1.5)."""
    await deliver(imap_server, 4)

    def dialog():
        client = imap_server.raw()
        client.login()
        client.command("s", "SELECT INBOX")
        client.command("t", "STORE 2 +FLAGS.SILENT (\\Draft)")  # modseq 6
        assert client.command("a", "SEARCH MODSEQ 4") == [
            "* SEARCH 2 3 4 (MODSEQ 6)",
            "a OK SEARCH completed",
        ]
        assert client.command("b", 'UID SEARCH MODSEQ "/flags/\\\\draft" all 6') == [
            "* SEARCH 2 (MODSEQ 6)",
            "b OK UID SEARCH completed",
        ]
        assert client.command("c", "SEARCH MODSEQ 7") == ["* SEARCH", "c OK SEARCH completed"]
        assert client.command("d", "SEARCH RETURN (ALL COUNT) MODSEQ 3 NOT DRAFT") == [
            '* ESEARCH (TAG "d") ALL 3:4 COUNT 2 MODSEQ 5',
            "d OK SEARCH completed",
        ]
        assert client.command("e", "SEARCH RETURN (MIN) MODSEQ 3") == [
            '* ESEARCH (TAG "e") MIN 2 MODSEQ 6',
            "e OK SEARCH completed",
        ]
        assert client.command("f", "SEARCH MODSEQ x")[-1].startswith("f BAD ")
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_imaplib_condstore(imap_server):
    """imaplib drives CONDSTORE: ENABLE, STATUS (HIGHESTMODSEQ), SELECT, UID FETCH with
    CHANGEDSINCE and UID STORE with UNCHANGEDSINCE."""
    await deliver(imap_server, 2)

    def dialog():
        client = imap_server.imaplib()
        assert client.enable("CONDSTORE")[0] == "OK"
        status = client.status("INBOX", "(HIGHESTMODSEQ)")
        assert status == ("OK", [b"INBOX (HIGHESTMODSEQ 3)"])
        client.select("INBOX")
        assert client.response("HIGHESTMODSEQ") == ("HIGHESTMODSEQ", [b"3"])
        typ, data = client.uid("STORE", "2", "(UNCHANGEDSINCE 3) +FLAGS (\\Seen)")
        assert typ == "OK" and data == [b"2 (FLAGS (\\Seen) UID 2 MODSEQ (4))"]
        typ, data = client.uid("STORE", "1", "(UNCHANGEDSINCE 2) +FLAGS (\\Seen)")
        assert typ == "OK" and data == [b"1 (FLAGS (\\Seen) UID 1 MODSEQ (5))"]
        typ, data = client.uid("STORE", "1", "(UNCHANGEDSINCE 2) -FLAGS (\\Seen)")
        assert typ == "OK" and client.response("MODIFIED") == ("MODIFIED", [b"1"])
        typ, data = client.uid("FETCH", "1:*", "(FLAGS) (CHANGEDSINCE 4)")
        assert typ == "OK" and data == [b"1 (UID 1 FLAGS (\\Seen) MODSEQ (5))"]
        client.logout()

    await in_thread(dialog)


# -- QRESYNC (RFC 7162 §3.2) --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_select_qresync_reports_vanished_and_changes(imap_server):
    """SELECT ... (QRESYNC (uidvalidity modseq)) needs ENABLE QRESYNC (else BAD); it reports
    the UIDs expunged since as VANISHED (EARLIER) and the messages changed since as FETCH
    (UID FLAGS MODSEQ); known UIDs limit both, as in Dovecot; another UIDVALIDITY gets a
    plain SELECT;
    the mailbox it replaces is closed with OK [CLOSED]."""
    await deliver(imap_server, 5)

    def dialog():
        client = imap_server.raw()
        client.login()
        assert client.command("a", "SELECT INBOX (QRESYNC (1 1))") == [
            "a BAD QRESYNC must be enabled first (ENABLE QRESYNC)"
        ]
        client.command("b", "ENABLE QRESYNC")
        lines = client.command("c", "SELECT INBOX")
        assert "* OK [HIGHESTMODSEQ 6] Highest" in lines
        valid = uidvalidity(lines)
        client.command("d", "UNSELECT")
        other = imap_server.raw()
        other.login()
        other.command("s", "SELECT INBOX")
        other.command("t", "STORE 2,4 +FLAGS.SILENT (\\Deleted)")  # 7
        other.command("u", "EXPUNGE")  # 8
        other.command("v", "STORE 1 +FLAGS.SILENT (\\Flagged)")  # 9
        other.close()
        lines = client.command("e", f"SELECT INBOX (QRESYNC ({valid} 6))")
        assert lines[-1] == "e OK [READ-WRITE] SELECT completed"
        assert "* OK [HIGHESTMODSEQ 9] Highest" in lines
        assert lines[-3:-1] == [
            "* VANISHED (EARLIER) 2,4",
            "* 1 FETCH (UID 1 FLAGS (\\Flagged) MODSEQ (9))",
        ]
        lines = client.command("f", f"EXAMINE INBOX (QRESYNC ({valid} 8 1:3))")
        assert lines[0] == "* OK [CLOSED] Previous mailbox is now closed"
        assert lines[-2:] == [
            "* 1 FETCH (UID 1 FLAGS (\\Flagged) MODSEQ (9))",
            "f OK [READ-ONLY] EXAMINE completed",
        ]
        assert not any("VANISHED" in line for line in lines)
        lines = client.command("g", f"SELECT INBOX (QRESYNC ({valid} 1 3:5 (1:3 1,3,5)))")
        assert "* VANISHED (EARLIER) 4" in lines
        assert [line for line in lines if "FETCH" in line] == [  # not UID 1: not known
            "* 2 FETCH (UID 3 FLAGS () MODSEQ (4))",
            "* 3 FETCH (UID 5 FLAGS () MODSEQ (6))",
        ]
        lines = client.command("h", f"SELECT INBOX (QRESYNC ({valid + 1} 1))")
        assert not any("VANISHED" in line or "FETCH" in line for line in lines)
        assert "* 3 EXISTS" in lines
        assert client.command("i", "SELECT INBOX (QRESYNC (1))")[-1].startswith("i BAD ")
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_uid_fetch_vanished(imap_server):
    """UID FETCH ... (CHANGEDSINCE n VANISHED) first reports the set's UIDs expunged since n
    as VANISHED (EARLIER), then the changed messages; it needs ENABLE QRESYNC and UID FETCH
    (RFC 7162 §3.2.6)."""
    await deliver(imap_server, 4)

    def dialog():
        client = imap_server.raw()
        client.login()
        client.command("s", "SELECT INBOX")
        assert client.command("a", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)") == [
            "a BAD VANISHED needs ENABLE QRESYNC first"
        ]
        assert client.command("b", "FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")[-1].startswith(
            "b BAD "
        )
        client.command("c", "UNSELECT")
        client.command("d", "ENABLE QRESYNC")
        client.command("e", "SELECT INBOX")
        client.command("f", "UID STORE 1,4 +FLAGS.SILENT (\\Deleted)")  # 6
        client.command("g", "UID EXPUNGE 4")  # 7
        client.command("h", "UID STORE 2 +FLAGS.SILENT ($Later)")  # 8
        assert client.command("i", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 5 VANISHED)") == [
            "* VANISHED (EARLIER) 4",
            "* 1 FETCH (UID 1 FLAGS (\\Deleted) MODSEQ (6))",
            "* 2 FETCH (UID 2 FLAGS ($Later) MODSEQ (8))",
            "i OK UID FETCH completed",
        ]
        assert client.command("j", "UID FETCH 1:3 (FLAGS) (CHANGEDSINCE 7 VANISHED)") == [
            "* 2 FETCH (UID 2 FLAGS ($Later) MODSEQ (8))",
            "j OK UID FETCH completed",
        ]
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_expunges_are_vanished_after_enable_qresync(imap_server):
    """After ENABLE QRESYNC expunges are reported as VANISHED uid-set, never EXPUNGE, both
    this session's and another's, and EXPUNGE ends with OK [HIGHESTMODSEQ n]; MOVE too.
    Every FETCH response carries UID (and MODSEQ with the flags), even for STORE and FETCH
    by sequence number."""
    await deliver(imap_server, 5)
    a = await session(imap_server, "ENABLE QRESYNC", "SELECT INBOX")

    def dialog():
        assert a.command("a", "STORE 1,3 +FLAGS.SILENT (\\Deleted)") == [
            "* 1 FETCH (UID 1 MODSEQ (7))",  # with QRESYNC every FETCH has UID and MODSEQ
            "* 3 FETCH (UID 3 MODSEQ (7))",
            "a OK STORE completed",
        ]
        assert a.command("b", "EXPUNGE") == [
            "* VANISHED 1,3",
            "b OK [HIGHESTMODSEQ 8] EXPUNGE completed",
        ]
        other = imap_server.raw()
        other.login()
        other.command("s", "SELECT INBOX")
        other.command("t", "UID STORE 5 +FLAGS.SILENT (\\Deleted)")
        other.command("u", "UID EXPUNGE 5")
        other.close()
        assert a.command("c", "FETCH 1:* (UID)") == [
            "* 1 FETCH (UID 2)",
            "* 2 FETCH (UID 4)",
            "c NO [EXPUNGEISSUED] Some of the requested messages no longer exist",
        ]
        assert a.command("d", "NOOP") == ["* VANISHED 5", "d OK NOOP completed"]
        assert a.command("d2", "FETCH 2 (FLAGS)") == [
            "* 2 FETCH (UID 4 FLAGS () MODSEQ (5))",
            "d2 OK FETCH completed",
        ]
        lines = a.command("e", "UID MOVE 2 Archive")
        assert lines[1:] == ["* VANISHED 2", "e OK UID MOVE completed"]
        a.command("f", "UID STORE 4 +FLAGS.SILENT (\\Deleted)")
        assert a.command("g", "UID EXPUNGE 4") == [
            "* VANISHED 4",
            "g OK [HIGHESTMODSEQ 13] UID EXPUNGE completed",
        ]
        a.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_idle_reports_vanished(imap_server):
    """While idling, a QRESYNC session hears of another session's expunge as VANISHED."""
    await deliver(imap_server, 2)
    a = await session(imap_server, "ENABLE QRESYNC", "SELECT INBOX")
    await in_thread(a.send, "i IDLE\r\n")
    assert await in_thread(a.text) == "+ idling"
    await session(imap_server, "SELECT INBOX", "UID STORE 1 +FLAGS.SILENT (\\Deleted)",
                  "UID EXPUNGE 1")  # fmt: skip
    line = await in_thread(a.text)
    if line.startswith("* 1 FETCH"):  # the STORE may be reported before the expunge
        assert line == "* 1 FETCH (UID 1 FLAGS (\\Deleted) MODSEQ (4))"
        line = await in_thread(a.text)
    assert line == "* VANISHED 1"
    await in_thread(a.send, "DONE\r\n")
    assert await in_thread(a.until, "i") == ["i OK IDLE terminated"]
    a.close()


@pytest_twisted.ensureDeferred
async def test_full_resync_when_tombstones_were_pruned(maildir_imap, storage):
    """When the store pruned the expunge records a client needs, SELECT (QRESYNC) reports
    every UID below UIDNEXT (within the known UIDs) that is not in the mailbox, a full
    resynchronisation (RFC 7162 §3.2.5.2), narrowed by the client's sequence match data;
    later expunges are exact again."""
    await deliver(maildir_imap, 6)
    inbox = maildir_imap.folder()
    await inbox.expunge([2, 3])
    await storage.db.write(
        lambda txn: index.remove_messages(txn, index.folder(txn, inbox.folder_id), [5], keep=0)
    )
    assert inbox.expunged_since(7) is None
    mark = inbox.info().highestmodseq

    def dialog():
        client = maildir_imap.raw()
        client.login()
        client.command("a", "ENABLE QRESYNC")
        valid = uidvalidity(client.command("b", "EXAMINE INBOX"))
        lines = client.command("c", f"EXAMINE INBOX (QRESYNC ({valid} 7))")
        assert "* VANISHED (EARLIER) 2:3,5" in lines
        lines = client.command("d", f"EXAMINE INBOX (QRESYNC ({valid} 7 4:6))")
        assert "* VANISHED (EARLIER) 5" in lines
        lines = client.command("e", f"EXAMINE INBOX (QRESYNC ({valid} {mark}))")
        assert not any("VANISHED" in line for line in lines)
        # The client's message 2 is UID 4 here too: nothing below UID 4 can be news to it.
        lines = client.command("f", f"EXAMINE INBOX (QRESYNC ({valid} 7 1:6 (1:2 1,4)))")
        assert "* VANISHED (EARLIER) 5" in lines
        lines = client.command("g", f"EXAMINE INBOX (QRESYNC ({valid} 7 1:6 (1:2 1,5)))")
        assert "* VANISHED (EARLIER) 2:3,5" in lines  # (2, 5) does not hold: no help
        lines = client.command("h", f"EXAMINE INBOX (QRESYNC ({valid} 7 1:6 (1:3 1,4)))")
        assert "* VANISHED (EARLIER) 2:3,5" in lines  # sets of unequal length are ignored
        client.close()

    await in_thread(dialog)
    await inbox.expunge([6])
    assert inbox.expunged_since(mark) == [6]


@pytest.mark.parametrize(
    "command",
    [
        "SELECT INBOX (QRESYNC (1 2 1:*))",
        "SELECT INBOX (CONDSTORE CONDSTORE)",
        "UID FETCH 1 (FLAGS) (VANISHED)",
        "STORE 1 (UNCHANGEDSINCE -1) +FLAGS (x)",
        "UID FETCH 1 (FLAGS) (CHANGEDSINCE 9223372036854775808)",
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_arguments_are_refused(memory_imap, command):
    """Malformed CONDSTORE/QRESYNC arguments get BAD and the session goes on."""
    await deliver(memory_imap, 1)

    def dialog():
        client = memory_imap.raw()
        client.login()
        client.command("s", "ENABLE QRESYNC")
        client.command("t", "SELECT INBOX")
        assert client.command("a", command)[-1].startswith("a BAD ")
        assert client.command("b", "NOOP") == ["b OK NOOP completed"]
        client.close()

    await in_thread(dialog)
