"""What the in-process IMAP and POP3 test servers share: the test users (whose set-up,
:func:`populate`, the SMTP and security-chain fixtures use too), a line-level client base, a
thread runner for blocking clients, a TLS client context and a message builder.

Design rules:
- Only what is the same for both protocols lives here; each conftest keeps its own response
  reading (IMAP literals and tagged responses, POP3 status lines and dot-terminated lists),
  its own greeting check and its own policy and fixtures.
- The conftests re-export these names, so tests keep importing them from their conftest.
"""

from __future__ import annotations

import io
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest_twisted
from twisted.internet.threads import deferToThread

USERS = ("alice", "bob")
PASSWORD = "secret"
HOST = "127.0.0.1"


def in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking client in a thread; tests run in the reactor's greenlet."""
    return deferToThread(function, *args)


def client_context() -> ssl.SSLContext:
    """A TLS client context that accepts the test certificate."""
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


def populate(
    store: Any, directory: Any, password: str = PASSWORD, domain: str = "example.org"
) -> None:
    """The domain and the USERS in it with ``password``, each with an account."""
    wait = pytest_twisted.blockon
    wait(directory.add_domain(domain))
    for user in USERS:
        wait(directory.add_user(f"{user}@{domain}", password))
        wait(store.create_account(f"{user}@{domain}"))


class LineClient:
    """A line-level client over a socket: send exact bytes, read CRLF-ended lines."""

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
        """One response line without CRLF."""
        while b"\r\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def text(self) -> str:
        return self.line().decode("utf-8", "replace")

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
class ServerFixture:
    """A listening test server over a store and a directory."""

    factory: Any
    port: int
    store: Any
    directory: Any
    host: str = HOST

    def connect(self) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=10)

    def folder(self, name: str = "INBOX", user: str = "alice") -> Any:
        return self.store.account(f"{user}@example.org").folder(name)

    async def deliver(self, data: bytes, name: str = "INBOX", user: str = "alice") -> int:
        """Put a message into a folder directly through the store (as SMTP delivery does)."""
        uid: int = await self.folder(name, user).append(io.BytesIO(data))
        return uid
