"""The log events a worker process sends its server (mailserver.smtp_workers): one line of
JSON per event, read back into an event the server's observers treat like their own."""

from __future__ import annotations

import pytest
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.python.failure import Failure

from mailserver.smtp_workers import decode_event, encode_event


def test_a_reply_event_round_trips_with_its_level_and_fields() -> None:
    """A session's reply event keeps its level (as a LogLevel), its mail_event fields and its
    text; the worker's own objects (logger, source) stay behind; it is one line."""
    event = {
        "log_format": "{verb} -> {code}",
        "log_level": LogLevel.debug,
        "log_namespace": "mailserver.smtp.server",
        "log_logger": Logger(),
        "log_source": object(),
        "log_time": 1234.5,
        "mail_event": "reply",
        "verb": "RCPT",
        "code": 250,
        "recipients": ["alice@example.org"],
    }
    line = encode_event(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    back = decode_event(line)
    assert back["log_level"] is LogLevel.debug
    assert "log_logger" not in back and "log_source" not in back
    assert {k: back[k] for k in ("mail_event", "verb", "code", "recipients", "log_time")} == {
        "mail_event": "reply", "verb": "RCPT", "code": 250,
        "recipients": ["alice@example.org"], "log_time": 1234.5,
    }
    assert formatEvent(back) == "RCPT -> 250"


def test_a_failure_arrives_as_its_traceback_text() -> None:
    """log.failure's Failure becomes its traceback, shown after the message."""
    try:
        raise RuntimeError("disk on fire")
    except RuntimeError:
        failure = Failure()
    event = {"log_format": "delivery failed", "log_level": LogLevel.critical,
             "log_failure": failure, "log_namespace": "x"}
    text = formatEvent(decode_event(encode_event(event)))
    assert text.startswith("delivery failed\n") and "RuntimeError: disk on fire" in text


def test_values_json_cannot_hold_become_their_repr_or_the_text() -> None:
    """An object field is sent as its repr; a field JSON cannot encode at all (a dict with
    tuple keys) sends the event's formatted text instead."""
    class Thing:
        def __repr__(self) -> str:
            return "<thing>"

    back = decode_event(encode_event({"log_format": "got {x}", "x": Thing(),
                                      "log_level": LogLevel.info}))
    assert formatEvent(back) == "got <thing>"
    odd = {"log_format": "map {m}", "m": {(1, 2): 3}, "log_level": LogLevel.warn}
    back = decode_event(encode_event(odd))
    assert back["log_level"] is LogLevel.warn and formatEvent(back) == "map {(1, 2): 3}"


def test_a_line_that_is_not_an_event_is_refused() -> None:
    """Garbage and JSON that is not an object raise ValueError (the server drops them)."""
    for line in (b"not json\n", b"[1, 2]\n"):
        with pytest.raises(ValueError):
            decode_event(line)
