"""SMTP sessions through a real loopback socket: the command set, the state machine and the
port-25 policy (RFC 5321), with smtplib and exact raw dialogs."""

from __future__ import annotations

import smtplib

import pytest_twisted

from tests.smtp.conftest import in_thread

MESSAGE = b"From: bob@example.net\r\nTo: alice@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"


def dialog(server, steps):
    """Play (send, expected reply prefix) pairs on a raw connection; return the replies."""
    raw = server.connect()
    got = [raw.code()]
    try:
        for send, _expected in steps:
            raw.send(send)
            got.append(raw.code())
    finally:
        raw.close()
    for (_send, expected), reply in zip(steps, got[1:]):
        assert reply.startswith(expected), (expected, reply, got)
    return got


@pytest_twisted.ensureDeferred
async def test_smtplib_delivers_into_the_store(smtp_server):
    """A message sent with smtplib is stored for its recipient with Received and Return-Path."""

    def send():
        with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
            client.ehlo("client.example.net")
            refused = client.sendmail("bob@example.net", ["alice@example.org"], MESSAGE)
            assert refused == {}

    await in_thread(send)
    [stored] = smtp_server.messages("alice")
    assert stored.startswith(b"Return-Path: <bob@example.net>\r\nReceived: from client.example.net")
    assert b"by mx.test (mailserver) with ESMTP id " in stored
    assert b"for <alice@example.org>;" in stored
    assert stored.endswith(MESSAGE)


@pytest_twisted.ensureDeferred
async def test_greeting_and_ehlo_extensions(smtp_server):
    """The greeting names the host; EHLO lists every extension with enhanced codes."""

    def talk():
        raw = smtp_server.connect()
        greeting = raw.reply()
        raw.send(b"EHLO client.example.net\r\n")
        ehlo = raw.reply()
        raw.close()
        return greeting, ehlo

    greeting, ehlo = await in_thread(talk)
    assert greeting == ["220 mx.test ESMTP mailserver"]
    keywords = {line[4:].split(" ", 1)[1] if line[4:].startswith("2.") else line[4:]
                for line in ehlo[1:]}
    assert ehlo[0].startswith("250-mx.test Hello client.example.net")
    for keyword in ("PIPELINING", "SIZE 100000", "8BITMIME", "ENHANCEDSTATUSCODES",
                    "SMTPUTF8", "CHUNKING", "BINARYMIME", "DSN", "STARTTLS"):
        assert keyword in keywords, (keyword, ehlo)


@pytest_twisted.ensureDeferred
async def test_never_an_open_relay(smtp_server):
    """A recipient in a foreign domain gets 550 5.7.1; an unknown local user 550 5.1.1."""
    await in_thread(dialog, smtp_server, [
        (b"EHLO c.example\r\n", "250 "),
        (b"MAIL FROM:<spammer@example.net>\r\n", "250 2.1.0"),
        (b"RCPT TO:<victim@elsewhere.example>\r\n", "550 5.7.1"),
        (b"RCPT TO:<nobody@example.org>\r\n", "550 5.1.1"),
        (b"RCPT TO:<alice@example.org>\r\n", "250 2.1.5"),
        (b"RCPT TO:<alice%elsewhere.example@example.org>\r\n", "550 5.1.1"),
        (b"QUIT\r\n", "221 2.0.0"),
    ])


@pytest_twisted.ensureDeferred
async def test_aliases_subaddress_and_postmaster(smtp_server):
    """Aliases, user+tag and the bare <Postmaster> are accepted (RFC 5321 §4.1.1.3)."""
    await in_thread(dialog, smtp_server, [
        (b"EHLO c.example\r\n", "250 "),
        (b"MAIL FROM:<>\r\n", "250 2.1.0"),
        (b"RCPT TO:<Postmaster>\r\n", "250 2.1.5"),
        (b"RCPT TO:<postmaster@EXAMPLE.org>\r\n", "250 2.1.5"),
        (b"RCPT TO:<bob+lists@example.org>\r\n", "250 2.1.5"),
        (b"DATA\r\n", "354"),
        (MESSAGE + b".\r\n", "250 2.0.0"),
    ])
    assert len(smtp_server.messages("alice")) == 1
    assert len(smtp_server.messages("bob")) == 1


@pytest_twisted.ensureDeferred
async def test_out_of_sequence_commands_get_503(smtp_server):
    """MAIL before EHLO, RCPT before MAIL, DATA before RCPT and nested MAIL get 503 5.5.1."""
    await in_thread(dialog, smtp_server, [
        (b"MAIL FROM:<a@example.net>\r\n", "503 5.5.1"),
        (b"EHLO c.example\r\n", "250 "),
        (b"RCPT TO:<alice@example.org>\r\n", "503 5.5.1"),
        (b"DATA\r\n", "503 5.5.1"),
        (b"MAIL FROM:<a@example.net>\r\n", "250 2.1.0"),
        (b"MAIL FROM:<a@example.net>\r\n", "503 5.5.1"),
        (b"DATA\r\n", "554 5.0.0"),
        (b"RSET\r\n", "250 2.0.0"),
        (b"RCPT TO:<alice@example.org>\r\n", "503 5.5.1"),
        (b"NOOP\r\n", "250 2.0.0"),
    ])


@pytest_twisted.ensureDeferred
async def test_syntax_errors(smtp_server):
    """Unknown verbs get 500, bad arguments 501, and the session goes on."""
    await in_thread(dialog, smtp_server, [
        (b"EHLO\r\n", "501"),
        (b"EHLO c.example\r\n", "250 "),
        (b"FOO bar\r\n", "500 5.5.2"),
        (b"MAIL TO:<a@example.net>\r\n", "501"),
        (b"MAIL FROM:a@example.net\r\n", "501"),
        (b"MAIL FROM:<a@example.net> FOO=BAR\r\n", "555 5.5.4"),
        (b"MAIL FROM:<a@example.net>\r\n", "250 2.1.0"),
        (b"RCPT TO:<>\r\n", "501"),
        (b"DATA extra\r\n", "501"),
        (b"VRFY alice\r\n", "252 2.5.0"),
        (b"EXPN staff\r\n", "502 5.5.1"),
        (b"HELP\r\n", "214 2.0.0"),
    ])


@pytest_twisted.ensureDeferred
async def test_helo_has_no_extensions(smtp_server):
    """After HELO, ESMTP parameters are refused (RFC 5321 §4.1.1.1)."""
    await in_thread(dialog, smtp_server, [
        (b"HELO c.example\r\n", "250 mx.test Hello"),
        (b"MAIL FROM:<a@example.net> SIZE=10\r\n", "555 5.5.4"),
        (b"MAIL FROM:<a@example.net>\r\n", "250 2.1.0"),
    ])


@pytest_twisted.ensureDeferred
async def test_size_declared_too_big_and_actual_too_big(smtp_server):
    """SIZE above the limit is refused at MAIL; a body above it at the end of data (RFC 1870)."""
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 120
    await in_thread(dialog, smtp_server, [
        (b"EHLO c.example\r\n", "250 "),
        (b"MAIL FROM:<a@example.net> SIZE=100001\r\n", "552 5.3.4"),
        (b"MAIL FROM:<a@example.net> SIZE=1000\r\n", "250 2.1.0"),
        (b"RCPT TO:<alice@example.org>\r\n", "250 2.1.5"),
        (b"DATA\r\n", "354"),
        (big + b".\r\n", "552 5.3.4"),
        (b"NOOP\r\n", "250 2.0.0"),
    ])
    assert smtp_server.messages("alice") == []


@pytest_twisted.ensureDeferred
async def test_pipelined_replies_keep_their_order(smtp_server):
    """A whole pipelined transaction in one write gets its replies in order (RFC 2920)."""

    def talk():
        raw = smtp_server.connect()
        raw.reply()
        raw.send(b"EHLO c.example\r\n")
        raw.reply()
        raw.send(
            b"MAIL FROM:<a@example.net>\r\nRCPT TO:<nobody@example.org>\r\n"
            b"RCPT TO:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
        )
        codes = [raw.code()[:9] for _ in range(5)]
        raw.send(MESSAGE + b".\r\nRSET\r\nNOOP\r\nQUIT\r\n")
        codes += [raw.code()[:9] for _ in range(4)]
        raw.close()
        return codes

    codes = await in_thread(talk)
    assert codes == ["250 2.1.0", "550 5.1.1", "250 2.1.5", "250 2.1.5", "354 End d",
                     "250 2.0.0", "250 2.0.0", "250 2.0.0", "221 2.0.0"]
    assert len(smtp_server.messages("alice")) == len(smtp_server.messages("bob")) == 1


@pytest_twisted.ensureDeferred
async def test_too_many_recipients(smtp_server, make_policy):
    """Recipients beyond the limit get 452 4.5.3 and the accepted ones still get the mail."""
    smtp_server.factory.policy = make_policy(max_recipients=2)

    def talk():
        raw = smtp_server.connect()
        raw.reply()
        raw.send(b"EHLO c\r\nMAIL FROM:<a@example.net>\r\n")
        raw.reply(), raw.reply()
        out = []
        for rcpt in (b"alice", b"bob", b"alice+x"):
            raw.send(b"RCPT TO:<" + rcpt + b"@example.org>\r\n")
            out.append(raw.code()[:9])
        raw.close()
        return out

    # The policy is read per session, so the new session sees the limit.
    assert await in_thread(talk) == ["250 2.1.5", "250 2.1.5", "452 4.5.3"]


@pytest_twisted.ensureDeferred
async def test_overlong_line_resynchronises(smtp_server):
    """An over-long command line gets 500 5.5.6, and the next line is a command again."""
    await in_thread(dialog, smtp_server, [
        (b"EHLO c.example\r\n", "250 "),
        (b"NOOP " + b"x" * 5000 + b"\r\n", "500 5.5.6"),
        (b"NOOP\r\n", "250 2.0.0"),
    ])


@pytest_twisted.ensureDeferred
async def test_bare_lf_in_command_is_refused(smtp_server):
    """A command ended by a bare LF gets 521 5.5.2 and the connection is closed."""

    def talk():
        raw = smtp_server.connect()
        raw.reply()
        raw.send(b"EHLO c.example\n")
        reply = raw.code()
        return reply, raw.closed()

    reply, closed = await in_thread(talk)
    assert reply.startswith("521 5.5.2") and closed


@pytest_twisted.ensureDeferred
async def test_quit_closes(smtp_server):
    """QUIT gets 221 and the server closes the connection."""

    def talk():
        raw = smtp_server.connect()
        raw.reply()
        raw.send(b"QUIT\r\n")
        return raw.code(), raw.closed()

    reply, closed = await in_thread(talk)
    assert reply == "221 2.0.0 mx.test Bye" and closed


@pytest_twisted.ensureDeferred
async def test_connection_limit_per_ip(smtp_server, make_policy):
    """Sessions beyond the per-IP limit are turned away with 421 4.7.0."""
    smtp_server.factory.policy = make_policy(max_connections_per_ip=2)

    def talk():
        first, second = smtp_server.connect(), smtp_server.connect()
        first.reply(), second.reply()
        third = smtp_server.connect()
        reply = third.code()
        for raw in (first, second, third):
            raw.close()
        return reply

    assert (await in_thread(talk)).startswith("421 4.7.0")


@pytest_twisted.ensureDeferred
async def test_idle_session_times_out(smtp_server, make_policy):
    """A session idle past the command timeout gets 421 4.4.2 and is closed."""
    smtp_server.factory.policy = make_policy(command_timeout=0.3)

    def talk():
        raw = smtp_server.connect()
        raw.reply()
        return raw.code(), raw.closed()

    reply, closed = await in_thread(talk)
    assert reply.startswith("421 4.4.2") and closed


@pytest_twisted.ensureDeferred
async def test_shutting_down_answers_421_and_closes(smtp_server):
    """Once the server is stopping, the next command gets 421 4.3.2 and the session ends."""

    def talk():
        raw = smtp_server.connect()
        raw.reply()
        raw.send(b"EHLO c.example\r\n")
        raw.reply()
        smtp_server.factory.shutting_down = True
        raw.send(b"MAIL FROM:<a@example.net>\r\n")
        return raw.code(), raw.closed()

    reply, closed = await in_thread(talk)
    assert reply.startswith("421 4.3.2") and closed


@pytest_twisted.ensureDeferred
async def test_postmaster_without_domain_is_accepted(smtp_server):
    """RCPT TO:<Postmaster> (any case, no domain) must be accepted (RFC 5321 §4.1.1.3)."""
    await in_thread(dialog, smtp_server, [
        (b"EHLO c.example\r\n", "250 "),
        (b"MAIL FROM:<>\r\n", "250 2.1.0"),
        (b"RCPT TO:<PostMaster>\r\n", "250 2.1.5"),
        (b"DATA\r\n", "354"),
        (MESSAGE + b".\r\n", "250 2.0.0"),
    ])
    assert len(smtp_server.messages("alice")) == 1


@pytest_twisted.ensureDeferred
async def test_dsn_and_utf8_parameters(smtp_server):
    """DSN parameters are validated (RFC 3461); UTF-8 addresses need SMTPUTF8 (RFC 6531)."""
    await in_thread(dialog, smtp_server, [
        (b"EHLO c.example\r\n", "250 "),
        (b"MAIL FROM:<a@example.net> RET=HDRS ENVID=QQ+2B314\r\n", "250 2.1.0"),
        (b"RCPT TO:<alice@example.org> NOTIFY=NEVER,DELAY\r\n", "501 5.5.4"),
        (b"RCPT TO:<alice@example.org> NOTIFY=FAILURE,DELAY ORCPT=rfc822;alice+2B@example.org\r\n",
         "250 2.1.5"),
        (b"RSET\r\n", "250 2.0.0"),
        (b"MAIL FROM:<a@example.net> RET=MAYBE\r\n", "501 5.5.4"),
        ("MAIL FROM:<jos\u00e9@example.net>\r\n".encode(), "553 5.6.7"),
        ("MAIL FROM:<jos\u00e9@example.net> SMTPUTF8\r\n".encode(), "250 2.1.0"),
        (b"RCPT TO:<alice@example.org>\r\n", "250 2.1.5"),
        (b"DATA\r\n", "354"),
        ("Subject: caf\u00e9\r\n\r\nUTF-8 headers.\r\n.\r\n".encode(), "250 2.0.0"),
    ])
    [stored] = smtp_server.messages("alice")
    assert "Subject: caf\u00e9".encode() in stored
    assert b"with UTF8SMTP" in stored or b"with UTF8ESMTP" in stored


@pytest_twisted.ensureDeferred
async def test_mail_loop_is_refused_after_100_hops(smtp_server):
    """RFC 5321 §6.3: more than 100 Received fields (ours included) means a loop: 554 5.4.6."""
    hop = b"Received: from a.example by b.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    await in_thread(dialog, smtp_server, [
        (b"EHLO c.example\r\n", "250 "),
        (b"MAIL FROM:<a@example.net>\r\n", "250 2.1.0"),
        (b"RCPT TO:<alice@example.org>\r\n", "250 2.1.5"),
        (b"DATA\r\n", "354"),
        (hop * 100 + MESSAGE + b".\r\n", "554 5.4.6"),
        (b"MAIL FROM:<a@example.net>\r\n", "250 2.1.0"),
        (b"RCPT TO:<alice@example.org>\r\n", "250 2.1.5"),
        (b"DATA\r\n", "354"),
        (hop * 99 + MESSAGE + b".\r\n", "250 2.0.0"),
    ])
    assert len(smtp_server.messages("alice")) == 1
