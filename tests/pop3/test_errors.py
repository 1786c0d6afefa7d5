"""Every bad input gets a clear ``-ERR`` and the session goes on (or ends cleanly):
unknown commands, wrong states, bad arguments, over-long and non-CRLF lines, too many
errors, too many connections, the autologout timer (RFC 1939 §3) and a shutdown. Pipelined
commands are answered in order (RFC 2449 §6.6)."""

from __future__ import annotations

from dataclasses import replace

from twisted.internet import reactor
from twisted.internet.task import Clock

from tests.pop3.conftest import POLICY, in_thread, message, start_pop3


async def test_commands_in_the_wrong_state_and_bad_arguments(pop3_server):
    await pop3_server.deliver(message("one"))

    def dialog():
        client = pop3_server.raw()
        before = [
            client.command("STAT"),
            client.command("PASS secret"),
            client.command("FROB"),
            client.command("APOP alice@example.org 0123456789abcdef0123456789abcdef"),
        ]
        client.login()
        after = [
            client.command("USER alice@example.org"),
            client.command("RETR"),
            client.command("RETR x"),
            client.command("RETR 0"),
            client.command("RETR 2"),
            client.command("RETR 99999999999"),
            client.command("TOP 1"),
            client.command("TOP 1 -1"),
            client.command("LIST 1 2"),
            client.command("DELE"),
            client.command("UTF8"),
            client.command("STLS"),
            client.command("NOOP"),
        ]
        client.command("QUIT")
        return before, after

    before, after = await in_thread(dialog)
    assert before == [
        "-ERR STAT: Log in first",
        "-ERR Send USER first",
        "-ERR Unknown command FROB",
        "-ERR APOP is not supported: use USER/PASS or AUTH over TLS",
    ]
    assert after == [
        "-ERR USER: Not allowed after login",
        "-ERR RETR takes 1 argument(s)",
        "-ERR No such message",
        "-ERR No such message",
        "-ERR No such message",
        "-ERR No such message",
        "-ERR TOP takes 2 argument(s)",
        "-ERR TOP needs a non-negative number of lines",
        "-ERR LIST takes 1 argument(s)",
        "-ERR DELE takes 1 argument(s)",
        "-ERR UTF8: Not allowed after login",
        "-ERR STLS: Not allowed after login",
        "+OK",
    ]


async def test_bad_lines(pop3_server):
    """Bare LF, NUL and over-long lines are refused; the next good line is answered."""

    def dialog():
        client = pop3_server.raw()
        client.send(b"CAPA\n")
        bare = client.text()
        client.send(b"USER a\0b\r\n")
        nul = client.text()
        client.send(b"USER " + b"x" * 20000 + b"\r\n")
        long = client.text()
        client.send(b"\xff\xfe\r\n")
        binary = client.text()
        client.send(b"QUIT\r\n")
        return bare, nul, long, binary, client.text()

    assert await in_thread(dialog) == (
        "-ERR Lines must end with CRLF",
        "-ERR Bare CR or NUL in the command",
        "-ERR Line too long",
        "-ERR Unknown command",
        "+OK pop.test POP3 server signing off",
    )


async def test_pipelined_commands_are_answered_in_order(pop3_server):
    """Commands sent in one packet, RETR and LIST among them, are answered in order."""
    for n in range(3):
        await pop3_server.deliver(message(f"m{n}"))
    size = len(message("m0"))

    def dialog():
        client = pop3_server.raw()
        client.send(
            "USER alice@example.org\r\nPASS secret\r\nSTAT\r\nRETR 1\r\nLIST\r\nDELE 3\r\n"
            "UIDL 3\r\nQUIT\r\n"
        )
        lines = []
        while True:
            try:
                lines.append(client.text())
            except ConnectionError:
                return lines

    lines = await in_thread(dialog)
    assert lines[:3] == [
        "+OK Send your password",
        f"+OK Logged in, 3 messages ({3 * size} octets)",
        f"+OK 3 {3 * size}",
    ]
    assert lines[3] == f"+OK {size} octets"
    body = lines[4 : lines.index(".")]
    assert "\r\n".join(body).encode() + b"\r\n" == message("m0")
    rest = lines[lines.index(".") + 1 :]
    assert rest == [
        f"+OK 3 messages ({3 * size} octets)",
        f"1 {size}",
        f"2 {size}",
        f"3 {size}",
        ".",
        "+OK Message 3 deleted",
        "-ERR Message 3 already deleted",
        "+OK pop.test POP3 server signing off (2 left)",
    ]


async def test_too_many_errors_close_the_connection(make_pop3):
    server = make_pop3(max_errors=3)

    def dialog():
        client = server.raw()
        replies = [client.command("X1"), client.command("X2"), client.command("X3")]
        replies.append(client.text())
        return replies, client.closed()

    replies, closed = await in_thread(dialog)
    assert replies[-1] == "-ERR Too many errors" and closed


async def test_too_many_connections_from_one_address(make_pop3):
    server = make_pop3(max_connections_per_ip=1)

    def dialog():
        first = server.raw()
        second = server.raw(greeting=False)
        refused = second.text()
        closed = second.closed()
        first.close()
        return refused, closed

    refused, closed = await in_thread(dialog)
    assert refused == "-ERR [SYS/TEMP] Too many connections, try again later" and closed


class ClockReactor(Clock):
    """A Clock for the autologout timer, with the real reactor's thread pool."""

    def getThreadPool(self):
        return reactor.getThreadPool()

    def callFromThread(self, function, *args, **kwargs):
        return reactor.callFromThread(function, *args, **kwargs)


async def test_autologout_deletes_nothing(memory_pop3):
    """After the autologout time of silence the session is closed without UPDATE: a DELE
    made before it is forgotten (RFC 1939 §3, §6)."""
    clock = ClockReactor()
    store, directory = memory_pop3.store, memory_pop3.directory
    server, port = start_pop3(store, directory, replace(POLICY, timeout=600), None)
    server.factory.reactor = clock
    await server.deliver(message("one"))
    client = await in_thread(server.raw)
    await in_thread(client.login)
    assert await in_thread(client.command, "DELE 1") == "+OK Message 1 deleted"
    clock.advance(599)
    assert await in_thread(client.command, "NOOP") == "+OK"  # a command resets the timer
    clock.advance(600)
    assert await in_thread(client.text) == "-ERR Autologout; idle for too long"
    assert await in_thread(client.closed)
    assert len(list(server.folder().uids())) == 1
    await port.stopListening()


async def test_shutdown_answers_sys_temp_and_deletes_nothing(pop3_server):
    await pop3_server.deliver(message("one"))
    client = await in_thread(pop3_server.raw)
    await in_thread(client.login)
    await in_thread(client.command, "DELE 1")
    pop3_server.factory.shutting_down = True
    try:
        reply = await in_thread(client.command, "QUIT")
    finally:
        pop3_server.factory.shutting_down = False
    assert reply == "-ERR [SYS/TEMP] Server shutting down, try again later"
    assert await in_thread(client.closed)
    assert len(list(pop3_server.folder().uids())) == 1


async def test_utf8_and_utf8_user_names(pop3_server):
    """RFC 6856: UTF8 in AUTHORIZATION is accepted; a UTF-8 user name is passed to the
    checker as UTF-8 (here an unknown user: a plain [AUTH] failure, no error)."""

    def dialog():
        client = pop3_server.raw()
        return [
            client.command("UTF8"),
            client.command("USER jörg@example.org"),
            client.command("PASS geheim"),
        ]

    assert await in_thread(dialog) == [
        "+OK UTF8 enabled",
        "+OK Send your password",
        "-ERR [AUTH] Authentication failed",
    ]
