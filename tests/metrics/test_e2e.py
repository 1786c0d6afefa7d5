"""Metrics and logs on the real server (`twistd mailserver` from the server_process fixture):
after SMTP, submission, IMAP and POP3 traffic /metrics shows the counters moved by exactly
that traffic; the JSON log has one summary line per accepted message (with the filter's
verdict on port 25) and one per outbound delivery attempt; the submission, IMAP and POP3
traces show each command and reply with AUTH data and passwords redacted, and the untraced
port-25 listener logs no command."""

from __future__ import annotations

import base64
import imaplib
import json
import poplib
import smtplib
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from tests.dns_server import Zone, start_dns_server
from tests.e2e.conftest import ServerProcess, free_port, server_process  # noqa: F401
from tests.e2e.mail import PASSWORD, insecure_context, provision

pytestmark = pytest.mark.e2e

ALICE = "alice@example.org"
MESSAGE = "From: carol@example.net\r\nTo: alice@example.org\r\nSubject: {n}\r\n\r\nBody {n}.\r\n"


def scrape(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    status, body = server.get("/metrics")
    assert status == 200
    text = body.decode() if isinstance(body, bytes) else body
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def json_events(text: str) -> list[dict[str, Any]]:
    """The events of a twisted.logger JSON log (record-separated objects)."""
    events = []
    for record in text.split("\x1e"):
        record = record.strip()
        if record:
            try:
                events.append(json.loads(record))
            except ValueError:
                continue
    return events


def traffic(server: ServerProcess) -> None:
    """Two messages to alice and one unknown recipient on port 25; on submission a wrong
    password (AUTH PLAIN, then AUTH LOGIN), then AUTH LOGIN and a message to a remote
    domain; IMAP over STARTTLS: LOGIN, SELECT, FETCH; POP3 over STLS: USER, PASS, STAT,
    RETR."""
    with smtplib.SMTP("127.0.0.1", server.ports["smtp.listen"], timeout=10) as client:
        for n in (1, 2):
            client.sendmail("carol@example.net", [ALICE], MESSAGE.format(n=n).encode())
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("carol@example.net", ["nobody@example.org"], b"Subject: x\r\n\r\n")

    with smtplib.SMTP("127.0.0.1", server.ports["submission.listen"], timeout=10) as client:
        client.starttls(context=insecure_context())
        client.ehlo("client.example")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(ALICE, "wrong-password")
        client.user, client.password = ALICE, PASSWORD
        code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
        assert code == 235
        client.sendmail(ALICE, ["carol@remote.test"],
                        b"From: alice@example.org\r\nTo: carol@remote.test\r\n"
                        b"Subject: out\r\n\r\nHello.\r\n")

    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap.listen"], timeout=10)
    imap.starttls(ssl_context=insecure_context())
    imap.login(ALICE, PASSWORD)
    typ, data = imap.select("INBOX")
    assert typ == "OK" and data == [b"2"]
    typ, _ = imap.fetch("1:*", "(FLAGS)")
    assert typ == "OK"
    imap.logout()

    pop = poplib.POP3("127.0.0.1", server.ports["pop3.listen"], timeout=10)
    pop.stls(context=insecure_context())
    pop.user(ALICE)
    pop.pass_(PASSWORD)
    assert pop.stat()[0] == 2
    assert b"Subject: 1" in b"\r\n".join(pop.retr(1)[1])
    pop.quit()


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def dns():
    """remote.test's MX is 127.0.0.2, where nothing listens on the delivery port."""
    server = start_dns_server(reactor, Zone("test", {
        "remote.test": [("MX", (10, "mx.remote.test"))],
        "mx.remote.test": [("A", "127.0.0.2")],
    }))
    yield server
    pytest_twisted.blockon(server.stop())


@pytest_twisted.ensureDeferred
async def test_metrics_mail_log_and_trace_after_traffic(server_process, dns):  # noqa: F811
    server: ServerProcess = server_process(
        {
            "log": {"format": "json", "trace": ["submission", "imap", "pop3"]},
            "filter": {"enabled": True},
            "delivery": {"nameservers": [dns.address], "port": free_port(),
                         "first_retry": 3600.0},
        },
        listen_keys=("http.listen", "smtp.listen", "submission.listen", "imap.listen",
                     "pop3.listen"),
    )
    await provision(Path(server.data_dir), "example.org", ["alice"])
    await deferToThread(server.start)
    before = await deferToThread(scrape, server)
    assert sample(before, "mailserver_messages_total", listener="smtp.listen",
                  result="accepted", phase="data", reason="") == 0
    await deferToThread(traffic, server)

    def attempted() -> bool:
        return sample(scrape(server), "mailserver_delivery_attempts_total",
                      result="deferred") >= 1

    await deferToThread(wait_for, attempted)
    after = await deferToThread(scrape, server)

    smtp = {"protocol": "smtp", "listener": "smtp.listen"}
    submission = {"protocol": "smtp", "listener": "submission.listen"}
    assert sample(after, "mailserver_connections_total", listener="smtp.listen") == 1
    assert sample(after, "mailserver_connections_total", listener="submission.listen") == 1
    assert sample(after, "mailserver_connections_total", listener="imap.listen") == 1
    assert sample(after, "mailserver_commands_total", verb="MAIL", **smtp) == 3
    assert sample(after, "mailserver_commands_total", verb="DATA", **smtp) == 2
    assert sample(after, "mailserver_replies_total", code="550", **smtp) == 1
    assert sample(after, "mailserver_messages_total", listener="smtp.listen",
                  result="accepted", phase="data", reason="") == 2
    assert sample(after, "mailserver_messages_total", listener="smtp.listen",
                  result="rejected", phase="rcpt", reason="5.1.1") == 1
    assert sample(after, "mailserver_smtp_data_seconds_count", listener="smtp.listen") == 2
    assert sample(after, "mailserver_message_bytes_total", listener="smtp.listen") > 0
    # the two port-25 messages and the submitted one (submission filters too)
    assert sample(after, "mailserver_filter_verdicts_total", action="accept") == 3
    # smtplib's login() tries PLAIN, then LOGIN, with the wrong password: two failures
    assert sample(after, "mailserver_auth_failures_total", **submission) == 2
    assert sample(after, "mailserver_auth_total", result="success", **submission) == 1
    assert sample(after, "mailserver_auth_total", result="success", protocol="imap",
                  listener="imap.listen") == 1
    assert sample(after, "mailserver_commands_total", protocol="imap",
                  listener="imap.listen", verb="SELECT") == 1
    assert sample(after, "mailserver_replies_total", protocol="imap",
                  listener="imap.listen", code="OK") >= 5
    assert sample(after, "mailserver_imap_command_seconds_count", verb="FETCH") == 1
    pop3 = {"protocol": "pop3", "listener": "pop3.listen"}
    assert sample(after, "mailserver_commands_total", verb="RETR", **pop3) == 1
    assert sample(after, "mailserver_commands_total", verb="PASS", **pop3) == 1
    assert sample(after, "mailserver_replies_total", code="+OK", **pop3) == 6  # STLS..QUIT
    assert sample(after, "mailserver_auth_total", result="success", **pop3) == 1
    assert sample(after, "mailserver_delivery_attempts_total", result="deferred") == 1
    assert sample(after, "mailserver_delivery_attempt_seconds_count", result="deferred") == 1
    assert sample(after, "mailserver_queue_messages") == 1
    assert sample(after, "mailserver_queue_oldest_age_seconds") >= 0

    server.stop()
    log = server.stdout()
    events = json_events(log)
    inbound = [e for e in events if e.get("mail_event") == "maillog"
               and e.get("direction") == "in" and e.get("result") == "accepted"]
    # one summary line per accepted message: two on port 25, one on submission
    assert len(inbound) == 3 and len({e["queue_id"] for e in inbound}) == 3
    port25 = [e for e in inbound if e["listener"] == "smtp.listen"]
    assert len(port25) == 2
    for line in port25:
        assert line["sender"] == "carol@example.net" and line["recipients"] == [ALICE]
        assert line["size"] > 0 and line["client"] == "127.0.0.1"
        assert line["action"] == "accept" and line["verdict"].startswith("accept score=")
        assert line["code"] == "250" and line["queue_id"] in line["reply"]
    refused = [e for e in events if e.get("mail_event") == "maillog"
               and e.get("queue_id") == "NOQUEUE"]
    assert [e["command"].upper() for e in refused] == ["RCPT TO:<NOBODY@EXAMPLE.ORG>"]
    outbound = [e for e in events if e.get("mail_event") == "maillog"
                and e.get("direction") == "out"]
    assert len(outbound) == 1
    assert outbound[0]["rcpt"] == "carol@remote.test" and outbound[0]["result"] == "deferred"
    assert outbound[0]["sender"] == ALICE and outbound[0]["size"] > 0

    traced = [e for e in events if e.get("mail_event") == "command"]
    assert {e["listener"] for e in traced} == {"submission.listen", "imap.listen",
                                               "pop3.listen"}
    lines = [e["line"] for e in traced]
    assert "AUTH PLAIN ***" in lines and "AUTH LOGIN" in lines
    assert lines.count("***") >= 2  # the user name and password of AUTH LOGIN
    assert any(line.endswith(f"LOGIN {ALICE} ***") for line in lines)
    assert "PASS ***" in lines
    replies = [e["text"] for e in events if e.get("mail_event") == "reply"]
    assert any(text.startswith("235") for text in replies)
    assert any(text.startswith("535") for text in replies)
    secrets = [PASSWORD, "wrong-password",
               base64.b64encode(f"\0{ALICE}\0wrong-password".encode()).decode(),
               base64.b64encode(PASSWORD.encode()).decode()]
    for secret in secrets:
        assert secret not in log, f"{secret!r} in the log"
