"""An in-process SMTP server on 127.0.0.1 over the in-memory providers, and client helpers.

Tests run in the reactor's greenlet (pytest-twisted), so blocking clients (smtplib, raw
sockets) run in a thread: ``await in_thread(function)``.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, replace
from typing import Any

import pytest
import pytest_twisted
from twisted.cred.checkers import AllowAnonymousAccess
from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from mailserver.auth.realm import MailRealm, MXTarget
from mailserver.smtp.factory import SMTPFactory, SMTPPolicy
from mailserver.testing import MemoryDeliveryTarget, MemoryDirectory, MemoryStore
from tests.lines import populate
from tests.stored import contents


def in_thread(function: Any, *args: Any) -> Any:
    return deferToThread(function, *args)


@dataclass
class SMTPServerFixture:
    factory: SMTPFactory
    port: int
    store: MemoryStore
    directory: MemoryDirectory
    host: str = "127.0.0.1"

    def inbox(self, user: str = "alice") -> Any:
        return self.store.account(f"{user}@example.org").folder("INBOX")

    def messages(self, user: str = "alice") -> list[bytes]:
        return contents(self.inbox(user))

    def connect(self) -> Raw:
        return Raw(socket.create_connection((self.host, self.port), timeout=10))


class Raw:
    """A line-level SMTP client over a plain socket, for exact dialogs."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> str:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; pending {self.buffer!r}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line.decode()

    def reply(self) -> list[str]:
        """All lines of one (possibly multi-line) reply."""
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        return lines

    def code(self) -> str:
        """The last line of the next reply, e.g. '250 2.0.0 OK'."""
        return self.reply()[-1]

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (TimeoutError, ConnectionResetError):
            return True

    def starttls(self) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.sock = context.wrap_socket(self.sock)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def smtp_policy() -> SMTPPolicy:
    return SMTPPolicy(hostname="mx.test", max_message_size=100_000)


@pytest.fixture
def smtp_server(smtp_policy, tls_options):
    store, directory = MemoryStore(), MemoryDirectory()
    wait = pytest_twisted.blockon
    populate(store, directory, "pw")
    wait(directory.add_alias("postmaster@example.org", ["alice@example.org"]))
    target = MemoryDeliveryTarget(store, directory)
    realm = MailRealm(lambda: MXTarget(target, directory, "postmaster@example.org"))
    portal = Portal(realm, [AllowAnonymousAccess()])
    factory = SMTPFactory(portal, smtp_policy, tls_options, reactor=reactor)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    yield SMTPServerFixture(factory, port.getHost().port, store, directory)
    wait(port.stopListening())


@pytest.fixture
def make_policy():
    def make(**changes: Any) -> SMTPPolicy:
        return replace(SMTPPolicy(hostname="mx.test", max_message_size=100_000), **changes)

    return make


@dataclass
class SubmissionFixture:
    port: int
    store: MemoryStore
    host: str = "127.0.0.1"

    def messages(self, user: str = "alice") -> list[bytes]:
        inbox = self.store.account(f"{user}@example.org").folder("INBOX")
        return [inbox.message(uid).open().read() for uid in inbox.uids()]


def start_submission(tls_options: Any, auth_needs_tls: bool) -> tuple[SubmissionFixture, Any]:
    """A submission listener (AUTH required) over the in-memory providers: users alice and
    bob @example.org with password "secret"."""
    from mailserver.auth.checkers import PasswordChecker
    from mailserver.auth.submission import SubmissionTarget

    store, directory = MemoryStore(), MemoryDirectory()
    populate(store, directory, "secret")
    target = MemoryDeliveryTarget(store, directory)
    realm = MailRealm(
        lambda: target,
        lambda user: SubmissionTarget(user, directory, target, "mail.example.org", reactor),
    )
    policy = SMTPPolicy(
        hostname="mail.example.org", auth=True, require_auth=True, auth_needs_tls=auth_needs_tls
    )
    factory = SMTPFactory(
        Portal(realm, [PasswordChecker(directory)]), policy, tls_options, reactor=reactor
    )
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    return SubmissionFixture(port.getHost().port, store), port


@pytest.fixture
def submission_server(tls_options):
    """Submission as deployed: AUTH only after STARTTLS."""
    server, port = start_submission(tls_options, auth_needs_tls=True)
    yield server
    pytest_twisted.blockon(port.stopListening())
