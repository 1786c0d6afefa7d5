"""The state of one IMAP session, as command handlers see and change it.

:class:`Session` is everything a handler may use: the state (:class:`State`), the account
(the avatar the portal gave for the login), the selected mailbox's view
(:class:`~mailserver.imap.selected.SelectedMailbox`), what the client enabled, and a few
services of the listener (notices to other sessions, the thread pool). It never touches the
transport, so handlers can be driven without a connection.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailserver.imap import response
from mailserver.imap.commands.base import Result
from mailserver.imap.selected import SelectedMailbox
from mailserver.interfaces import IAccount
from mailserver.observe.events import SessionEvents
from mailserver.smtp.sasl import with_context

if TYPE_CHECKING:
    from mailserver.imap.factory import IMAPFactory

__all__ = ["BASE_CAPABILITIES", "Session", "State"]

log = Logger(namespace="mailserver.imap")
T = TypeVar("T")

#: Offered in every state (RFC 9051 §6.1.1; each one is implemented by this package).
BASE_CAPABILITIES = (
    "IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE",
    "UNSELECT", "UIDPLUS", "MOVE", "CHILDREN", "SPECIAL-USE", "UTF8=ACCEPT", "ESEARCH",
    "SEARCHRES", "LIST-EXTENDED", "LIST-STATUS", "BINARY", "STATUS=SIZE", "CONDSTORE",
    "QRESYNC",
    "QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE", "SAVEDATE", "OBJECTID",
    "CREATE-SPECIAL-USE",
)  # fmt: skip
#: ENABLE-able extensions (RFC 5161 §3.1, RFC 9051 §6.3.1, RFC 6855 §3, RFC 7162 §3.1, §3.2).
ENABLEABLE = frozenset({"IMAP4REV2", "UTF8=ACCEPT", "CONDSTORE", "QRESYNC"})


class State(enum.Enum):
    """RFC 9051 §3."""

    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


class Session:
    """One connection's IMAP state (see the module docstring)."""

    def __init__(self, factory: IMAPFactory, peer: str = "") -> None:
        self.factory = factory
        self.policy = factory.policy
        self.peer = peer
        self.events = SessionEvents(log, "imap", factory)  # metrics, mail log and trace
        self.state = State.NOT_AUTHENTICATED
        self.secure = False
        self.account: IAccount | None = None
        self.user = ""
        self.selected: SelectedMailbox | None = None
        #: Extensions the client enabled, as their names are spelled in CAPABILITY.
        self.enabled: set[str] = set()
        #: IMAP4rev2 was enabled (RFC 9051 §6.3.1); otherwise the client is IMAP4rev1.
        self.rev2 = False
        #: UTF8=ACCEPT or IMAP4rev2: quoted strings and mailbox names are UTF-8 (RFC 6855).
        self.utf8 = False
        #: CONDSTORE is on: ENABLEd, or a CONDSTORE-enabling command was seen (RFC 7162 §3.1).
        self.condstore = False
        self._logout: Callable[[], None] | None = None

    # -- capabilities ---------------------------------------------------------------------

    def tls_offered(self) -> bool:
        return self.factory.tls is not None and self.policy.offer_starttls and not self.secure

    def auth_allowed(self) -> bool:
        """LOGIN and AUTHENTICATE are allowed (only over TLS with ``auth_needs_tls``)."""
        return self.secure or not self.policy.auth_needs_tls

    def capabilities(self) -> list[str]:
        caps = list(BASE_CAPABILITIES)
        if not self.policy.literal_plus:  # RFC 7888 §5: {n+} only up to 4096 octets
            caps[caps.index("LITERAL+")] = "LITERAL-"
        caps.append(f"APPENDLIMIT={self.policy.max_literal}")  # RFC 7889 §3
        if self.state is State.NOT_AUTHENTICATED:
            if self.tls_offered():
                caps.append("STARTTLS")
            if self.auth_allowed():
                caps += [f"AUTH={name}" for name in self.policy.auth_mechanisms]
            else:
                caps.append("LOGINDISABLED")  # RFC 9051 §6.2.3
        return caps

    def capability_code(self) -> bytes:
        return " ".join(["CAPABILITY", *self.capabilities()]).encode("ascii")

    # -- login --------------------------------------------------------------------------

    def authenticate(self, credentials: Any) -> Deferred[Any]:
        """Ask the portal for this user's IAccount; the client's address goes with it."""
        credentials = with_context(credentials, "imap", self.peer)
        return self.factory.portal.login(credentials, None, IAccount)

    def logged_in(self, result: tuple[Any, Any, Callable[[], None]]) -> Result:
        _interface, account, logout = result
        self.account = account
        self.user = str(getattr(account, "address", ""))
        self._logout = logout
        self.state = State.AUTHENTICATED
        log.info(
            "{peer}: IMAP login as {user}", peer=self.peer, user=self.user,
            **self.events.auth(True),
        )
        return Result(text="Logged in", code=self.capability_code())

    def login_failed(self, failure: Failure) -> Result:
        """RFC 5530 codes: AUTHENTICATIONFAILED, or UNAVAILABLE for a temporary failure; a
        failure whose exception has ``tell_user`` shows its text (e.g. "use an app
        password"), any other says nothing about why."""
        if failure.check(UnauthorizedLogin, UnhandledCredentials):
            log.info(
                "{peer}: IMAP authentication failed", peer=self.peer, **self.events.auth(False)
            )
            error = failure.value
            if getattr(error, "tell_user", False):
                if getattr(error, "temporary", False):
                    return Result("NO", str(error), b"UNAVAILABLE")
                return Result("NO", str(error), b"AUTHENTICATIONFAILED")
            return Result("NO", "Authentication failed", b"AUTHENTICATIONFAILED")
        log.failure("IMAP login error", failure)
        return Result("NO", "Temporary authentication failure", b"UNAVAILABLE")

    def logout(self) -> None:
        """Release the avatar (connection lost or LOGOUT)."""
        self.deselect()
        logout, self._logout = self._logout, None
        if logout is not None:
            logout()

    # -- selection ----------------------------------------------------------------------

    def select(self, selected: SelectedMailbox) -> None:
        self.selected = selected
        self.state = State.SELECTED

    def deselect(self) -> None:
        self.selected = None
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED

    @property
    def qresync(self) -> bool:
        """ENABLE QRESYNC was issued (RFC 7162 §3.2)."""
        return "QRESYNC" in self.enabled

    def use_condstore(self) -> None:
        """A CONDSTORE-enabling command (RFC 7162 §3.1): from now on, until the connection
        closes, every FETCH response carries MODSEQ."""
        self.condstore = True
        if self.selected is not None:
            self.selected.condstore = True

    def recent_key(self, name: str, uidvalidity: int) -> tuple[str, str, int]:
        return (self.user, name, uidvalidity)

    def mailbox_name(self, name: str) -> bytes:
        """A mailbox name on the wire: UTF-8 or modified UTF-7 (RFC 9051 §5.1, RFC 6855 §3)."""
        return response.mailbox(name, utf8=self.utf8)

    # -- services -----------------------------------------------------------------------

    def in_thread(self, function: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run blocking work (reading message files) in the reactor's thread pool (DESIGN
        decision 7)."""
        reactor: Any = self.factory.reactor
        return deferToThreadPool(reactor, reactor.getThreadPool(), function, *args)
