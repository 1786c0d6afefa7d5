"""IMAPFactory: an IMAP4rev2/IMAP4rev1 listener built from a Portal, a policy and TLS options.

Design rule: the factory holds no global state. A session gets its account from the portal
(``portal.login(credentials, None, IAccount)``), its limits from :class:`IMAPPolicy` and its
TLS context from ``tls``. What sessions of one listener share lives here: the connection
counts, the serialised ENVELOPE/BODYSTRUCTURE cache (:mod:`mailserver.imap.rendered`) and
the snapshots of selected folders (:mod:`mailserver.imap.snapshots`).
IDLE sessions are woken by the store's change notices, not through the factory (see
:mod:`mailserver.imap.commands.idle`). Which UIDs have
been seen as \\Recent (see :class:`RecentClaims`) is per server, not per listener: pass the
same claims to every IMAP factory of one process.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.cred.portal import Portal
from twisted.internet.interfaces import IReactorTime

from mailserver.imap.grammar import (
    DEFAULT_MAX_LINE,
    DEFAULT_MAX_LITERAL,
    DEFAULT_SPOOL_THRESHOLD,
)
from mailserver.imap.rendered import RenderedCache
from mailserver.imap.server import IMAPServer
from mailserver.imap.snapshots import FolderSnapshots
from mailserver.interfaces import IJunkFeedback
from mailserver.listener import ListenerFactory

__all__ = ["IMAPFactory", "IMAPPolicy", "RecentClaims"]


@dataclass(frozen=True)
class IMAPPolicy:
    """The limits and choices of one IMAP listener (RFC sections where they come from)."""

    hostname: str = "localhost"
    #: RFC 9051 §5.4: the autologout timer of an authenticated (or idling) session is at least
    #: 30 minutes.
    idle_timeout: float = 30 * 60.0
    #: Before login a shorter timer is allowed (RFC 9051 §5.4); clients log in at once.
    login_timeout: float = 120.0
    #: How often an IDLE session polls its mailbox for changes made by other processes.
    idle_poll: float = 1.0
    #: Non-literal octets of one command (grammar design rule 4).
    max_line: int = DEFAULT_MAX_LINE
    #: Literal octets of one command: the APPEND size limit (answered NO [TOOBIG]),
    #: advertised as APPENDLIMIT (RFC 7889).
    max_literal: int = DEFAULT_MAX_LITERAL
    #: APPEND literals larger than this are written to a temporary file as they arrive
    #: and handed to the store as a file (memory per connection stays bounded, issue 12).
    spool_threshold: int = DEFAULT_SPOOL_THRESHOLD
    #: Where those files are made (unnamed: they vanish when closed or on a crash); None
    #: is the system's temporary directory. The server passes its data directory's tmp.
    spool_directory: str | None = None
    #: Offer LITERAL+ (non-synchronizing literals of any size up to ``max_literal``); False
    #: offers LITERAL- instead: ``{n+}`` only up to 4096 octets (RFC 7888 §5).
    literal_plus: bool = True
    max_connections: int = 500
    max_connections_per_ip: int = 50
    #: BAD commands tolerated before the session is dropped with BYE.
    max_errors: int = 50
    #: LOGIN and AUTHENTICATE only over TLS (RFC 9051 §6.2.3, RFC 8314 §3): LOGINDISABLED
    #: and no AUTH= capabilities before STARTTLS.
    auth_needs_tls: bool = True
    #: SASL mechanisms offered (OAUTHBEARER needs a token checker in the portal).
    auth_mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")
    #: The listener wraps connections in TLS from the first byte (port 993, RFC 8314 §3.3).
    implicit_tls: bool = False
    #: Offer STARTTLS (when the factory has TLS options and the session is not TLS yet).
    offer_starttls: bool = True


class RecentClaims:
    """Which session saw a message first, for the IMAP4rev1 ``\\Recent`` flag (RFC 3501
    §2.3.2; IMAP4rev2 dropped it).

    Per (user, folder, UIDVALIDITY) the highest UID claimed so far: a read-write SELECT, or a
    session that has the folder selected when a message arrives, claims every UID above it.
    The claims live in this process only: the first time a folder is seen after a start,
    nothing in it is recent.
    """

    def __init__(self) -> None:
        self._claimed: dict[tuple[str, str, int], int] = {}

    def recent(self, key: tuple[str, str, int], uids: Sequence[int], claim: bool) -> set[int]:
        """The UIDs among ``uids`` (ascending) that are recent for this session."""
        last = uids[-1] if uids else 0
        claimed = self._claimed.get(key)
        if claimed is None:
            self._claimed[key] = last
            return set()
        found = set(uids[bisect.bisect_right(uids, claimed) :])  # uids ascend
        if claim and last > claimed:
            self._claimed[key] = last
        return found

    def count(self, key: tuple[str, str, int], uids: Sequence[int]) -> int:
        """How many of ``uids`` nobody has claimed yet (STATUS RECENT)."""
        claimed = self._claimed.get(key)
        return 0 if claimed is None else sum(1 for uid in uids if uid > claimed)


class IMAPFactory(ListenerFactory):
    """Builds an :class:`IMAPServer` per connection and counts connections per client."""

    protocol = IMAPServer
    policy: IMAPPolicy

    def __init__(
        self,
        portal: Portal,
        policy: IMAPPolicy,
        tls: Any = None,
        reactor: IReactorTime | None = None,
        recent: RecentClaims | None = None,
        feedback: IJunkFeedback | None = None,
    ) -> None:
        super().__init__(portal, policy, tls, reactor)
        #: Where moves into and out of Junk are reported (the spam filter's training hook).
        self.feedback = feedback
        # RFC 3501 §2.3.2: one session, of any listener, is the first to see a message
        self.recent = RecentClaims() if recent is None else recent
        #: Serialised ENVELOPE/BODYSTRUCTURE per message object, shared by the sessions.
        self.rendered = RenderedCache()
        #: What SELECT read of each folder, reused while the folder is unchanged.
        self.snapshots = FolderSnapshots()

    def buildProtocol(self, addr: Any) -> IMAPServer:
        return IMAPServer(self)
