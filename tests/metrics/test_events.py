"""The session events the protocols emit (mailserver.observe.events): their kinds and fields,
the trace switch, the message outcome after end of data, and the redaction of credentials."""

from __future__ import annotations

from typing import Any

from twisted.cred.portal import Portal
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, globalLogPublisher

from mailserver.imap.parse_session import Authenticate, Login
from mailserver.listener import ListenerFactory
from mailserver.observe.events import (
    COMMAND,
    CONNECTION,
    MESSAGE,
    REPLY,
    SECRET,
    SessionEvents,
    imap_line,
    redact,
    redact_sasl,
)
from mailserver.smtp.factory import SMTPPolicy


def session(trace: bool = False, listener: str = "smtp.listen", protocol: str = "smtp"):
    events: list[dict[str, Any]] = []
    clock = Clock()
    factory = ListenerFactory(Portal(None), SMTPPolicy(), reactor=clock)
    factory.listener, factory.trace = listener, trace
    emitter = SessionEvents(Logger(observer=events.append), protocol, factory)
    emitter.peer = "127.0.0.9"
    return emitter, events, clock


def test_redact_hides_sasl_initial_responses_and_passwords():
    """AUTH's initial response, PASS's password and APOP's digest become ***; the rest of
    the line stays (the mechanism, the user name)."""
    assert redact(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==") == f"AUTH PLAIN {SECRET}"
    assert redact(b"auth login YWxpY2U=") == f"auth login {SECRET}"
    assert redact(b"AUTH LOGIN") == "AUTH LOGIN"
    assert redact(b"PASS my secret words") == f"PASS {SECRET}"
    assert redact(b"APOP alice c4c9334bac560ecc979e58001b3e22fb") == f"APOP alice {SECRET}"
    assert redact(b"MAIL FROM:<a@example.org> SIZE=10") == "MAIL FROM:<a@example.org> SIZE=10"
    # other white space than one space still hides the secret
    assert redact(b"AUTH PLAIN\tAGFsaWNlAHNlY3JldA==") == f"AUTH PLAIN {SECRET}"
    assert redact(b"AUTH  PLAIN  AGFsaWNl") == f"AUTH PLAIN {SECRET}"
    assert redact(b"PASS\tsecret") == f"PASS {SECRET}"
    assert redact(b"PASS ") == f"PASS {SECRET}"
    assert redact(b"PASS") == "PASS" and redact(b"") == ""
    assert redact_sasl(b"c2VjcmV0") == SECRET
    assert redact_sasl(b"*") == "*"  # the cancel is shown


def test_imap_line_keeps_login_and_authenticate_secrets_out():
    """IMAP commands are traced from their parsed form: LOGIN shows the user only,
    AUTHENTICATE the mechanism and *** for an initial response."""
    assert imap_line("a1", "LOGIN", Login("alice", "hunter2")) == f"a1 LOGIN alice {SECRET}"
    with_ir = imap_line("a2", "AUTHENTICATE", Authenticate("PLAIN", b"\0alice\0hunter2"))
    assert with_ir == f"a2 AUTHENTICATE PLAIN {SECRET}"
    assert imap_line("a3", "AUTHENTICATE", Authenticate("LOGIN")) == "a3 AUTHENTICATE LOGIN"
    assert imap_line("a4", "NOOP", None) == "a4 NOOP"
    assert "hunter2" not in repr(Login("alice", "hunter2"))


def test_without_trace_only_replies_with_labels_at_debug():
    """Trace off: a command makes no event of its own; the reply event, at debug level,
    carries the verb it answers and names the command in ``commands``; the text callables
    are never called."""
    emitter, events, _clock = session()

    def never() -> str:
        raise AssertionError("formatted without a trace")

    emitter.command("MAIL", never)
    emitter.reply("250", never, "2.1.0")
    [reply] = events
    assert reply["mail_event"] == REPLY and reply["log_level"] is LogLevel.debug
    assert (reply["code"], reply["verb"], reply["listener"]) == ("250", "MAIL", "smtp.listen")
    assert reply["commands"] == ("MAIL",) and len(reply["session"]) == 8


def test_reply_names_each_command_once():
    """Each command is named by the first reply after it: pipelined commands all by the
    next reply, none by a second reply to the same command (SMTP's 250 after 354)."""
    emitter, events, _clock = session()
    emitter.command("MAIL")
    emitter.command("RCPT")
    emitter.reply("250")
    emitter.reply("250")
    emitter.command("DATA")
    emitter.reply("354")
    emitter.reply("250")
    assert [e["commands"] for e in events] == [("MAIL", "RCPT"), (), ("DATA",), ()]


def test_with_trace_lines_are_logged_at_info_and_redacted():
    """Trace on: command and reply events are info level with the redacted line and the
    reply text; a SASL response line is logged as *** and is not a command (verb "", and
    the reply after it names no command)."""
    emitter, events, _clock = session(trace=True, listener="submission.listen")
    emitter.line_command(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==", {"AUTH"})
    emitter.reply("334", lambda: "334 ", "")
    emitter.sasl_line(b"AGFsaWNlAHNlY3JldA==")
    emitter.reply("235", lambda: "235 2.7.0 ok", "2.7.0")
    assert [e["log_level"] for e in events] == [LogLevel.info] * 4
    assert events[0]["mail_event"] == COMMAND
    assert events[0]["line"] == f"AUTH PLAIN {SECRET}" and events[0]["verb"] == "AUTH"
    assert events[1]["text"] == "334 " and events[1]["commands"] == ("AUTH",)
    assert events[2]["line"] == SECRET and events[2]["verb"] == ""
    assert events[3]["commands"] == ()
    assert not any("AGFsaWNl" in str(value) for e in events for value in e.values())


def test_unknown_verbs_share_one_label():
    """A verb the protocol does not know is counted as UNKNOWN (bounded labels)."""
    emitter, events, _clock = session()
    emitter.line_command(b"XYZZY now", {"MAIL", "RCPT"})
    emitter.reply("500")
    assert events[0]["verb"] == "UNKNOWN" and events[0]["commands"] == ("UNKNOWN",)


def test_the_reply_after_end_of_data_is_the_message_outcome():
    """After content(), the next reply makes one message event with the envelope, the
    result from the reply class and the time from end of data to the reply."""
    emitter, events, clock = session()
    emitter.command("DATA")
    emitter.content("Q1", "a@example.org", ["b@example.org", "c@example.org"], 1234)
    clock.advance(0.25)
    emitter.reply("250", lambda: "250 2.0.0 OK: queued as Q1", "2.0.0")
    emitter.reply("250", lambda: "250 2.0.0 OK", "2.0.0")  # a later reply: no message event
    messages = [e for e in events if e["mail_event"] == MESSAGE]
    assert len(messages) == 1
    message = messages[0]
    assert message["queue_id"] == "Q1" and message["sender"] == "a@example.org"
    assert message["recipients"] == ("b@example.org", "c@example.org")
    assert (message["size"], message["phase"], message["result"]) == (1234, "data", "accepted")
    assert message["elapsed"] == 0.25 and message["client"] == "127.0.0.9"
    assert message["reply"] == "250 2.0.0 OK: queued as Q1"


def test_refusals_before_a_message_are_noqueue_messages():
    """A 4xx/5xx to MAIL or RCPT is a NOQUEUE message event with the phase, the status and
    the refused command; a 5xx to another command is not."""
    emitter, events, _clock = session()
    emitter.line_command(b"RCPT TO:<nobody@example.org>", {"RCPT"})
    emitter.reply("550", lambda: "550 5.1.1 No such user here", "5.1.1")
    emitter.line_command(b"VRFY x", {"VRFY"})
    emitter.reply("502", lambda: "502 5.5.1 VRFY is disabled", "5.5.1")
    messages = [e for e in events if e["mail_event"] == MESSAGE]
    assert len(messages) == 1
    refused = messages[0]
    assert refused["queue_id"] == "NOQUEUE" and refused["phase"] == "rcpt"
    assert refused["result"] == "rejected" and refused["enhanced"] == "5.1.1"
    assert refused["command"] == "RCPT TO:<nobody@example.org>"


def test_line_replies_take_their_status_word():
    """POP3 responses: +OK, -ERR, and + for a SASL challenge."""
    emitter, events, _clock = session(protocol="pop3", listener="pop3.listen")
    emitter.line_reply(b"+OK 2 messages\r\n")
    emitter.line_reply(b"-ERR [AUTH] Authentication failed\r\n")
    emitter.line_reply(b"+ \r\n")
    emitter.line_reply(b"")
    assert [e["code"] for e in events] == ["+OK", "-ERR", "+"]


def test_auth_fields_make_a_login_line_an_auth_event():
    """auth() gives the fields of an auth event for the protocol's own login log line."""
    emitter, _events, _clock = session(protocol="imap", listener="imap.tls_listen")
    fields = emitter.auth(False)
    assert fields["mail_event"] == "auth" and fields["result"] == "failure"
    assert (fields["protocol"], fields["listener"]) == ("imap", "imap.tls_listen")


def test_listener_factories_emit_connection_events():
    """A listener's factory reports open, refused and closed connections with its key."""
    events: list[dict[str, Any]] = []
    factory = ListenerFactory(Portal(None), SMTPPolicy(max_connections_per_ip=1),
                              reactor=Clock())
    factory.listener = "smtp.listen"
    globalLogPublisher.addObserver(events.append)
    try:
        assert factory.admit("127.0.0.5")
        assert not factory.admit("127.0.0.5")
        factory.release("127.0.0.5")
    finally:
        globalLogPublisher.removeObserver(events.append)
    mine = [e for e in events if e.get("mail_event") == CONNECTION]
    assert [(e["state"], e["listener"], e["peer"]) for e in mine] == [
        ("open", "smtp.listen", "127.0.0.5"),
        ("refused", "smtp.listen", "127.0.0.5"),
        ("closed", "smtp.listen", "127.0.0.5"),
    ]
