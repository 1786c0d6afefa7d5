"""POP3Factory: a POP3 listener built from a Portal, a policy and TLS options.

Design rule: the factory holds no global state. A session gets its account from the portal
(``portal.login(credentials, None, IAccount)``), its limits from :class:`POP3Policy` and its
TLS context from ``tls``. What the sessions of one listener share lives here: the connection
counts, the maildrop locks (RFC 1939 §8) and the time of each user's last login (RFC 2449
§6.5 LOGIN-DELAY).

**The maildrop lock is per process.** :class:`MaildropLocks` is a set in memory, so it
cannot outlive the session that holds it: it is released when the connection is lost, however
that happens, and a crashed server holds no lock when it starts again. Two server processes
over one data directory (or the two listeners of one process, which share one
:class:`MaildropLocks` when they are given the same one) do not see each other's locks
unless they share the object. IMAP sessions never take the lock (RFC 1939 §8 lets a server
decide what an exclusive-access lock covers); a message they expunge while a POP3 session
holds a snapshot is answered ``-ERR`` on RETR and is simply gone at UPDATE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.cred.portal import Portal
from twisted.internet.interfaces import IReactorTime

from mailserver import __version__
from mailserver.listener import ListenerFactory
from mailserver.pop3.grammar import DEFAULT_MAX_LINE
from mailserver.pop3.server import POP3Server

__all__ = ["MaildropLocks", "POP3Factory", "POP3Policy"]


@dataclass(frozen=True)
class POP3Policy:
    """The limits and choices of one POP3 listener (RFC sections where they come from)."""

    hostname: str = "localhost"
    #: RFC 1939 §3: an inactivity autologout timer must be at least 10 minutes. It closes
    #: the connection without entering UPDATE, so nothing is deleted.
    timeout: float = 600.0
    #: Octets of one command line with CRLF (RFC 2449 §4 allows servers to accept more than
    #: 255; an AUTH initial response with a bearer token needs more).
    max_line: int = DEFAULT_MAX_LINE
    max_connections: int = 500
    max_connections_per_ip: int = 20
    #: ``-ERR`` answers to bad or unknown commands tolerated before the connection is closed.
    max_errors: int = 20
    #: USER/PASS and AUTH only over TLS (RFC 2595 §4, RFC 8314 §3): before STLS, CAPA lists
    #: neither USER nor SASL and both are refused.
    auth_needs_tls: bool = True
    #: SASL mechanisms offered (OAUTHBEARER needs a token checker in the portal).
    auth_mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")
    #: The listener wraps connections in TLS from the first byte (port 995, RFC 8314 §3.3).
    implicit_tls: bool = False
    #: Offer STLS (when the factory has TLS options and the session is not TLS yet).
    offer_starttls: bool = True
    #: The default of "leave mail on the server": DELE hides a message for the session, and
    #: UPDATE marks it \\Seen instead of expunging it (see :mod:`mailserver.pop3.maildrop`).
    leave_on_server: bool = False
    #: RFC 2449 §6.5: seconds a user must wait between two logins (0: no delay), enforced
    #: with ``-ERR [LOGIN-DELAY]`` (per process, like the lock).
    login_delay: int = 0
    #: RFC 2449 §6.9: the IMPLEMENTATION capability.
    implementation: str = f"mailserver-{__version__}"
    #: Mark retrieved messages \\Seen at UPDATE (so IMAP shows them read).
    mark_seen: bool = True


class MaildropLocks:
    """The exclusive-access locks of RFC 1939 §8, per user, in this process only."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    def acquire(self, user: str) -> bool:
        """Take ``user``'s lock; False when another session holds it."""
        key = user.lower()
        if key in self._held:
            return False
        self._held.add(key)
        return True

    def release(self, user: str) -> None:
        self._held.discard(user.lower())

    def held(self, user: str) -> bool:
        return user.lower() in self._held


class POP3Factory(ListenerFactory):
    """Builds a :class:`POP3Server` per connection and counts connections per client.

    ``account_leave_on_server(user)`` gives a user's own "leave mail on the server" setting
    (None: none; kept by whoever wires the listener); without one the policy's default
    applies. Pass the same ``locks`` to the STLS and the implicit-TLS factories so that they
    share the maildrop locks.
    """

    protocol = POP3Server
    policy: POP3Policy
    reactor: Any

    def __init__(
        self,
        portal: Portal,
        policy: POP3Policy,
        tls: Any = None,
        reactor: IReactorTime | None = None,
        *,
        locks: MaildropLocks | None = None,
        account_leave_on_server: Callable[[str], bool | None] | None = None,
    ) -> None:
        super().__init__(portal, policy, tls, reactor)
        self.locks = locks if locks is not None else MaildropLocks()
        self._account_setting = account_leave_on_server
        #: user -> reactor time of the last successful login (LOGIN-DELAY).
        self.last_login: dict[str, float] = {}

    def buildProtocol(self, addr: Any) -> POP3Server:
        return POP3Server(self)

    def leave_on_server(self, user: str) -> bool:
        """Whether ``user``'s deletions are kept on the server (the account's own setting,
        else the policy's default)."""
        if self._account_setting is not None:
            setting = self._account_setting(user)
            if setting is not None:
                return setting
        return self.policy.leave_on_server

    def login_too_soon(self, user: str) -> bool:
        """RFC 2449 §8.1.1: ``user`` logged in less than ``login_delay`` seconds ago."""
        delay = self.policy.login_delay
        last = self.last_login.get(user.lower())
        return delay > 0 and last is not None and self.reactor.seconds() - last < delay

    def logged_in(self, user: str) -> None:
        if self.policy.login_delay > 0:
            self.last_login[user.lower()] = self.reactor.seconds()
