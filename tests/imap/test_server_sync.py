"""Mailbox updates between sessions: stable sequence numbers, EXPUNGE only where allowed,
flag and arrival announcements, and IDLE, against both store providers."""

from __future__ import annotations

import io
import time
from dataclasses import replace

import pytest
import pytest_twisted

from mailserver.store.local import LocalDeliveryTarget
from mailserver.testing import MemoryDeliveryTarget, MemoryDirectory, MemoryStore
from mailserver.types import Address, Envelope
from tests.imap.conftest import POLICY, in_thread, message, populate, start_imap


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


@pytest.fixture(params=["memory", "maildir"])
def no_poll_imap(request, tls_options):
    """Both providers with IDLE polling effectively off (once an hour): whatever wakes an
    idling session there is a change notice, not the poll."""
    if request.param == "memory":
        store, directory = MemoryStore(), MemoryDirectory(bcrypt_cost=4)
    else:
        storage = request.getfixturevalue("storage")
        store, directory = storage.store, storage.directory
    populate(store, directory)
    server, port = start_imap(store, directory, replace(POLICY, idle_poll=3600.0), tls_options)
    yield server
    pytest_twisted.blockon(port.stopListening())


@pytest_twisted.ensureDeferred
async def test_idle_is_woken_by_another_session_and_by_a_delivery(no_poll_imap):
    """An APPEND by another session and a delivery that does not pass through IMAP both
    reach an idling session through change notices (the poll is an hour away; the client
    socket's timeout bounds the wait); DONE ends IDLE."""
    server = no_poll_imap
    a = await session(server, "SELECT INBOX")
    await in_thread(a.send, "i IDLE\r\n")
    assert await in_thread(a.text) == "+ idling"

    def append():
        client = server.imaplib()
        client.append("INBOX", None, None, message("pushed"))
        client.logout()

    await in_thread(append)
    assert await in_thread(a.text) == "* 1 EXISTS"
    assert await in_thread(a.text) == "* 1 RECENT"
    await server.deliver(message("delivered"))
    assert await in_thread(a.text) == "* 2 EXISTS"
    assert await in_thread(a.text) == "* 2 RECENT"
    target = (MemoryDeliveryTarget(server.store, server.directory)
              if isinstance(server.store, MemoryStore)
              else LocalDeliveryTarget(server.store, server.directory))
    delivery = target.start(Envelope(sender=None, received_at=time.time()))
    await delivery.add_recipient(Address("alice", "example.org"))
    await delivery.body(io.BytesIO(message("by SMTP")))
    await delivery.commit()
    assert await in_thread(a.text) == "* 3 EXISTS"
    assert await in_thread(a.text) == "* 3 RECENT"

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


@pytest.fixture
def two_listeners(tls_options):
    """Two listeners over one memory store (as 143 and 993 are), IDLE polling an hour away."""
    store, directory = MemoryStore(), MemoryDirectory(bcrypt_cost=4)
    populate(store, directory)
    policy = replace(POLICY, idle_poll=3600.0)
    one, port_one = start_imap(store, directory, policy, tls_options)
    two, port_two = start_imap(store, directory, policy, tls_options)
    yield one, two
    pytest_twisted.blockon(port_one.stopListening())
    pytest_twisted.blockon(port_two.stopListening())


@pytest_twisted.ensureDeferred
async def test_idle_is_woken_by_flag_changes_and_expunges_from_another_listener(two_listeners):
    """A STORE and an EXPUNGE made on one listener reach a session idling on the other
    through the store's change notices."""
    one, two = two_listeners
    await one.deliver(message("first"))
    await one.deliver(message("second"))
    idler = await session(two, "SELECT INBOX")
    await in_thread(idler.send, "i IDLE\r\n")
    assert await in_thread(idler.text) == "+ idling"

    def change() -> None:
        client = one.imaplib()
        client.select("INBOX")
        client.store("1", "+FLAGS", "(\\Flagged)")
        client.store("2", "+FLAGS", "(\\Deleted)")
        client.expunge()
        client.logout()

    await in_thread(change)
    lines = [await in_thread(idler.text) for _ in range(3)]
    assert lines[0].startswith("* 1 FETCH (") and "\\Flagged" in lines[0]
    assert lines[1].startswith("* 2 FETCH (") and "\\Deleted" in lines[1]
    assert lines[2] == "* 2 EXPUNGE"
    await in_thread(idler.send, "DONE\r\n")
    assert (await in_thread(idler.until, "i"))[-1] == "i OK IDLE terminated"
    idler.close()
