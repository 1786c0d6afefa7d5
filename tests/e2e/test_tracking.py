"""Message tracking in the real server (issue 10, "where is my mail"): mail sent by SMTP to a
local user and by submission to a remote one (a second SMTP server, ours, on 127.0.0.2,
found through a real DNS server), then one GET /api/v1/admin/track?message_id=... each
returns the SMTP session, the filter's verdict, the mailbox it was stored in, the delivery
attempts to the remote MX (one delivered, one refused) and the DSN, from the trace log;
after a SIGTERM (the trace written before the index closes) and a restart, the same."""

from __future__ import annotations

import json
import smtplib
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from mailserver.auth.realm import MailRealm, MXTarget
from mailserver.smtp.factory import SMTPFactory, SMTPPolicy
from mailserver.testing import MemoryDeliveryTarget, MemoryDirectory, MemoryStore
from mailserver.types import Role
from tests.conftest import Storage
from tests.dns_server import Zone, start_dns_server
from tests.e2e.conftest import ServerProcess, free_port
from tests.e2e.mail import PASSWORD, insecure_context, provision
from tests.lines import populate
from tests.stored import contents

pytestmark = pytest.mark.e2e

ADMIN = "postmaster@example.org"
INBOUND = (b"From: Dave <dave@elsewhere.test>\r\nTo: bob@example.org\r\nSubject: in\r\n"
           b"Message-ID: <inbound-1@elsewhere.test>\r\n\r\nFor bob.\r\n")
OUTBOUND = (b"From: Alice <alice@example.org>\r\nTo: bob@remote.test, carol@remote.test\r\n"
            b"Subject: out\r\n"
            b"Message-ID: <outbound-1@example.org>\r\n\r\nFor carol.\r\n")


def call(server: ServerProcess, path: str, body: Any = None, token: str = "") -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url("/api/v1" + path), data=data,
                                     method="GET" if body is None else "POST")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def wait_for(predicate: Any, timeout: float = 30.0) -> Any:
    """Poll ``predicate`` (returning (ready, value)) until ready, then the value: a bounded
    wait for an event, not a timing assertion; the last value is in the failure."""
    deadline = time.monotonic() + timeout
    while True:
        ready, found = predicate()
        if ready:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting; last: {json.dumps(found, indent=1)}")
        time.sleep(0.1)


@pytest.fixture
def remote_mx(tls_options):
    """An SMTP server for remote.test (carol) on 127.0.0.2 and a DNS server naming it."""
    store, directory = MemoryStore(), MemoryDirectory()
    populate(store, directory, "pw", domain="remote.test")
    realm = MailRealm(lambda: MXTarget(MemoryDeliveryTarget(store, directory), directory,
                                       "postmaster@remote.test"))
    factory = SMTPFactory(Portal(realm, [AllowAnonymousAccess()]),
                          SMTPPolicy(hostname="mx.remote.test"), tls_options, reactor=reactor)
    port = free_port()
    listener = reactor.listenTCP(port, factory, interface="127.0.0.2")
    dns = start_dns_server(reactor, Zone("test", {
        "remote.test": [("MX", (10, "mx.remote.test"))],
        "mx.remote.test": [("A", "127.0.0.2")],
    }))

    class Remote:
        pass

    remote = Remote()
    remote.store, remote.port, remote.dns = store, port, dns
    yield remote
    pytest_twisted.blockon(listener.stopListening())
    pytest_twisted.blockon(dns.stop())


async def add_admin(data_dir: Path) -> None:
    storage = Storage(data_dir, fsync=True)
    try:
        await storage.directory.add_user(ADMIN, PASSWORD, [Role.ADMIN])
    finally:
        await storage.aclose()


@pytest_twisted.ensureDeferred
async def test_track_mail_in_by_smtp_and_out_by_submission(server_process, remote_mx):
    server: ServerProcess = server_process(
        {"server": {"hostname": "mail.example.org"},
         "filter": {"enabled": True},
         "delivery": {"nameservers": [remote_mx.dns.address], "port": remote_mx.port},
         "tracking": {"flush_interval": 0.2}},
        listen_keys=("http.listen", "smtp.listen", "submission.listen"),
    )
    await provision(server.data_dir, "example.org", ["alice", "bob"])
    await add_admin(server.data_dir)
    await deferToThread(server.start)

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", server.ports["smtp.listen"], timeout=20) as client:
            client.sendmail("dave@elsewhere.test", ["bob@example.org"], INBOUND)
        with smtplib.SMTP("127.0.0.1", server.ports["submission.listen"], timeout=20) as client:
            client.starttls(context=insecure_context())
            client.login("alice@example.org", PASSWORD)
            client.sendmail("alice@example.org", ["bob@remote.test", "carol@remote.test"],
                            OUTBOUND)

    await deferToThread(send)

    status, tokens = await deferToThread(
        call, server, "/auth/login", {"username": ADMIN, "password": PASSWORD})
    assert status == 200, tokens
    token = tokens["access_token"]

    def track(message_id: str, ready: Any) -> Any:
        path = "/admin/track?" + urllib.parse.urlencode({"message_id": message_id})
        status, body = call(server, path, token=token)
        assert status == 200, body
        return bool(ready(body)), body

    inbound = await deferToThread(wait_for, lambda: track(
        "<inbound-1@elsewhere.test>",
        lambda b: b["storage"]["locations"] and b["smtp"]["sessions"]))
    assert inbound["trace"]["recorded"] is True
    [session] = inbound["smtp"]["sessions"]
    assert session["result"] == "accepted" and session["code"] == "250"
    assert session["client"] == "127.0.0.1" and session["sender"] == "dave@elsewhere.test"
    assert session["recipients"] == ["bob@example.org"]
    [verdict] = inbound["checks"]["verdicts"]
    assert verdict["action"] in ("accept", "quarantine") and "score" in verdict
    [place] = inbound["storage"]["locations"]
    assert (place["account"], place["present"]) == ("bob@example.org", True)
    assert place["folder"] in ("INBOX", "Junk")
    assert inbound["queue"]["attempts"] == [] and inbound["dsns"] == []

    outbound = await deferToThread(wait_for, lambda: track(
        "outbound-1@example.org", lambda b: b["queue"]["attempts"] and b["smtp"]["sessions"]))
    [session] = outbound["smtp"]["sessions"]
    assert session["result"] == "accepted" and session["authenticated_as"] == "alice@example.org"
    assert session["recipients"] == ["bob@remote.test", "carol@remote.test"]
    # the remote MX has bob but no carol: one attempt delivered, one refused for good
    attempts = sorted(outbound["queue"]["attempts"], key=lambda a: a["rcpt"])
    assert [(a["rcpt"], a["result"], a["relay"]) for a in attempts] == [
        ("bob@remote.test", "delivered", "mx.remote.test"),
        ("carol@remote.test", "failed", "mx.remote.test")]
    assert attempts[0]["reply"].startswith("250") and attempts[1]["reply"].startswith("550")
    assert outbound["queue"]["queue_ids"] and outbound["storage"]["locations"] == []
    assert len(contents(remote_mx.store.account("bob@remote.test").folder("INBOX"))) == 1
    # the bounce for carol went back to alice, and the same query shows where
    bounced = await deferToThread(wait_for, lambda: track(
        "outbound-1@example.org", lambda b: b["dsns"]))
    [dsn] = bounced["dsns"]
    assert dsn["dsn_for"] == outbound["queue"]["queue_ids"][0]
    assert (dsn["account"], dsn["present"]) == ("alice@example.org", True)
    # SIGTERM: the trace writes what it holds before the index closes, and says nothing bad
    assert await deferToThread(server.stop) == 0
    output = server.output()
    assert "stopped cleanly" in output and "trace record(s) failed" not in output
    # ... and after a restart the same query answers from the index
    await deferToThread(server.start)
    status, tokens = await deferToThread(
        call, server, "/auth/login", {"username": ADMIN, "password": PASSWORD})
    token = tokens["access_token"]
    again = await deferToThread(wait_for, lambda: track(
        "outbound-1@example.org", lambda b: b["dsns"]))
    assert again["queue"]["attempts"] == bounced["queue"]["attempts"]
    assert again["smtp"]["sessions"] == bounced["smtp"]["sessions"]
