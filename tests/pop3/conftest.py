"""In-process POP3 servers on 127.0.0.1 over the in-memory and the maildir providers, and a
line-level client for exact dialogs.

Tests run in the reactor's greenlet (pytest-twisted), so blocking clients (poplib, raw
sockets) run in a thread: ``await in_thread(function)``. Users alice and bob @example.org,
password "secret".
"""

from __future__ import annotations

import poplib
from dataclasses import dataclass, replace
from typing import Any

import pytest
import pytest_twisted
from twisted.cred.portal import Portal
from twisted.internet import reactor

from mailserver.auth.checkers import PasswordChecker
from mailserver.auth.realm import MailRealm
from mailserver.pop3.factory import POP3Factory, POP3Policy
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
    """A line-level POP3 client over a socket: send exact bytes, read exact responses."""

    def command(self, text: str) -> str:
        """Send one command, return its status line."""
        self.send(text + "\r\n")
        return self.text()

    def multi(self) -> list[str]:
        """The lines of a multi-line response after its status line, up to ``.``."""
        lines = []
        while (line := self.text()) != ".":
            lines.append(line)
        return lines

    def login(self, user: str = "alice") -> str:
        assert self.command(f"USER {user}@example.org").startswith("+OK")
        reply = self.command(f"PASS {PASSWORD}")
        assert reply.startswith("+OK"), reply
        return reply


@dataclass
class POP3ServerFixture(ServerFixture):
    factory: POP3Factory

    def raw(self, greeting: bool = True) -> Raw:
        client = Raw(self.connect())
        if greeting:
            assert client.text().startswith("+OK ")
        return client

    def poplib(self, user: str | None = "alice") -> poplib.POP3:
        client = poplib.POP3(self.host, self.port, timeout=10)
        if user is not None:
            client.user(f"{user}@example.org")
            client.pass_(PASSWORD)
        return client


def make_factory(
    store: Any, directory: Any, policy: POP3Policy, tls: Any, **kw: Any
) -> POP3Factory:
    """A POP3 factory over ``store`` + ``directory`` with the real password checker."""
    realm = MailRealm(None, imap_account=store.account)
    portal = Portal(realm, [PasswordChecker(directory)])
    return POP3Factory(portal, policy, tls, reactor=reactor, **kw)


def start_pop3(
    store: Any, directory: Any, policy: POP3Policy, tls: Any, **kw: Any
) -> tuple[Any, Any]:
    """A plain-TCP POP3 listener (see :func:`make_factory`) and its port."""
    factory = make_factory(store, directory, policy, tls, **kw)
    port = reactor.listenTCP(0, factory, interface=HOST)
    return POP3ServerFixture(factory, port.getHost().port, store, directory), port


POLICY = POP3Policy(hostname="pop.test", auth_needs_tls=False)


@pytest.fixture
def memory_pop3(tls_options):
    """Plain POP3 over MemoryStore; USER/PASS allowed without TLS (auth_needs_tls=False)."""
    store, directory = MemoryStore(), MemoryDirectory(bcrypt_cost=4)
    populate(store, directory)
    server, port = start_pop3(store, directory, POLICY, tls_options)
    yield server
    pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def maildir_pop3(storage, tls_options):
    """Plain POP3 over the real maildir + LMDB store and directory."""
    populate(storage.store, storage.directory)
    server, port = start_pop3(storage.store, storage.directory, POLICY, tls_options)
    yield server
    pytest_twisted.blockon(port.stopListening())


@pytest.fixture(params=["memory", "maildir"])
def pop3_server(request):
    """The same tests against both providers."""
    return request.getfixturevalue(f"{request.param}_pop3")


@pytest.fixture
def make_pop3(storage, tls_options):
    """A factory of POP3 listeners over one maildir store with other policies."""
    populate(storage.store, storage.directory)
    ports = []

    def make(**changes: Any) -> POP3ServerFixture:
        kw = {k: changes.pop(k) for k in ("locks", "account_leave_on_server") if k in changes}
        server, port = start_pop3(
            storage.store, storage.directory, replace(POLICY, **changes), tls_options, **kw
        )
        ports.append(port)
        return server

    yield make
    for port in ports:
        pytest_twisted.blockon(port.stopListening())
