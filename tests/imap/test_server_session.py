"""The IMAP session: greeting, capabilities, TLS, login, states, literals and pipelining."""

from __future__ import annotations

import base64
import imaplib
import socket

import pytest_twisted
from twisted.internet import reactor

from tests.imap.conftest import HOST, PASSWORD, client_context, in_thread, make_factory

CORE = "IMAP4rev1 IMAP4rev2 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE"


@pytest_twisted.ensureDeferred
async def test_logindisabled_until_starttls(tls_imap):
    """Before TLS the greeting offers STARTTLS and LOGINDISABLED and no AUTH=; LOGIN and
    AUTHENTICATE are refused with NO [PRIVACYREQUIRED]; after STARTTLS, AUTH= is offered and
    LOGIN works."""

    def dialog():
        client = tls_imap.raw(greeting=False)
        greeting = client.text()
        assert greeting.startswith(f"* OK [CAPABILITY {CORE} ")
        assert greeting.endswith("STARTTLS LOGINDISABLED] imap.test IMAP4rev2 server ready")
        assert "AUTH=" not in greeting
        no = client.command("a", f"LOGIN alice@example.org {PASSWORD}")
        assert no == ["a NO [PRIVACYREQUIRED] LOGIN is disabled before STARTTLS"]
        no = client.command("b", "AUTHENTICATE PLAIN")
        assert no == ["b NO [PRIVACYREQUIRED] Authentication is disabled before STARTTLS"]
        assert client.command("c", "STARTTLS") == ["c OK Begin TLS negotiation now"]
        client.starttls()
        capability = client.command("d", "CAPABILITY")
        assert capability[0].endswith(" AUTH=PLAIN AUTH=LOGIN")
        assert "STARTTLS" not in capability[0] and "LOGINDISABLED" not in capability[0]
        assert client.command("e", "STARTTLS") == ["e BAD TLS is already active"]
        ok = client.command("f", f"LOGIN alice@example.org {PASSWORD}")
        assert ok[-1].startswith("f OK [CAPABILITY IMAP4rev1 ") and ok[-1].endswith("Logged in")
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_starttls_discards_pipelined_input(tls_imap):
    """A command pipelined after STARTTLS in the same packet is never executed (RFC 9051
    §6.2.1: no plaintext injection into the TLS session)."""

    def dialog():
        client = tls_imap.raw()
        client.send("a STARTTLS\r\nb LOGIN alice@example.org secret\r\n")
        assert client.text() == "a OK Begin TLS negotiation now"
        client.starttls()
        assert client.command("c", "NOOP") == ["c OK NOOP completed"]
        assert client.command("d", "SELECT INBOX") == ["d BAD Log in first"]
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_imaplib_over_starttls(tls_imap):
    """Python's imaplib negotiates STARTTLS, logs in and lists the folders."""

    def session():
        client = imaplib.IMAP4(HOST, tls_imap.port, timeout=10)
        client.starttls(client_context())
        assert client.login("alice@example.org", PASSWORD)[0] == "OK"
        status, folders = client.list()
        assert status == "OK" and len(folders) == 6
        assert client.logout()[0] == "BYE"

    await in_thread(session)


@pytest_twisted.ensureDeferred
async def test_imaplib_over_implicit_tls(tls_options, memory_imap, make_policy):
    """A listener with implicit TLS (port 993) needs no STARTTLS: AUTH= is offered at once."""
    policy = make_policy(auth_needs_tls=True, implicit_tls=True)
    factory = make_factory(memory_imap.store, memory_imap.directory, policy, tls_options)
    port = reactor.listenSSL(0, factory, tls_options, interface=HOST)

    def session():
        client = imaplib.IMAP4_SSL(HOST, port.getHost().port, ssl_context=client_context())
        assert "AUTH=PLAIN" in client.capabilities and "STARTTLS" not in client.capabilities
        client.login("bob@example.org", PASSWORD)
        assert client.select("INBOX") == ("OK", [b"0"])
        client.logout()

    try:
        await in_thread(session)
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_wrong_state_and_bad_syntax_get_bad(memory_imap):
    """A command in the wrong state gets BAD with a reason, as does every malformed line;
    the session goes on."""

    def dialog():
        client = memory_imap.raw()
        assert client.command("a", "SELECT INBOX") == ["a BAD Log in first"]
        assert client.command("b", "FETCH 1 FLAGS") == ["b BAD Log in first"]
        assert client.command("c", "ENABLE IMAP4rev2") == ["c BAD Log in first"]
        assert client.command("d", "XYZZY") == ["d BAD unknown command"]
        assert client.command("e", "GETQUOTA x") == ["e BAD Log in first"]
        assert client.command("f", "LOGIN onlyone")[-1].startswith("f BAD ")
        client.send("(bad\r\n")
        assert client.text().startswith("* BAD ")
        client.login()
        assert client.command("g", "FETCH 1 FLAGS") == ["g BAD No mailbox selected"]
        assert client.command("h", "LOGIN a b") == ["h BAD Already authenticated"]
        assert client.command("i", "STARTTLS") == ["i BAD Already authenticated"]
        assert client.command("j", "SELECT INBOX")[-1] == "j OK [READ-WRITE] SELECT completed"
        assert client.command("k", "ENABLE UTF8=ACCEPT") == [
            "k BAD Not allowed with a mailbox selected"
        ]
        assert client.command("l", "FETCH 1 FLAGS") == [
            "l BAD Invalid message sequence number (the mailbox has 0)"
        ]
        assert client.command("m", "NOOP") == ["m OK NOOP completed"]
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_login_failures(memory_imap):
    """A wrong password is NO [AUTHENTICATIONFAILED], saying nothing about why."""

    def dialog():
        client = memory_imap.raw()
        wrong = client.command("a", "LOGIN alice@example.org wrong")
        assert wrong == ["a NO [AUTHENTICATIONFAILED] Authentication failed"]
        unknown = client.command("b", "LOGIN nobody@example.org secret")
        assert unknown == ["b NO [AUTHENTICATIONFAILED] Authentication failed"]
        client.login()
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_authenticate_plain_and_login(memory_imap):
    """AUTHENTICATE PLAIN with SASL-IR or after an empty challenge, AUTHENTICATE LOGIN with
    its two challenges; "*" cancels with BAD; bad base64 is BAD."""
    plain = base64.b64encode(b"\0alice@example.org\0secret").decode()

    def dialog():
        client = memory_imap.raw()
        client.send("a AUTHENTICATE PLAIN\r\n")
        assert client.text() == "+ "
        client.send("*\r\n")
        assert client.text() == "a BAD Authentication cancelled"
        client.send("b AUTHENTICATE PLAIN\r\n")
        assert client.text() == "+ "
        client.send("not base64!\r\n")
        assert client.text().startswith("b BAD Invalid SASL response")
        client.send("c AUTHENTICATE LOGIN\r\n")
        assert client.text() == "+ " + base64.b64encode(b"Username:").decode()
        client.send(base64.b64encode(b"alice@example.org") + b"\r\n")
        assert client.text() == "+ " + base64.b64encode(b"Password:").decode()
        client.send(base64.b64encode(b"wrong") + b"\r\n")
        assert client.text() == "c NO [AUTHENTICATIONFAILED] Authentication failed"
        assert client.command("d", "AUTHENTICATE XOAUTH9") == [
            "d NO [CANNOT] Unsupported authentication mechanism"
        ]
        ok = client.command("e", f"AUTHENTICATE PLAIN {plain}")
        assert ok[-1].startswith("e OK [CAPABILITY ") and ok[-1].endswith("Logged in")
        assert client.command("f", "SELECT INBOX")[-1].startswith("f OK [READ-WRITE]")
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_logout_says_bye_then_ok_and_closes(memory_imap):
    """LOGOUT: untagged BYE, then the tagged OK, then the server closes (RFC 9051 §6.1.3)."""

    def dialog():
        client = memory_imap.raw()
        assert client.command("a", "LOGOUT") == [
            "* BYE imap.test logging out",
            "a OK LOGOUT completed",
        ]
        assert client.closed()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_literals(memory_imap, make_policy):
    """A synchronizing literal gets "+ Ready"; LITERAL+ needs none; a literal over the limit
    is NO [TOOBIG] without a continuation, and the session goes on."""

    def dialog():
        client = memory_imap.raw()
        client.send("a LOGIN {17}\r\n")
        assert client.text() == "+ Ready"
        client.send("alice@example.org {6+}\r\nsecret\r\n")
        assert client.text().startswith("a OK [CAPABILITY ")
        client.send("b APPEND INBOX {200000}\r\n")
        assert client.text() == "b NO [TOOBIG] Literal too big"
        client.send("c APPEND INBOX {200000+}\r\n" + "x" * 200000 + "\r\n")
        assert client.text() == "c NO [TOOBIG] Literal too big"
        assert client.command("d", "NOOP") == ["d OK NOOP completed"]
        client.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_pipelined_commands_are_answered_in_order(memory_imap):
    """Commands sent in one packet are answered one after the other, in order, each
    response complete before the next begins."""
    await memory_imap.deliver(b"Subject: one\r\n\r\nbody\r\n")

    def dialog():
        client = memory_imap.raw()
        client.send(
            "a LOGIN alice@example.org secret\r\nb SELECT INBOX\r\nc FETCH 1 (FLAGS)\r\n"
            "d STORE 1 +FLAGS (\\Flagged)\r\ne NOOP\r\nf LOGOUT\r\n"
        )
        lines = client.until("f")
        tags = [line.split(" ")[0] for line in lines if not line.startswith("*")]
        assert tags == ["a", "b", "c", "d", "e", "f"]
        assert "* 1 FETCH (FLAGS ())" in lines
        assert "* 1 FETCH (FLAGS (\\Flagged))" in lines

    def literals():
        """A continuation request waits for the responses to the commands before it."""
        client = memory_imap.raw()
        client.send(
            "a LOGIN alice@example.org secret\r\nb APPEND INBOX {5+}\r\nhello\r\n"
            "c APPEND INBOX {5}\r\n"
        )
        assert client.text().startswith("a OK ")
        assert client.text().startswith("b OK [APPENDUID ")
        assert client.text() == "+ Ready"
        client.send("world\r\n")
        assert client.text().startswith("c OK [APPENDUID ")
        client.close()

    await in_thread(dialog)
    await in_thread(literals)


@pytest_twisted.ensureDeferred
async def test_enable_id_namespace(memory_imap):
    """ENABLE lists what it enabled (once); ID and NAMESPACE answer; IMAP4rev2 mailbox names
    are UTF-8, IMAP4rev1 ones modified UTF-7."""

    def dialog():
        rev1 = memory_imap.raw()
        rev1.login()
        assert rev1.command("a", 'ID ("name" "test")')[0].startswith('* ID ("name" "mailserver"')
        assert rev1.command("b", "NAMESPACE")[0] == '* NAMESPACE (("" "/")) NIL NIL'
        rev2 = memory_imap.raw()
        rev2.login()
        assert rev2.command("c", "ENABLE IMAP4rev2 XFOO") == [
            "* ENABLED IMAP4rev2",
            "c OK ENABLE completed",
        ]
        assert rev2.command("d", "ENABLE IMAP4rev2")[0] == "* ENABLED"
        assert rev2.command("e", 'CREATE "Ünïcode"')[-1].endswith("] CREATE completed")
        assert '* LIST (\\HasNoChildren) "/" "Ünïcode"' in rev2.command("f", 'LIST "" "Ü*"')
        assert '* LIST (\\HasNoChildren) "/" &ANw-n&AO8-code' in rev1.command("g", 'LIST "" *')
        rev1.close()
        rev2.close()

    await in_thread(dialog)


@pytest_twisted.ensureDeferred
async def test_too_many_connections(memory_imap, make_policy):
    """Over the per-client limit a connection gets BYE and is closed."""
    memory_imap.factory.policy = make_policy(max_connections_per_ip=1)

    def dialog():
        first = memory_imap.raw()
        second = socket.create_connection((HOST, memory_imap.port), timeout=10)
        assert second.recv(100) == b"* BYE imap.test Too many connections\r\n"
        first.close()
        second.close()

    await in_thread(dialog)
