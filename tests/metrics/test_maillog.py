"""The mail log (mailserver.observe.maillog): one summary line per inbound message, joined
to the filter's verdict by queue id; NOQUEUE lines for refusals before a message; a bounded
memory of verdicts waiting for their message."""

from __future__ import annotations

from typing import Any

from twisted.logger import LogLevel, LogPublisher, formatEvent

from mailserver.observe.maillog import MailLog


def setup(keep: int = 10_000) -> tuple[LogPublisher, MailLog, list[dict[str, Any]]]:
    publisher = LogPublisher()
    lines: list[dict[str, Any]] = []
    maillog = MailLog(publisher, keep=keep)
    publisher.addObserver(maillog)
    publisher.addObserver(lambda event: lines.append(event)
                          if event.get("mail_event") == "maillog" else None)
    return publisher, maillog, lines


def message(queue_id: str, **overrides: Any) -> dict[str, Any]:
    event = {
        "mail_event": "message", "queue_id": queue_id, "sender": "a@example.net",
        "recipients": ("b@example.org", "c@example.org"), "size": 321,
        "client": "127.0.0.7", "listener": "smtp.listen", "session": "abcd0123",
        "phase": "data", "result": "accepted", "code": "250", "enhanced": "2.0.0",
        "reply": f"250 2.0.0 OK: queued as {queue_id}", "elapsed": 0.01,
    }
    event.update(overrides)
    return event


def test_one_summary_line_with_the_verdict_of_the_same_message():
    """The verdict event of Q1 is joined to Q1's message event: one info line with queue
    id, from, to, size, client, verdict and result; Q2 has no verdict ('none')."""
    publisher, _maillog, lines = setup()
    publisher({"mail_event": "verdict", "queue_id": "Q1", "action": "quarantine",
               "score": 6.5, "rules": "BAYES_99(+6.5)"})
    publisher(message("Q2"))
    publisher(message("Q1"))
    assert [line["queue_id"] for line in lines] == ["Q2", "Q1"]
    q2, q1 = lines
    assert q1["log_level"] is LogLevel.info and q1["log_namespace"] == "mailserver.maillog"
    assert (q1["direction"], q1["action"], q1["score"]) == ("in", "quarantine", 6.5)
    assert q1["recipients"] == ["b@example.org", "c@example.org"]
    text = formatEvent(q1)
    assert text.startswith("Q1: from=<a@example.net> to=<b@example.org,c@example.org> size=321")
    assert "verdict=quarantine score=6.5" in text and "status=accepted" in text
    assert q2["verdict"] == "none"


def test_refusal_before_a_message_is_a_noqueue_line():
    """A refused RCPT gives a NOQUEUE line naming the command and the reply."""
    publisher, _maillog, lines = setup()
    publisher(message("NOQUEUE", phase="rcpt", result="rejected", code="550",
                      enhanced="5.1.1", reply="550 5.1.1 No such user here", sender="",
                      recipients=(), size=0, command="RCPT TO:<nobody@example.org>"))
    (line,) = lines
    text = formatEvent(line)
    assert text.startswith("NOQUEUE: rejected: RCPT TO:<nobody@example.org> from 127.0.0.7")
    assert line["enhanced"] == "5.1.1"


def test_waiting_verdicts_are_bounded():
    """Verdicts whose message never comes are forgotten oldest first beyond keep."""
    publisher, maillog, lines = setup(keep=2)
    for n in range(5):
        publisher({"mail_event": "verdict", "queue_id": f"V{n}", "action": "accept",
                   "score": 0.0, "rules": "none"})
    publisher(message("V0"))
    publisher(message("V4"))
    assert [line["verdict"] for line in lines] == ["none", "accept score=0.0"]
    assert len(maillog._verdicts) == 1


def test_events_without_their_fields_make_no_line():
    """A message event missing fields is ignored (an observer never raises)."""
    publisher, _maillog, lines = setup()
    publisher({"mail_event": "message", "queue_id": "Q"})
    publisher({"mail_event": "verdict"})
    assert lines == []
