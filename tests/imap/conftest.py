"""In-process IMAP servers on 127.0.0.1 over the in-memory and the maildir providers, and a
line-level client for exact dialogs.

Tests run in the reactor's greenlet (pytest-twisted), so blocking clients (imaplib, raw
sockets) run in a thread: ``await in_thread(function)``. Users alice and bob @example.org,
password "secret".
"""

from __future__ import annotations

import imaplib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
import pytest_twisted
from twisted.cred.portal import Portal
from twisted.internet import reactor

from mailserver.auth.checkers import PasswordChecker
from mailserver.auth.realm import MailRealm
from mailserver.imap.factory import IMAPFactory, IMAPPolicy
from mailserver.testing import MemoryDirectory, MemoryStore
from tests.lines import (
    HOST,
    PASSWORD,
    USERS,
    LineClient,
    ServerFixture,
    client_context,
    in_thread,
    message,
    populate,
)

__all__ = ["HOST", "PASSWORD", "USERS", "client_context", "in_thread", "message", "populate"]


class Raw(LineClient):
    """A line-level IMAP client over a socket: send exact bytes, read exact responses."""

    def line(self) -> bytes:
        """One response line without CRLF; a literal's octets are kept inline."""
        line = super().line()
        match = re.search(rb"~?\{(\d+)\}\Z", line)
        if match:
            size = int(match.group(1))
            while len(self.buffer) < size:
                self._fill()
            line += b"\r\n" + self.buffer[:size]
            self.buffer = self.buffer[size:]
            line += self.line()
        return line

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


@dataclass
class IMAPServerFixture(ServerFixture):
    factory: IMAPFactory

    def raw(self, greeting: bool = True) -> Raw:
        client = Raw(self.connect())
        if greeting:
            assert client.text().startswith("* OK [CAPABILITY ")
        return client

    def imaplib(self, user: str | None = "alice") -> imaplib.IMAP4:
        client = imaplib.IMAP4(self.host, self.port, timeout=10)
        if user is not None:
            client.login(f"{user}@example.org", PASSWORD)
        return client


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
    populate(store, directory)
    server, port = start_imap(store, directory, POLICY, tls_options)
    yield server
    pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def maildir_imap(storage, tls_options):
    """Plain IMAP over the real maildir + LMDB store and directory."""
    populate(storage.store, storage.directory)
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
    populate(store, directory)
    policy = replace(POLICY, auth_needs_tls=True)
    server, port = start_imap(store, directory, policy, tls_options)
    yield server
    pytest_twisted.blockon(port.stopListening())
