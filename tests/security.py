"""The login security chain as ``service.py`` wires it (credential store, throttle, audit log
behind the guard), for the SMTP, IMAP and POP3 tests of logins through it.

Design rule: only the chain and its users are shared; each protocol test builds its own
realm, policy and listener on :meth:`Chain.portal`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
import pytest_twisted
from twisted.cred.portal import IRealm, Portal
from twisted.internet import reactor

from mailserver.auth.audit import AuditLog
from mailserver.auth.checkers import mail_checkers
from mailserver.auth.credentials import CredentialStore
from mailserver.auth.guard import guard
from mailserver.auth.throttle import Throttle, ThrottlePolicy
from tests.lines import populate

#: The account password of alice and bob @example.org.
ACCOUNT_PASSWORD = "account-pw"


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def audit_events(path: Path) -> list[dict[str, Any]]:
    """The audit log's events, oldest first."""
    return [json.loads(line) for line in path.read_text().splitlines()]


@dataclass
class Chain:
    """Users alice and bob @example.org with mailboxes, and the guard's parts."""

    directory: Any
    credentials: CredentialStore
    throttle: Throttle
    audit: AuditLog
    audit_path: Path
    #: The port of the listener :meth:`listen` started.
    port: int = 0
    _listeners: list[Any] = field(default_factory=list)

    def listen(self, factory: Any) -> int:
        """Serve ``factory`` on 127.0.0.1 (an unused port, kept in ``port``) until close."""
        listener = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self._listeners.append(listener)
        self.port = listener.getHost().port
        return self.port

    def close(self) -> None:
        """Stop the listeners and close the audit log."""
        self.audit.close()
        for listener in self._listeners:
            pytest_twisted.blockon(listener.stopListening())

    def portal(self, realm: IRealm, scope: str) -> Portal:
        """A portal whose checkers accept the credentials of ``scope`` through the guard."""
        checkers = mail_checkers(self.directory, self.credentials, scope)
        return Portal(realm, guard(checkers, self.throttle, self.audit))


def security_chain(storage: Any, tmp_path: Path) -> Chain:
    """The chain over ``storage`` (a tests.conftest.Storage), auditing to tmp_path; a fast
    throttle that bans an IP after 6 failures. Close ``audit`` when done."""
    directory = storage.directory
    populate(storage.store, directory, ACCOUNT_PASSWORD)
    credentials = CredentialStore(storage.db, reactor, b"k" * 32, issuer="mail.example.org")
    throttle = Throttle(
        reactor,
        ThrottlePolicy(base_delay=0.01, max_delay=0.05, ip_ban_after=6, ip_ban_seconds=60),
    )
    audit_path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(audit_path), clock=reactor)
    return Chain(directory, credentials, throttle, audit, audit_path)


async def switch_totp_on(credentials: CredentialStore, user: str) -> None:
    """Enrol ``user`` in TOTP and confirm with the current code."""
    enrolment = await credentials.enable_totp(user)
    code = pyotp.TOTP(enrolment.secret).at(reactor.seconds())
    assert await credentials.confirm_totp(user, code)
