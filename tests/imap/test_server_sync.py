"""Mailbox updates between sessions: stable sequence numbers, EXPUNGE only where allowed,
flag and arrival announcements, and IDLE, against both store providers."""

from __future__ import annotations

import time

import pytest_twisted

from tests.imap.conftest import in_thread, message


async def session(server, *commands: str):
    """A raw client logged in as alice that ran ``commands`` (tags c0, c1, ...)."""

    def run():
        client = server.raw()
        client.login()
        for n, command in enumerate(commands):
            assert client.command(f"c{n}", command)[-1].startswith(f"c{n} OK")
        return client

    return await in_thread(run)


@pytest_twisted.ensureDeferred
async def test_numbers_stay_until_noop(imap_server):
    """Another session's EXPUNGE is not reported during FETCH, STORE or SEARCH: the number
    stays, the command says [EXPUNGEISSUED]; NOOP then reports it, and arrivals and flag
    changes too."""
    for subject in ("one", "two", "three"):
        await imap_server.deliver(message(subject))
    a = await session(imap_server, "ENABLE IMAP4rev2", "SELECT INBOX")
    await session(imap_server, "SELECT INBOX", "UID STORE 2 +FLAGS (\\Deleted)", "EXPUNGE",
                  "UID STORE 1 +FLAGS (\\Flagged)", "LOGOUT")  # fmt: skip
    await imap_server.deliver(message("four"))

    def dialog():
        assert a.command("a", "FETCH 1:3 (UID)") == [
            "* 1 FETCH (UID 1)",
            "* 3 FETCH (UID 3)",
            "* 1 FETCH (UID 1 FLAGS (\\Flagged))",
            "* 4 EXISTS",
            "a NO [EXPUNGEISSUED] Some of the requested messages no longer exist",
        ]
        lines = a.command("b", "SEARCH ALL")
        assert lines == ['* ESEARCH (TAG "b") ALL 1,3:4', "b OK [EXPUNGEISSUED] SEARCH completed"]
        assert a.command("c", "STORE 2 +FLAGS (\\Seen)") == [
            "c NO [EXPUNGEISSUED] Some of the requested messages no longer exist"
        ]
        assert a.command("d", "NOOP") == ["* 2 EXPUNGE", "d OK NOOP completed"]
        assert a.command("e", "FETCH 2:3 (UID)") == [
            "* 2 FETCH (UID 3)",
            "* 3 FETCH (UID 4)",
            "e OK FETCH completed",
        ]
        a.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_uid_commands_may_report_expunges(memory_imap):
    """UID FETCH may report a pending EXPUNGE, after its own data (RFC 9051 §7.4.1)."""
    for subject in ("one", "two"):
        await memory_imap.deliver(message(subject))
    a = await session(memory_imap, "SELECT INBOX")
    await session(memory_imap, "SELECT INBOX", "UID STORE 1 +FLAGS (\\Deleted)", "CLOSE")

    def dialog():
        assert a.command("a", "UID FETCH 1:* (UID)") == [
            "* 2 FETCH (UID 2)",
            "* 1 EXPUNGE",
            "a OK UID FETCH completed",
        ]
        a.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_idle_is_woken_by_another_session(imap_server):
    """An APPEND by another session reaches an idling session at once; a delivery that
    does not pass through IMAP within the poll interval (1 s); DONE ends IDLE."""
    a = await session(imap_server, "SELECT INBOX")
    await in_thread(a.send, "i IDLE\r\n")
    assert await in_thread(a.text) == "+ idling"

    def append():
        client = imap_server.imaplib()
        client.append("INBOX", None, None, message("pushed"))
        client.logout()

    started = time.monotonic()
    await in_thread(append)
    assert await in_thread(a.text) == "* 1 EXISTS"
    assert await in_thread(a.text) == "* 1 RECENT"
    assert time.monotonic() - started < 1.0
    started = time.monotonic()
    await imap_server.deliver(message("delivered"))
    assert await in_thread(a.text) == "* 2 EXISTS"
    assert time.monotonic() - started < 2.0
    assert await in_thread(a.text) == "* 2 RECENT"

    await in_thread(a.send, "DONE\r\n")
    assert await in_thread(a.until, "i") == ["i OK IDLE terminated"]
    assert await in_thread(a.command, "k", "NOOP") == ["k OK NOOP completed"]
    a.close()


@pytest_twisted.ensureDeferred
async def test_idle_reports_expunges_and_needs_done(memory_imap):
    """While idling, expunges by other sessions are reported; anything but DONE ends IDLE
    with BAD."""
    await memory_imap.deliver(message("one"))
    await memory_imap.deliver(message("two"))
    a = await session(memory_imap, "ENABLE IMAP4rev2", "SELECT INBOX")
    await in_thread(a.send, "i IDLE\r\n")
    assert await in_thread(a.text) == "+ idling"
    await session(memory_imap, "SELECT INBOX", "STORE 1 +FLAGS.SILENT (\\Deleted)", "EXPUNGE")
    line = await in_thread(a.text)
    if line.startswith("* 1 FETCH"):  # the STORE may be reported before the EXPUNGE
        assert line == "* 1 FETCH (UID 1 FLAGS (\\Deleted))"
        line = await in_thread(a.text)
    assert line == "* 1 EXPUNGE"
    await in_thread(a.send, "NOOP\r\n")
    assert await in_thread(a.until, "i") == ["i BAD Expected DONE"]
    assert await in_thread(a.command, "k", "FETCH 1 (UID)") == [
        "* 1 FETCH (UID 2)",
        "k OK FETCH completed",
    ]
    a.close()


@pytest_twisted.ensureDeferred
async def test_selected_mailbox_deleted_elsewhere(maildir_imap):
    """When another session deletes the selected mailbox, the next update says BYE."""
    a = await session(maildir_imap, "CREATE Work", "SELECT Work")
    await session(maildir_imap, "DELETE Work")

    def dialog():
        a.send("a NOOP\r\n")
        assert a.text() == "* BYE Selected mailbox no longer exists"
        assert a.closed()

    await in_thread(dialog)
