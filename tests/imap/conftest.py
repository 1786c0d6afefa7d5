"""In-process IMAP servers on 127.0.0.1 over the in-memory and the maildir providers, and a
line-level client for exact dialogs.

Tests run in the reactor's greenlet (pytest-twisted), so blocking clients (imaplib, raw
sockets) run in a thread: ``await in_thread(function)``. Users alice and bob @example.org,
password "secret".
"""

from __future__ import annotations

import imaplib
import io
import re
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
import pytest_twisted
from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from mailserver.auth.checkers import PasswordChecker
from mailserver.auth.realm import MailRealm
from mailserver.imap.factory import IMAPFactory, IMAPPolicy
from mailserver.testing import MemoryDirectory, MemoryStore

USERS = ("alice", "bob")
PASSWORD = "secret"
HOST = "127.0.0.1"


def in_thread(function: Callable[..., Any], *args: Any) -> Any:
    return deferToThread(function, *args)


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def message(subject: str = "Hello", body: str = "Hi there.\r\n", **headers: str) -> bytes:
    """A small RFC 5322 message."""
    fields = {"From": "Carol <carol@example.net>", "To": "alice@example.org", **headers}
    lines = [f"{name.replace('_', '-')}: {value}" for name, value in fields.items()]
    lines.append(f"Subject: {subject}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8")


class Raw:
    """A line-level IMAP client over a socket: send exact bytes, read exact responses."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed; pending {self.buffer!r}")
        self.buffer += chunk

    def line(self) -> bytes:
        """One response line without CRLF; a literal's octets are kept inline."""
        while b"\r\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        match = re.search(rb"~?\{(\d+)\}\Z", line)
        if match:
            size = int(match.group(1))
            while len(self.buffer) < size:
                self._fill()
            line += b"\r\n" + self.buffer[:size]
            self.buffer = self.buffer[size:]
            line += self.line()
        return line

    def text(self) -> str:
        return self.line().decode("utf-8", "replace")

    def until(self, tag: str) -> list[str]:
        """Every line up to and including the tagged response of ``tag``."""
        lines = [self.text()]
        while not lines[-1].startswith(tag + " "):
            lines.append(self.text())
        return lines

    def until_bytes(self, tag: str) -> list[bytes]:
        """:meth:`until` as bytes (literal octets exactly as sent)."""
        lines = [self.line()]
        while not lines[-1].startswith(tag.encode() + b" "):
            lines.append(self.line())
        return lines

    def command(self, tag: str, text: str) -> list[str]:
        self.send(f"{tag} {text}\r\n")
        return self.until(tag)

    def login(self, user: str = "alice") -> None:
        assert self.command("L", f"LOGIN {user}@example.org {PASSWORD}")[-1].startswith("L OK")

    def starttls(self) -> None:
        self.sock = client_context().wrap_socket(self.sock)

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (TimeoutError, ConnectionResetError):
            return True

    def close(self) -> None:
        self.sock.close()


@dataclass
class IMAPServerFixture:
    factory: IMAPFactory
    port: int
    store: Any
    directory: Any
    host: str = HOST

    def raw(self, greeting: bool = True) -> Raw:
        client = Raw(socket.create_connection((self.host, self.port), timeout=10))
        if greeting:
            assert client.text().startswith("* OK [CAPABILITY ")
        return client

    def imaplib(self, user: str | None = "alice") -> imaplib.IMAP4:
        client = imaplib.IMAP4(self.host, self.port, timeout=10)
        if user is not None:
            client.login(f"{user}@example.org", PASSWORD)
        return client

    def folder(self, name: str = "INBOX", user: str = "alice") -> Any:
        return self.store.account(f"{user}@example.org").folder(name)

    async def deliver(self, data: bytes, name: str = "INBOX", user: str = "alice") -> int:
        """Put a message into a folder directly through the store (as SMTP delivery does)."""
        uid: int = await self.folder(name, user).append(io.BytesIO(data))
        return uid


def make_factory(store: Any, directory: Any, policy: IMAPPolicy, tls: Any) -> IMAPFactory:
    """An IMAP factory over ``store`` + ``directory`` with the real password checker."""
    realm = MailRealm(lambda: None, imap_account=store.account)  # type: ignore[arg-type, return-value]
    portal = Portal(realm, [PasswordChecker(directory)])
    return IMAPFactory(portal, policy, tls, reactor=reactor)


def start_imap(store: Any, directory: Any, policy: IMAPPolicy, tls: Any) -> tuple[Any, Any]:
    """A plain-TCP IMAP listener (see :func:`make_factory`) and its port."""
    factory = make_factory(store, directory, policy, tls)
    port = reactor.listenTCP(0, factory, interface=HOST)
    return IMAPServerFixture(factory, port.getHost().port, store, directory), port


def _populate(store: Any, directory: Any) -> None:
    wait = pytest_twisted.blockon
    wait(directory.add_domain("example.org"))
    for user in USERS:
        wait(directory.add_user(f"{user}@example.org", PASSWORD))
        wait(store.create_account(f"{user}@example.org"))


POLICY = IMAPPolicy(hostname="imap.test", auth_needs_tls=False, max_literal=100_000)


@pytest.fixture
def make_policy() -> Callable[..., IMAPPolicy]:
    def make(**changes: Any) -> IMAPPolicy:
        return replace(POLICY, **changes)

    return make


@pytest.fixture
def memory_imap(tls_options):
    """Plain IMAP over MemoryStore; LOGIN allowed without TLS (auth_needs_tls=False)."""
    store, directory = MemoryStore(), MemoryDirectory(bcrypt_cost=4)
    _populate(store, directory)
    server, port = start_imap(store, directory, POLICY, tls_options)
    yield server
    pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def maildir_imap(storage, tls_options):
    """Plain IMAP over the real maildir + LMDB store and directory."""
    _populate(storage.store, storage.directory)
    server, port = start_imap(storage.store, storage.directory, POLICY, tls_options)
    yield server
    pytest_twisted.blockon(port.stopListening())


@pytest.fixture(params=["memory", "maildir"])
def imap_server(request):
    """The same tests against both providers."""
    return request.getfixturevalue(f"{request.param}_imap")


@pytest.fixture
def tls_imap(tls_options):
    """IMAP as deployed on port 143: LOGIN only after STARTTLS."""
    store, directory = MemoryStore(), MemoryDirectory(bcrypt_cost=4)
    _populate(store, directory)
    policy = replace(POLICY, auth_needs_tls=True)
    server, port = start_imap(store, directory, policy, tls_options)
    yield server
    pytest_twisted.blockon(port.stopListening())
