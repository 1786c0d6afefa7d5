"""The trace observer: the ``mail_event`` log events of the SMTP session, the filter, the store
and the spool become trace records keyed so that one query finds a message's whole path;
other events are ignored; the service observes a publisher only while it runs."""

from __future__ import annotations

import pytest_twisted
from twisted.internet.task import Clock
from twisted.logger import Logger, LogPublisher

from mailserver.trace import TraceLog, TraceObserver, TraceService

SMTP_ID, QUEUE_ID, DSN_QUEUE_ID = "A1B2C3D4E5F6", "18F2A3B4C5DAABBCCDD", "18F2A3B4C6E11223344"


def events() -> list[dict]:
    """What a message submitted for a local and a remote recipient logs, then a bounce."""
    return [
        {"mail_event": "command", "verb": "MAIL", "session": "5e55"},  # not a path event
        {"mail_event": "message", "queue_id": "NOQUEUE", "session": "5e55", "phase": "rcpt",
         "result": "rejected", "code": "550", "reply": "550 5.1.1 no such user",
         "client": "192.0.2.1", "recipients": ()},
        {"mail_event": "verdict", "queue_id": SMTP_ID, "action": "accept", "score": 0.0,
         "rules": "none"},
        {"mail_event": "stored", "smtp_id": SMTP_ID, "message_id": "<m1@example.org>",
         "object_id": "O1", "places": [["bob@example.org", "INBOX", 1]],
         "sender": "alice@example.org", "client": "192.0.2.1", "helo": "client.test",
         "authenticated_as": "alice@example.org"},
        {"mail_event": "queued", "queue_id": QUEUE_ID, "smtp_id": SMTP_ID,
         "message_id": "<m1@example.org>", "sender": "alice@example.org",
         "recipients": ["carol@remote.test"], "size": 300},
        {"mail_event": "message", "queue_id": SMTP_ID, "session": "5e55", "phase": "data",
         "result": "accepted", "code": "250", "reply": f"2.0.0 OK: queued as {SMTP_ID}",
         "client": "192.0.2.1", "sender": "alice@example.org",
         "recipients": ("bob@example.org", "carol@remote.test"), "size": 280},
        {"mail_event": "maillog", "direction": "in", "queue_id": SMTP_ID},  # not an attempt
        {"mail_event": "maillog", "direction": "out", "queue_id": QUEUE_ID,
         "rcpt": "carol@remote.test", "result": "failed", "status": "5.1.1",
         "reply": "550 5.1.1 unknown", "relay": "mx.remote.test", "attempts": 1},
        {"mail_event": "queued", "queue_id": DSN_QUEUE_ID, "smtp_id": "", "sender": "",
         "message_id": f"<{QUEUE_ID}.9f8e@mail.example.org>",
         "recipients": ["alice@example.org"]},
    ]


@pytest_twisted.ensureDeferred
async def test_a_message_id_finds_session_verdict_storage_queue_attempts_and_dsn(storage):
    trace = TraceLog(storage.db, Clock())
    observer = TraceObserver(trace)
    for event in events():
        observer(event)
    await trace.flush()
    found = trace.find(message_id="m1@example.org")
    assert [r["kind"] for r in found["records"]] == [
        "verdict", "stored", "queued", "smtp", "delivery", "queued"]
    verdict, stored, queued, smtp, attempt, dsn = found["records"]
    assert (smtp["queue_id"], smtp["result"], smtp["session"]) == (SMTP_ID, "accepted", "5e55")
    assert verdict["action"] == "accept" and verdict["queue_id"] == SMTP_ID
    assert stored["places"] == [["bob@example.org", "INBOX", 1]]
    assert stored["authenticated_as"] == "alice@example.org" and stored["helo"] == "client.test"
    assert queued["queue_id"] == QUEUE_ID and queued["recipients"] == ["carol@remote.test"]
    assert (attempt["relay"], attempt["result"], attempt["status"]) == (
        "mx.remote.test", "failed", "5.1.1")
    assert dsn["dsn_for"] == QUEUE_ID and dsn["queue_id"] == DSN_QUEUE_ID
    assert trace.find(queue_id=QUEUE_ID)["records"] == found["records"]
    assert trace.find(queue_id=SMTP_ID.lower())["records"] == found["records"]


@pytest_twisted.ensureDeferred
async def test_a_refusal_before_data_is_found_by_its_session(storage):
    """A refused RCPT has no queue id (NOQUEUE is not a key): its session id finds it, with
    the session's accepted message (and that message's path)."""
    trace = TraceLog(storage.db, Clock())
    observer = TraceObserver(trace)
    for event in events():
        observer(event)
    assert trace.find(queue_id="NOQUEUE")["records"] == []
    session = [r for r in trace.find(queue_id="5e55")["records"] if r["kind"] == "smtp"]
    assert [(r["phase"], r["result"]) for r in session] == [
        ("rcpt", "rejected"), ("data", "accepted")]


def test_a_malformed_event_is_counted_never_raised(storage):
    trace = TraceLog(storage.db, Clock())
    TraceObserver(trace)({"mail_event": "stored", "message_id": object(), "places": 3})
    TraceObserver(trace)({"mail_event": "queued", "queue_id": "Q\udcff"})
    assert trace.stats()["pending"] + trace.stats()["dropped"] == 2


@pytest_twisted.ensureDeferred
async def test_the_service_observes_its_publisher_only_while_running(storage):
    """Events logged through a Logger reach the trace between start and stop; stopping
    writes what is pending."""
    publisher = LogPublisher()
    log = Logger(namespace="test", observer=publisher)
    trace = TraceLog(storage.db, Clock(), flush_interval=3600.0)
    service = TraceService(trace, publisher)
    log.info("before", mail_event="queued", queue_id="Q0")
    service.startService()
    log.info("{queue_id}: queued", mail_event="queued", queue_id="Q1",
             message_id="<x@y>", sender="a@b", recipients=["c@d"])
    await service.stopService()
    log.info("after", mail_event="queued", queue_id="Q2")
    assert trace.stats()["records"] == 1 and trace.stats()["pending"] == 0
    [record] = trace.find(message_id="x@y")["records"]
    assert record["queue_id"] == "Q1" and record["recipients"] == ["c@d"]


def test_tls_and_the_user_come_from_the_session_s_earlier_events(storage):
    """A 2xx to STARTTLS and a successful AUTH (the reply and auth events of the same
    session) mark the session's message records; a tls_listen listener is TLS anyway;
    other protocols and failed logins change nothing; the sessions kept are bounded."""
    trace = TraceLog(storage.db, Clock())
    observer = TraceObserver(trace, max_sessions=2)
    for event in (
        {"mail_event": "reply", "protocol": "smtp", "session": "s1", "verb": "STARTTLS",
         "code": "220"},
        {"mail_event": "auth", "protocol": "smtp", "session": "s1", "result": "failure",
         "user": "mallory@example.org"},
        {"mail_event": "auth", "protocol": "smtp", "session": "s1", "result": "success",
         "user": "alice@example.org"},
        {"mail_event": "reply", "protocol": "imap", "session": "s2", "verb": "STARTTLS",
         "code": "220"},
        {"mail_event": "message", "session": "s1", "queue_id": "AA01", "result": "accepted",
         "listener": "submission.listen"},
        {"mail_event": "message", "session": "s2", "queue_id": "AA02", "result": "accepted",
         "listener": "smtp.listen"},
        {"mail_event": "message", "session": "s3", "queue_id": "AA03", "result": "accepted",
         "listener": "submission.tls_listen"},
    ):
        observer(event)
    [one] = trace.find(queue_id="AA01")["records"]
    assert one["tls"] is True and one["authenticated_as"] == "alice@example.org"
    [two] = trace.find(queue_id="AA02")["records"]
    assert two["tls"] is False and "authenticated_as" not in two
    [three] = trace.find(queue_id="AA03")["records"]
    assert three["tls"] is True
    for n in range(5):
        observer({"mail_event": "reply", "protocol": "smtp", "session": f"x{n}",
                  "verb": "STARTTLS", "code": "220"})
    assert list(observer.sessions) == ["x3", "x4"]
