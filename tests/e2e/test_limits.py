"""Limits and abuse on the real server (``twistd mailserver``), all from its config:

- connections: ``max_connections`` in all and ``max_connections_per_ip`` per client address,
  for SMTP, IMAP and POP3, each refused with the protocol's own "too many" answer and
  admitted again once a connection closes (clients on 127.0.0.1, .2 and .3);
- slow clients (slowloris): a command line or a message trickled byte by byte is cut off
  with 421 4.4.2 although bytes keep coming (``command_timeout``, ``data_timeout`` +
  ``min_data_rate``, mailserver/smtp/limits.py);
- sizes: a message over ``[smtp] max_message_size`` is read to its end, refused with 552
  5.3.4 and the session goes on; an IMAP literal over ``max_literal`` is refused with NO
  [TOOBIG] before it is sent; a message larger than the whole quota gets 552 5.2.2.

The other side of "memory bounds": SMTP content is spooled to a temporary file past 1 MiB
(mailserver/smtp/transaction.py) and an over-size DATA is read without being stored
(mailserver/smtp/data.py); an IMAP literal is held in memory up to ``max_literal`` and an
over-size non-synchronizing one is discarded as it arrives (mailserver/imap/grammar.py).

Timers here are seconds long and the loops that trickle bytes are bounded (several times
the timer): the assertions are about what the server answers, never about how long it took.
"""

from __future__ import annotations

import imaplib
import smtplib
import socket
import time

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.e2e.conftest import ServerProcess
from tests.e2e.mail import PASSWORD, provision

pytestmark = pytest.mark.e2e

ALICE = "alice@example.org"
LIMITS = {"max_connections": 3, "max_connections_per_ip": 2}
#: listener key -> (first bytes of a greeting, first bytes of the "too many" answer)
ANSWERS = {
    "smtp.listen": (b"220 ", b"421 4.7.0"),
    "imap.listen": (b"* OK", b"* BYE"),
    "pop3.listen": (b"+OK", b"-ERR [SYS/TEMP] Too many connections"),
}


def first_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def last_line(sock: socket.socket) -> bytes:
    """The last line of one (possibly multi-line) SMTP reply."""
    data = b""
    while not data.endswith(b"\r\n") or data.split(b"\r\n")[-2][3:4] == b"-":
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n")[-2] if b"\r\n" in data else data


def connect(server: ServerProcess, key: str, source: str) -> tuple[socket.socket, bytes]:
    """A connection to ``key``'s port from the client address ``source``; its first line."""
    sock = socket.create_connection(
        ("127.0.0.1", server.ports[key]), timeout=10, source_address=(source, 0)
    )
    return sock, first_line(sock)


def until_admitted(server: ServerProcess, key: str, source: str) -> socket.socket:
    """Connect until the server (which sees a closed connection a moment later) greets."""
    greeting = ANSWERS[key][0]
    deadline = time.monotonic() + 10
    while True:
        sock, line = connect(server, key, source)
        if line.startswith(greeting):
            return sock
        sock.close()
        assert time.monotonic() < deadline, line
        time.sleep(0.05)


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("key", sorted(ANSWERS))
async def test_connection_limits_overall_and_per_ip(server_process, key):
    """Two connections per address, three in all; the next is refused with the protocol's
    answer, and a closed connection makes room again."""
    section = key.split(".")[0]
    server = server_process({section: dict(LIMITS)}, listen_keys=("http.listen", key))
    await deferToThread(server.start)
    greeting, refusal = ANSWERS[key]

    def scenario() -> None:
        a1, line1 = connect(server, key, "127.0.0.1")
        a2, line2 = connect(server, key, "127.0.0.1")
        assert line1.startswith(greeting) and line2.startswith(greeting)
        a3, line3 = connect(server, key, "127.0.0.1")
        assert line3.startswith(refusal), line3  # per IP
        assert first_line(a3) == b""  # and closed
        a3.close()
        b1, line = connect(server, key, "127.0.0.2")
        assert line.startswith(greeting), line
        c1, line = connect(server, key, "127.0.0.3")
        assert line.startswith(refusal), line  # overall
        c1.close()
        b1.close()
        c2 = until_admitted(server, key, "127.0.0.3")
        for sock in (a1, a2, c2):
            sock.close()

    await deferToThread(scenario)
    assert server.stop() == 0, server.output()


@pytest_twisted.ensureDeferred
async def test_slow_clients_are_cut_off(server_process):
    """A command line trickled a byte at a time, and DATA trickled far below min_data_rate,
    each end with 421 4.4.2 while the client is still sending."""
    server = server_process(
        {"smtp": {"command_timeout": 1.0, "data_timeout": 1.0, "min_data_rate": 1000}},
        listen_keys=("http.listen", "smtp.listen"),
    )
    await provision(server.data_dir, "example.org")
    await deferToThread(server.start)

    def trickle(sock: socket.socket, piece: bytes, rounds: int = 40) -> bytes:
        """Send ``piece`` every 0.25 s until the server answers; its answer."""
        sock.settimeout(0.25)
        for _ in range(rounds):
            try:
                sock.sendall(piece)
                answer = sock.recv(4096)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                return b""
            return answer
        return b""

    def scenario() -> None:
        sock, line = connect(server, "smtp.listen", "127.0.0.1")
        assert line.startswith(b"220 ")
        assert trickle(sock, b"N").startswith(b"421 4.4.2")  # "NNNN..." never ends a line
        sock.close()

        sock, _ = connect(server, "smtp.listen", "127.0.0.1")
        for command, expected in (
            (b"EHLO client.test\r\n", b"250 "),
            (b"MAIL FROM:<carol@example.net>\r\n", b"250 "),
            (f"RCPT TO:<{ALICE}>\r\n".encode(), b"250 "),
            (b"DATA\r\n", b"354 "),
        ):
            sock.sendall(command)
            assert last_line(sock).startswith(expected)
        assert trickle(sock, b"Subject: x\r\n").startswith(b"421 4.4.2")
        sock.close()

    await deferToThread(scenario)
    assert server.running and server.get("/healthz")[0] == 200
    assert server.stop() == 0, server.output()


@pytest_twisted.ensureDeferred
async def test_size_limits_and_quota(server_process):
    """Over max_message_size: 552 5.3.4 after the whole DATA, and the session goes on; over
    the whole quota: 552 5.2.2; an IMAP literal over max_literal: NO [TOOBIG]."""
    server = server_process(
        {"smtp": {"max_message_size": 2_000_000}, "store": {"quota_mb": 1},
         "imap": {"max_literal": 100_000}},
        listen_keys=("http.listen", "smtp.listen", "imap.listen"),
    )
    await provision(server.data_dir, "example.org")
    await deferToThread(server.start)
    line = b"x" * 998 + b"\r\n"

    def scenario() -> None:
        with smtplib.SMTP("127.0.0.1", server.ports["smtp.listen"], timeout=30) as smtp:
            smtp.ehlo("client.test")
            smtp.esmtp_features.pop("size", None)  # no SIZE: the server finds out while reading
            for lines, wanted in ((2_500, (552, b"5.3.4")), (1_500, (552, b"5.2.2"))):
                body = b"Subject: big\r\n\r\n" + line * lines
                with pytest.raises(smtplib.SMTPDataError) as refused:
                    smtp.sendmail("carol@example.net", [ALICE], body)
                assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == wanted
                assert smtp.noop()[0] == 250  # the session goes on
            smtp.sendmail("carol@example.net", [ALICE], b"Subject: small\r\n\r\nok\r\n")

        imap = imaplib.IMAP4("127.0.0.1", server.ports["imap.listen"], timeout=10)
        imap.starttls()
        imap.login(ALICE, PASSWORD)
        typ, data = imap.append("INBOX", None, None, b"Subject: big\r\n\r\n" + line * 200)
        assert typ == "NO" and data[0].startswith(b"[TOOBIG]"), data
        assert imap.select("INBOX") == ("OK", [b"1"])  # only the small one arrived
        imap.logout()

    await deferToThread(scenario)
    assert server.stop() == 0, server.output()
