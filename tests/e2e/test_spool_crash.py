"""The spool under kill -9 (issue: "a crash at any point loses no message and delivers none
twice to the same recipient once that recipient was recorded delivered").

Server A (a real twistd process) takes a message on submission for carol@remote.test; the
remote MX is a scripted SMTP server in this test process on 127.0.0.2, found through a real
DNS server. A is killed with SIGKILL at each step:

1. after the 250 to the client, before any delivery attempt (the remote is down);
2. in the middle of the remote transaction (the remote never answers the final dot);
3. after the remote's 250 but before A records it: the message is sent again after the
   restart. This is the documented at-least-once window (RFC 5321 §6.1 accepts duplicates
   over losses); the test proves the window is that narrow and nothing is lost;
4. after A recorded the delivery: no second copy after the restart.
"""

from __future__ import annotations

import os
import signal
import smtplib
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread

from tests.dns_server import Zone, start_dns_server
from tests.e2e.conftest import ServerProcess, free_port
from tests.e2e.mail import insecure_context, provision

pytestmark = pytest.mark.e2e

BODY = b"Subject: crash test\r\n\r\nmust arrive\r\n"


class Remote(Protocol):
    """A minimal SMTP server whose reply to the final dot is scripted by the factory."""

    def connectionMade(self) -> None:
        self.buffer = b""
        self.in_data = False
        self.transport.write(b"220 mx.remote.test ESMTP\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    return
                message, self.buffer = self.buffer[: end + 2], self.buffer[end + 5 :]
                self.in_data = False
                self.factory.end_of_data(self, message)
                continue
            if b"\r\n" not in self.buffer:
                return
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            verb = line[:4].upper()
            if verb == b"DATA":
                self.in_data = True
                self.transport.write(b"354 go ahead\r\n")
            elif verb == b"QUIT":
                self.transport.write(b"221 bye\r\n")
                self.transport.loseConnection()
            elif verb == b"EHLO":
                self.transport.write(b"250-mx.remote.test\r\n250 8BITMIME\r\n")
            else:
                self.transport.write(b"250 2.0.0 ok\r\n")


class RemoteFactory(Factory):
    protocol = Remote

    def __init__(self) -> None:
        self.mode = "accept"  # accept | stall | kill-then-accept
        self.received: list[bytes] = []
        self.victim: ServerProcess | None = None

    def end_of_data(self, session: Remote, message: bytes) -> None:
        if self.mode == "stall":
            self.received_stalled = message
            return
        if self.mode == "kill-then-accept":
            assert self.victim is not None and self.victim.process is not None
            os.kill(self.victim.process.pid, signal.SIGKILL)  # dies before it hears the 250
            self.mode = "accept"
        self.received.append(message)
        session.transport.write(b"250 2.0.0 queued\r\n")


async def until(predicate, timeout: float = 30.0) -> None:
    from twisted.internet.task import deferLater

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await deferLater(reactor, 0.05, lambda: None)


@pytest.fixture
def setup(tmp_path):
    port = free_port()
    dns = start_dns_server(reactor, Zone("test", {
        "remote.test": [("MX", (10, "mx.remote.test"))],
        "mx.remote.test": [("A", "127.0.0.2")],
    }))
    remote = RemoteFactory()
    server = ServerProcess(
        tmp_path,
        {"server": {"hostname": "mail.example.org"}, "store": {"fsync": True},
         "delivery": {"nameservers": [dns.address], "port": port, "first_retry": 1.0,
                      "max_retry": 1.0}},
        listen_keys=("http.listen", "submission.listen"),
    )
    remote.victim = server
    state = {"listener": None}

    def up() -> None:
        state["listener"] = reactor.listenTCP(port, remote, interface="127.0.0.2")

    def down():
        listener, state["listener"] = state["listener"], None
        return listener.stopListening() if listener is not None else None

    yield server, remote, up, down
    if server.running:
        server.stop(signal.SIGKILL)
    stopping = down()
    if stopping is not None:
        pytest_twisted.blockon(stopping)
    pytest_twisted.blockon(dns.stop())


def submit(server: ServerProcess) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["submission.listen"], timeout=10) as client:
        client.starttls(context=insecure_context())
        client.login("alice@example.org", "secret-pw")
        client.sendmail("alice@example.org", ["carol@remote.test"],
                        b"From: alice@example.org\r\n" + BODY)


def queued(server: ServerProcess) -> int:
    spool = Path(server.data_dir) / "spool"
    return len([p for p in spool.iterdir() if p.name != "tmp"]) if spool.exists() else 0


@pytest_twisted.ensureDeferred
async def test_kill_after_accept_before_any_attempt(setup):
    server, remote, up, _down = setup
    await provision(server.data_dir, "example.org")
    await deferToThread(server.start)
    await deferToThread(submit, server)  # the remote is down: the message waits in the spool
    assert queued(server) == 1
    server.stop(signal.SIGKILL)
    up()
    await deferToThread(server.start)
    await until(lambda: len(remote.received) == 1)
    await until(lambda: queued(server) == 0)
    assert remote.received[0].endswith(BODY)


@pytest_twisted.ensureDeferred
async def test_kill_in_the_middle_of_the_remote_transaction(setup):
    server, remote, up, _down = setup
    await provision(server.data_dir, "example.org")
    remote.mode = "stall"
    up()
    await deferToThread(server.start)
    await deferToThread(submit, server)
    await until(lambda: hasattr(remote, "received_stalled"))
    server.stop(signal.SIGKILL)
    remote.mode = "accept"
    await deferToThread(server.start)
    await until(lambda: len(remote.received) == 1)
    await until(lambda: queued(server) == 0)
    assert remote.received[0].endswith(BODY)


@pytest_twisted.ensureDeferred
async def test_kill_after_remote_250_before_recording_resends(setup):
    server, remote, up, _down = setup
    await provision(server.data_dir, "example.org")
    remote.mode = "kill-then-accept"
    up()
    await deferToThread(server.start)
    await deferToThread(submit, server)
    await until(lambda: not server.running)
    assert len(remote.received) == 1 and queued(server) == 1  # not recorded as delivered
    await deferToThread(server.start)
    await until(lambda: queued(server) == 0)
    assert len(remote.received) == 2  # the at-least-once window: one duplicate, no loss
    assert remote.received[0] == remote.received[1]


@pytest_twisted.ensureDeferred
async def test_no_second_copy_once_recorded_delivered(setup):
    server, remote, up, _down = setup
    await provision(server.data_dir, "example.org")
    up()
    await deferToThread(server.start)
    await deferToThread(submit, server)
    await until(lambda: len(remote.received) == 1 and queued(server) == 0)
    server.stop(signal.SIGKILL)
    await deferToThread(server.start)
    from twisted.internet.task import deferLater

    await deferLater(reactor, 2.5, lambda: None)  # longer than first_retry and the start poke
    assert len(remote.received) == 1
