"""Message tracking (GET /admin/track): one query by Message-ID or queue id returns what the
server keeps of a message's path (filter verdicts, the mailboxes holding it, its queue entry
and DSNs) and says which parts are not recorded; real storage, spool and classification log."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from mailserver.auth.roles import Action, Actor, Forbidden, require
from mailserver.errors import MailError
from mailserver.filter.classifications import ClassificationLog
from mailserver.spool.queue import LmdbSpool
from mailserver.types import Address, Envelope, Role
from mailserver.web.api import tracking
from mailserver.web.api.app import problem_for
from mailserver.web.api.context import ApiContext
from mailserver.web.api.routing import Call, Problem

ADMIN = "root@example.org"
DOMAIN_ADMIN = "boss@example.org"
USER = "alice@example.org"
BOB = "bob@example.org"


def message(message_id: str, received_id: str = "", subject: str = "hi") -> bytes:
    received = (
        f"Received: from client (client [192.0.2.9])\r\n\tby mx.test (mailserver) with ESMTPSA "
        f"id {received_id}; Sun, 29 Nov 2026 12:00:00 +0000\r\n" if received_id else ""
    )
    return (f"{received}From: a@example.org\r\nTo: x@remote.test\r\nSubject: {subject}\r\n"
            f"Message-ID: {message_id}\r\n\r\nbody\r\n").encode()


class Env:
    def __init__(self, storage: Any, tmp_path: Path) -> None:
        self.storage = storage
        self.spool = LmdbSpool(storage.db, str(tmp_path / "spool"), reactor, fsync=False)
        self.classifications = ClassificationLog(storage.db, reactor)
        self.context = ApiContext(
            reactor=reactor,
            credentials=None,
            directory=storage.directory,
            authenticate=lambda *a, **k: Deferred(),
            authorize=self.authorize,
            store=storage.store,
            spool=self.spool,
            classifications=self.classifications,
        )

    def authorize(self, user: str, action: str, target: str | None) -> None:
        found = self.storage.directory.get_user(user)
        if found is None:
            raise Forbidden(f"no user {user}")
        require(Actor.of(found), Action(action), target)

    async def track(self, user: str = ADMIN, **query: str) -> tuple[int, Any]:
        call = Call(None, self.context, user, frozenset({"api"}), {},
                    {k: [v] for k, v in query.items()}, None, "192.0.2.7")
        try:
            return 200, await tracking.track(call)
        except Problem as problem:
            return problem.status, problem.document()
        except MailError as error:
            problem = problem_for(error)
            return problem.status, problem.document()

    async def enqueue(self, data: bytes, sender: Address | None = None) -> str:
        delivery = self.spool.start(Envelope(sender=sender, authenticated_as=USER))
        await delivery.add_recipient(Address("x", "remote.test"))
        await delivery.body(BytesIO(data))
        return await delivery.commit()

    async def store(self, address: str, folder: str, data: bytes) -> int:
        return await self.storage.store.account(address).folder(folder).append(BytesIO(data))


@pytest.fixture
def env(storage, tmp_path):
    d = storage.directory
    pytest_twisted.blockon(d.add_domain("example.org"))
    for address, role in ((ADMIN, Role.ADMIN), (DOMAIN_ADMIN, Role.USER), (USER, Role.USER),
                          (BOB, Role.USER)):
        pytest_twisted.blockon(d.add_user(address, "secret", [role]))
        pytest_twisted.blockon(storage.store.create_account(address))
    pytest_twisted.blockon(d.set_roles(DOMAIN_ADMIN, [Role.DOMAIN_ADMIN], ["example.org"]))
    return Env(storage, tmp_path)


@pytest_twisted.ensureDeferred
async def test_track_by_message_id_finds_verdict_and_every_mailbox(env):
    """The filter's verdict and every account/folder holding the Message-ID; the SMTP
    session is reported as not recorded, with what the verdict entry knows of it."""
    await env.classifications.record({
        "source": "filter", "message_id": "<m1@remote.test>", "sender": "s@remote.test",
        "recipients": [USER, BOB], "client": "198.51.100.4", "score": 7.5,
        "action": "quarantine", "is_spam": True, "classifier": "logreg", "reasons": ["x"],
        "rules": [["BAYES_99", 3.5]]})
    await env.classifications.record({"source": "filter", "message_id": "<other@x>",
                                      "recipients": [USER], "score": 0})
    await env.store(USER, "Junk", message("<m1@remote.test>"))
    await env.store(BOB, "INBOX", message("<m1@remote.test>"))
    await env.store(BOB, "INBOX", message("<unrelated@remote.test>"))
    status, body = await env.track(message_id="m1@remote.test")
    assert status == 200 and body["message_id"] == "m1@remote.test"
    assert [e["score"] for e in body["checks"]["entries"]] == [7.5]
    places = sorted((p["account"], p["folder"]) for p in body["storage"]["locations"])
    assert places == [(USER, "Junk"), (BOB, "INBOX")]
    assert body["storage"]["complete"] and body["storage"]["scanned"] == 3
    assert body["smtp"]["recorded"] is False
    assert body["smtp"]["sessions"][0]["client"] == "198.51.100.4"
    assert tracking.NOT_RECORDED["smtp"] in body["gaps"]
    assert body["queue"]["entries"] == [] and body["dsns"] == []


@pytest_twisted.ensureDeferred
async def test_track_by_queue_id_shows_attempts_and_dsns(env):
    """A spool id gives the entry (recipients' state, attempts, replies), its Message-ID,
    the SMTP session id of its Received field, and the DSNs queued or stored for it."""
    queued = await env.enqueue(message("<q1@example.org>", received_id="ABCDEF123456"),
                               sender=Address("alice", "example.org"))
    await env.enqueue(message(f"<{queued}.1a2b3c4d@mx.test>", subject="Delivery delayed"))
    await env.store(USER, "INBOX", message(f"<{queued}.99887766@mx.test>", subject="Failed"))
    await env.store(USER, "Sent", message("<q1@example.org>"))
    status, body = await env.track(queue_id=queued.lower())
    assert status == 200 and body["message_id"] == "<q1@example.org>"
    [entry] = body["queue"]["entries"]
    assert entry["queue_id"] == queued and entry["smtp_id"] == "ABCDEF123456"
    assert entry["recipients"][0]["state"] == "pending"
    assert [(p["account"], p["folder"]) for p in body["storage"]["locations"]] == [(USER, "Sent")]
    dsns = sorted(d.get("queue_id") or d.get("folder") for d in body["dsns"])
    assert len(dsns) == 2 and "INBOX" in dsns
    assert any(d.get("dsn_for") == queued for d in body["dsns"])


@pytest_twisted.ensureDeferred
async def test_track_by_the_smtp_session_id(env):
    """The id of a 250 reply is found through the Received field of a queued copy."""
    queued = await env.enqueue(message("<q2@example.org>", received_id="00AA11BB22CC"))
    status, body = await env.track(queue_id="00aa11bb22cc")
    assert status == 200 and [e["queue_id"] for e in body["queue"]["entries"]] == [queued]
    assert body["message_id"] == "<q2@example.org>"


@pytest_twisted.ensureDeferred
async def test_an_unknown_message_says_what_was_searched(env):
    """Nothing found: empty parts, complete scans, and the gaps named."""
    await env.store(USER, "INBOX", message("<a@b>"))
    status, body = await env.track(message_id="<nothing@here>")
    assert status == 200
    assert body["storage"] == {"recorded": True, "locations": [], "scanned": 1, "complete": True}
    assert body["queue"]["complete"] and body["queue"]["entries"] == []
    assert tracking.NOT_RECORDED["delivery_history"] in body["gaps"]
    status, body = await env.track(queue_id="FFFF")
    assert status == 200 and any("not indexed" in gap for gap in body["gaps"])


@pytest_twisted.ensureDeferred
async def test_scans_are_bounded_and_say_so(env, monkeypatch):
    """Past the bound the storage and queue scans stop and report it; ?account= first."""
    for n in range(4):
        await env.store(BOB, "INBOX", message(f"<n{n}@x>"))
    await env.store(USER, "INBOX", message("<target@x>"))
    for n in range(3):
        await env.enqueue(message(f"<s{n}@x>"))
    monkeypatch.setattr(tracking, "STORE_SCAN_LIMIT", 2)
    monkeypatch.setattr(tracking, "QUEUE_SCAN_LIMIT", 2)
    status, body = await env.track(message_id="<target@x>")
    assert status == 200 and body["storage"]["complete"] is False
    assert body["storage"]["scanned"] == 2 and body["queue"]["complete"] is False
    assert any("storage scan stopped" in gap for gap in body["gaps"])
    status, body = await env.track(message_id="<target@x>", account=USER)
    assert [p["account"] for p in body["storage"]["locations"]] == [USER]


@pytest_twisted.ensureDeferred
async def test_tracking_is_for_admins_and_needs_one_key(env):
    """Domain admins and users get 403; neither or both of the keys is 400."""
    for who in (DOMAIN_ADMIN, USER):
        status, body = await env.track(who, message_id="<a@b>")
        assert status == 403 and "manage-queue" in body["detail"]
    assert (await env.track())[0] == 400
    assert (await env.track(message_id="<a@b>", queue_id="AB"))[0] == 400
    assert (await env.track(queue_id="not-hex"))[0] == 400


def test_header_value_unfolds_and_stops_at_the_body():
    """The Message-ID field is read from the header block only, unfolded."""
    head = b"Subject: x\r\nMessage-ID:\r\n <a@b>\r\n\r\nMessage-ID: <body@x>\r\n"
    assert tracking.header_value(head, b"message-id") == "<a@b>"
    assert tracking.header_value(b"Subject: x\r\n\r\n", b"message-id") == ""
