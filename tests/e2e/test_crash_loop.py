"""Crash safety under load: the real server (``twistd mailserver``) is killed with SIGKILL at
random points while mail flows, restarted, and at the end every acknowledged message has been
delivered to each of its recipients exactly once, or twice only where an at-least-once window
was open, and each such duplicate is accounted for.

The load (bounded: N messages, K kills, one deterministic seed):

- even messages come in on port 25 from carol@example.net for alice and bob (local);
- odd messages are submitted by alice (STARTTLS + AUTH) for bob (local) and
  carol@remote.test, whose MX is a recording SMTP server in this process on 127.0.0.2,
  found through a real DNS server (tests/dns_server.py).

One client thread sends the messages in order, like an MTA: a message whose transaction
fails is sent again (same Message-ID) once the server is back. The test kills the server
after a random number of acknowledged messages plus a random delay (so the kill falls into
any phase: a command, the DATA transfer, the commit, a delivery to the remote MX), then
starts it again on the same data; one of the restarts is itself killed a moment after it
began (during start-up recovery).

Where duplicates can come from, and how each is detected:

1. **The client's window**: the server committed the message but was killed before the
   client read the 250. The client cannot know, so it sends the message again: two copies
   with the same Message-ID (and different queue ids in their Received fields). The client
   records every attempt that failed after the final ``.`` was sent ("in doubt"); a
   message may have a second copy only if it has such an attempt.
2. **The spool's window**: the remote MX answered 250 but the server was killed before it
   recorded the delivery, so it delivers again after the restart (RFC 5321 §6.1 prefers a
   duplicate to a loss). The remote records when each copy arrived; a second copy there
   is accounted for only if a kill fell between the two arrivals.

Never more than two copies; never a lost acknowledged message; an unacknowledged,
never-in-doubt message is never delivered.
"""

from __future__ import annotations

import random
import re
import signal
import smtplib
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from tests.dns_server import Zone, start_dns_server
from tests.e2e.conftest import ServerProcess, free_port
from tests.e2e.mail import PASSWORD, folder_messages, insecure_context, provision

pytestmark = pytest.mark.e2e

SEED = 20261129
N = 60  # messages
K = 5  # kills
ALICE, BOB, CAROL = "alice@example.org", "bob@example.org", "carol@remote.test"
MESSAGE_ID = re.compile(rb"^Message-ID:\s*<crash-(\d+)@loop\.test>", re.IGNORECASE | re.MULTILINE)


def recipients(n: int) -> list[str]:
    return [ALICE, BOB] if n % 2 == 0 else [BOB, CAROL]


def message(n: int) -> bytes:
    """Message ``n``: a Message-ID naming it and a body of a few kB (no line starts with
    a dot, so it needs no dot-stuffing)."""
    sender = "carol@example.net" if n % 2 == 0 else ALICE
    head = (
        f"From: {sender}\r\nTo: {', '.join(recipients(n))}\r\nSubject: crash loop {n}\r\n"
        f"Message-ID: <crash-{n}@loop.test>\r\n\r\n"
    ).encode()
    return head + (f"message {n} ".encode() * 7 + b"\r\n") * 60


def number(data: bytes) -> int:
    found = MESSAGE_ID.search(data)
    assert found is not None, data[:500]
    return int(found.group(1))


# --- the remote MX ---------------------------------------------------------------------------


class RecordingMX(Protocol):
    """A minimal SMTP server that accepts everything and records each message's arrival."""

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
                content, self.buffer = self.buffer[: end + 2], self.buffer[end + 5 :]
                self.in_data = False
                self.factory.arrivals[number(content)].append(time.monotonic())
                self.transport.write(b"250 2.0.0 queued\r\n")
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
    protocol = RecordingMX

    def __init__(self) -> None:
        self.arrivals: dict[int, list[float]] = defaultdict(list)


# --- the client ------------------------------------------------------------------------------


@dataclass
class Client:
    """Sends messages 0..N-1 in order, each until it is acknowledged."""

    server: ServerProcess
    acked: set[int] = field(default_factory=set)
    in_doubt: Counter[int] = field(default_factory=Counter)
    failures: Counter[int] = field(default_factory=Counter)
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            for n in range(N):
                self.send_until_acked(n)
        except BaseException as error:  # reported by the test
            self.error = error
        finally:
            self.done.set()

    def send_until_acked(self, n: int) -> None:
        deadline = time.monotonic() + 120
        while True:
            sent_dot = [False]
            try:
                self.attempt(n, sent_dot)
            except (OSError, smtplib.SMTPServerDisconnected) as error:
                self.fail(n, sent_dot[0], deadline, error)
            except smtplib.SMTPResponseException as error:
                if error.smtp_code >= 500:
                    raise
                self.fail(n, sent_dot[0], deadline, error)  # 421 while starting or stopping
            else:
                self.acked.add(n)
                return

    def fail(self, n: int, in_doubt: bool, deadline: float, error: BaseException) -> None:
        self.failures[n] += 1
        if in_doubt:
            self.in_doubt[n] += 1
        if time.monotonic() > deadline:
            raise AssertionError(f"message {n} never acknowledged: {error!r}")
        time.sleep(0.05)

    def attempt(self, n: int, sent_dot: list[bool]) -> None:
        """One SMTP transaction; ``sent_dot[0]`` becomes True once the final dot is sent,
        after which a failure leaves the outcome in doubt."""
        submission = n % 2 == 1
        key = "submission.listen" if submission else "smtp.listen"
        with smtplib.SMTP("127.0.0.1", self.server.ports[key], timeout=10) as client:
            client.ehlo("client.loop.test")
            if submission:
                client.starttls(context=insecure_context())
                client.ehlo("client.loop.test")
                client.login(ALICE, PASSWORD)
            sender = ALICE if submission else "carol@example.net"
            code, text = client.mail(sender)
            if code != 250:
                raise smtplib.SMTPResponseException(code, text)
            for rcpt in recipients(n):
                code, text = client.rcpt(rcpt)
                if code != 250:
                    raise smtplib.SMTPResponseException(code, text)
            code, text = client.docmd("DATA")
            if code != 354:
                raise smtplib.SMTPResponseException(code, text)
            client.send(message(n) + b".\r\n")
            sent_dot[0] = True
            code, text = client.getreply()
            if code != 250:
                raise smtplib.SMTPResponseException(code, text)


def queued(server: ServerProcess) -> int:
    spool = Path(server.data_dir) / "spool"
    return len([p for p in spool.iterdir() if p.name != "tmp"]) if spool.exists() else 0


async def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.05, lambda: None)


@pytest.fixture
def remote_mx():
    """The DNS server and the recording MX on 127.0.0.2: (factory, port, dns address)."""
    port = free_port()
    dns = start_dns_server(reactor, Zone("test", {
        "remote.test": [("MX", (10, "mx.remote.test"))],
        "mx.remote.test": [("A", "127.0.0.2")],
    }))
    factory = RemoteFactory()
    listener = reactor.listenTCP(port, factory, interface="127.0.0.2")
    yield factory, port, dns.address
    pytest_twisted.blockon(listener.stopListening())
    pytest_twisted.blockon(dns.stop())


@pytest_twisted.ensureDeferred
async def test_kill9_loop_loses_nothing_and_duplicates_only_in_doubt(server_process, remote_mx):
    """N messages, K kills at seeded random points: every acknowledged message reaches every
    recipient; a second copy only where a window was open (see the module docstring)."""
    remote, port, dns_address = remote_mx
    server = server_process(
        {
            "server": {"hostname": "mail.example.org"},
            "store": {"fsync": True},
            "delivery": {"nameservers": [dns_address], "port": port, "first_retry": 1.0,
                         "max_retry": 1.0, "tls": "none", "mta_sts": False},
        },
        listen_keys=("http.listen", "smtp.listen", "submission.listen"),
    )
    await provision(server.data_dir, "example.org", ("alice", "bob"))
    await deferToThread(server.start)
    rng = random.Random(SEED)
    thresholds = sorted(rng.sample(range(4, N - 4), K))
    kills: list[float] = []
    client = Client(server)
    sending = deferToThread(client.run)

    in_start_up = rng.randrange(K)  # this kill also hits the restart, during recovery
    for index, threshold in enumerate(thresholds):
        await wait_for(lambda t=threshold: len(client.acked) >= t or client.done.is_set(),
                       180, f"{threshold} acknowledged messages")
        assert client.error is None, client.error
        await deferLater(reactor, rng.uniform(0.0, 0.08), lambda: None)
        status = server.stop(signal.SIGKILL)
        assert status == -signal.SIGKILL, server.output()
        kills.append(time.monotonic())
        if index == in_start_up:
            started = server.stdout().count("listening on")
            server.start(wait=False)
            await wait_for(lambda s=started: server.stdout().count("listening on") > s, 60,
                           "the listeners of the restarted server")
            await deferLater(reactor, rng.uniform(0.0, 0.05), lambda: None)  # recovery runs
            server.stop(signal.SIGKILL)
            kills.append(time.monotonic())
        await deferToThread(server.start)

    await sending
    assert client.error is None, client.error
    assert client.acked == set(range(N))
    odd = [n for n in range(N) if n % 2]
    await wait_for(lambda: all(remote.arrivals.get(n) for n in odd), 120, "remote deliveries")
    await wait_for(lambda: queued(server) == 0, 120, "an empty spool")
    assert server.stop() == 0, server.output()
    assert len(kills) == K + 1

    # local recipients: exactly once, or twice where the client was in doubt
    for address in (ALICE, BOB):
        stored = Counter(number(m) for m in await folder_messages(server.data_dir, address,
                                                                  "INBOX"))
        wanted = {n for n in range(N) if address in recipients(n)}
        assert set(stored) == wanted, f"{address}: lost {sorted(wanted - set(stored))}"
        for n, copies in stored.items():
            assert copies <= 1 + client.in_doubt[n] and copies <= 2, (
                f"{address}: message {n} stored {copies} times, in doubt "
                f"{client.in_doubt[n]} times"
            )

    # the remote: at least once, a second copy explained by the client or by a kill
    for n in odd:
        arrivals = remote.arrivals[n]
        assert 1 <= len(arrivals) <= 2, f"message {n} reached the remote {len(arrivals)} times"
        if len(arrivals) == 2 and not client.in_doubt[n]:
            first, second = arrivals
            assert any(first < kill < second for kill in kills), (
                f"message {n} reached the remote twice with no kill in between"
            )
    unexpected = set(remote.arrivals) - set(odd)
    assert not unexpected, f"the remote got messages for nobody there: {sorted(unexpected)}"
    doubted = sum(1 for n in client.in_doubt if client.in_doubt[n])
    print(f"kills {len(kills)}, client failures {sum(client.failures.values())}, "
          f"in doubt {doubted}, "
          f"remote duplicates {sum(len(a) - 1 for a in remote.arrivals.values())}")
