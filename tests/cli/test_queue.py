"""``mailserver queue``: list, show, retry, delete, hold, release and flush on the spool.

Messages are queued in-process through the spool's delivery transaction, the index is
closed, then the real command runs as a subprocess; the effects are checked by opening the
index again.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import replace
from io import BytesIO

import pytest_twisted
from twisted.internet import reactor

from mailserver.cli.main import main
from mailserver.spool.queue import LmdbSpool
from mailserver.types import Address, Envelope, QueuedRecipient, RecipientState
from tests.cli.conftest import Cli
from tests.conftest import Storage

MESSAGE = b"From: a@example.org\r\nTo: x@remote.test\r\nSubject: queued\r\n\r\nbody\r\n"
HOUR = 3600.0
SENDER = Address("a", "example.org")


def open_spool(cli: Cli) -> tuple[Storage, LmdbSpool]:
    """The data directory's index and the server's spool on it (``<data>/spool``)."""
    storage = cli.storage()
    return storage, LmdbSpool(storage.db, str(cli.data / "spool"), reactor, fsync=False)


async def enqueue(
    spool: LmdbSpool,
    recipients: tuple[str, ...] = ("x@remote.test",),
    sender: Address | None = SENDER,
) -> str:
    """Queue MESSAGE from ``sender`` to ``recipients`` (each with NOTIFY and ORCPT)."""
    envelope = Envelope(
        sender=sender, params={"RET": "HDRS", "ENVID": "env-1"}, authenticated_as="a@example.org"
    )
    delivery = spool.start(envelope)
    for recipient in recipients:
        local, domain = recipient.split("@")
        await delivery.add_recipient(
            Address(local, domain), {"NOTIFY": "FAILURE", "ORCPT": f"rfc822;{recipient}"}
        )
    await delivery.body(BytesIO(MESSAGE))
    return await delivery.commit()


async def defer(spool: LmdbSpool, queue_id: str, address: str, reply: str, later: float) -> None:
    """Record one failed attempt for ``address`` and schedule the next ``later`` seconds on."""
    now = time.time()
    [recipient] = [r for r in spool.get(queue_id).recipients if r.address == address]
    deferred = replace(
        recipient, state=RecipientState.DEFERRED, last_reply=reply, attempts=1, updated=now
    )
    await spool.update(queue_id, {address: deferred}, now + later)


async def queue_of_three(cli: Cli) -> tuple[str, str, str]:
    """Three messages: due now; deferred (2 recipients, one delivered) for an hour; held."""
    storage, spool = open_spool(cli)
    try:
        due = await enqueue(spool)
        later = await enqueue(spool, ("x@remote.test", "y@other.test"), sender=None)
        delivered = QueuedRecipient("y@other.test", state=RecipientState.DELIVERED)
        await spool.update(later, {"y@other.test": delivered}, time.time())
        await defer(spool, later, "x@remote.test", "451 4.7.1\n greylisted, " + "x" * 80, HOUR)
        held = await enqueue(spool)
        await spool.set_held(held, True)
    finally:
        await storage.aclose()
    return due, later, held


@pytest_twisted.ensureDeferred
async def test_list_and_show(cli):
    """``list`` prints one row per message and a summary; ``show`` every field."""
    due, later, held = await queue_of_three(cli)

    header, *rows, summary = cli.ok("queue", "list").splitlines()
    assert header.split() == "QUEUE ID AGE SIZE SENDER RCPT NEXT LAST REPLY".split()
    assert [row.split()[0] for row in rows] == [due, later, held]
    assert rows[0].split()[3:] == ["<a@example.org>", "1/1", "now"]
    assert rows[1].split()[3:6] == ["<>", "1/2", "in"]
    assert re.fullmatch(r"59m[0-5]\ds", rows[1].split()[6])  # an hour from a moment ago
    assert "451 4.7.1 greylisted, xxx" in rows[1] and rows[1].endswith("x...")
    assert rows[2].split()[3:] == ["<a@example.org>", "1/1", "held"]
    assert summary == f"3 messages, 1 held, {3 * len(MESSAGE)}B total"

    limited = cli.ok("queue", "list", "--limit", "1").splitlines()
    assert len(limited) == 3 and limited[-1].endswith("(showing the oldest 1)")

    shown = cli.ok("queue", "show", later.lower()).splitlines()
    for line in (
        f"queue id:      {later}",
        "sender:        <>",
        "authenticated: a@example.org",
        "parameters:    ENVID=env-1 RET=HDRS",
        "attempts:      2",
        "held:          no",
        "recipients:    2 (1 pending)",
        "  x@remote.test",
        "    state:      deferred",
        "    last reply: 451 4.7.1 greylisted, " + "x" * 80,
        "    parameters: NOTIFY=FAILURE ORCPT=rfc822;x@remote.test",
        "  y@other.test",
        "    state:      delivered",
    ):
        assert line in shown, line
    assert "Subject: queued" not in shown

    raw = cli("queue", "show", held, "--message")
    assert raw.returncode == 0
    assert "held:          yes" in raw.stdout.decode().splitlines()
    assert raw.stdout.endswith(b"\n\n" + MESSAGE)


@pytest_twisted.ensureDeferred
async def test_hold_release_retry_flush_delete(cli):
    """Each verb changes the schedule as it says, and the next process sees it."""
    due, later, held = await queue_of_three(cli)

    assert cli.ok("queue", "hold", due).startswith(f"held {due}; release it with")
    err = cli.fails("queue", "retry", due)
    assert f"release it first: mailserver queue release {due}" in err
    assert cli.ok("queue", "release", held) == f"released {held}; next attempt now\n"
    assert cli.ok("queue", "retry", later).startswith(f"{later} is due now; ")
    storage, spool = open_spool(cli)
    try:
        assert sorted(spool.due(time.time())) == sorted([later, held])  # not the held one
        assert spool.get(due).held and not spool.get(held).held
        await spool.reschedule(later, time.time() + HOUR)
    finally:
        await storage.aclose()

    flushed = cli.ok("queue", "flush")
    assert flushed.startswith("2 messages due now; 1 held, not touched; the running server")
    deleted = cli.ok("queue", "delete", later)
    assert deleted == f"deleted {later} (1 recipient not delivered); no bounce was sent to <>\n"
    storage, spool = open_spool(cli)
    try:
        assert spool.due(time.time()) == [held]
        assert spool.get(later) is None and spool.count() == 2
        assert not os.path.exists(spool.message_path(later))
        assert os.path.exists(spool.message_path(held))
    finally:
        await storage.aclose()


@pytest_twisted.ensureDeferred
async def test_unknown_id(cli):
    """An id that is not (or no longer) queued is an error naming 'queue list'."""
    assert cli.ok("queue", "list") == "queue is empty\n"
    storage, spool = open_spool(cli)
    try:
        queue_id = await enqueue(spool)
        await spool.remove(queue_id)
    finally:
        await storage.aclose()
    for verb in ("show", "hold"):
        assert cli.fails("queue", verb, queue_id) == (
            f"error: no message {queue_id} in the queue (delivered or deleted?); "
            "see the queue with: mailserver queue list\n"
        )


def test_malformed_id(capsys):
    """A malformed id is refused before any storage is opened."""
    assert main(["queue", "delete", "not-an-id"]) == 1
    assert capsys.readouterr().err == (
        "error: 'not-an-id' is not a queue id (hex digits); "
        "see the ids with: mailserver queue list\n"
    )
