"""The POP3 server protocol (RFC 1939) with CAPA (RFC 2449), STLS (RFC 2595), AUTH (RFC 5034)
and UTF8 (RFC 6856).

Design rules:

1. State is explicit: :class:`State`, and :data:`COMMANDS` maps each command to its handler
   and the states it is allowed in; a command in the wrong state is answered ``-ERR`` in one
   place.
2. Handlers return the response bytes (or a Deferred of them) and never write;
   :meth:`POP3Server.write` is the one writer, one ``write`` per response. The exceptions:
   STLS, whose ``+OK`` must go out before the handshake starts, and RETR/TOP of a message
   bigger than one chunk, which :class:`~mailserver.pop3.sender.MessageSender` streams
   after the status line (:mod:`~mailserver.pop3.transaction` holds those handlers).
3. One command in flight: pipelined commands (RFC 2449 §6.6 PIPELINING) are queued and
   answered in order; the transport is paused when too many wait.
4. Nothing is deleted before UPDATE, and UPDATE is entered only by QUIT in the TRANSACTION
   state (RFC 1939 §6); a dropped connection, the autologout timer or a shutdown leave the
   maildrop as it was.
5. The account comes from the portal (an ``IAccount`` avatar; POP3 serves its INBOX) and this
   package imports no store. Errors never show a traceback: store errors become ``-ERR
   [SYS/TEMP]`` or ``[SYS/PERM]`` (RFC 2449 §8), anything else is logged.
6. Input sent before the TLS handshake of STLS is discarded (RFC 2595 §4, as RFC 3207 §4.2
   for SMTP), and the USER given before it is forgotten.
"""

from __future__ import annotations

import base64
import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.protocol import Protocol
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailserver.errors import MailError
from mailserver.interfaces import IAccount
from mailserver.listener import accepted
from mailserver.observe.events import SessionEvents
from mailserver.pop3 import maildrop as maildrop_module
from mailserver.pop3 import transaction
from mailserver.pop3.grammar import (
    BadLine,
    Command,
    LineReader,
    err,
    multiline,
    ok,
    parse_command,
)
from mailserver.pop3.maildrop import Maildrop
from mailserver.pop3.sender import MessageSender
from mailserver.smtp.sasl import (
    ALL_MECHANISMS,
    Cancelled,
    Exchange,
    MailLogin,
    OAuthBearerExchange,
    Rejected,
    SASLError,
    decode,
    new_exchange,
    with_context,
)

if TYPE_CHECKING:
    from mailserver.pop3.factory import POP3Factory

__all__ = ["COMMANDS", "POP3Server", "State"]

log = Logger(namespace="mailserver.pop3")

#: Pause reading from the socket when this many commands wait.
MAX_QUEUED = 64


class State(enum.Enum):
    """RFC 1939 §3."""

    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"


class Closing(bytes):
    """A response after which the connection is closed."""


@dataclass(frozen=True)
class Entry:
    handler: Callable[[POP3Server, Command], Any]
    states: frozenset[State]


class POP3Server(Protocol):
    """One POP3 session. Created by :class:`mailserver.pop3.factory.POP3Factory`."""

    def __init__(self, factory: POP3Factory) -> None:
        self.factory = factory
        self.policy = factory.policy
        self.reader = LineReader(self.policy.max_line)
        self.state = State.AUTHORIZATION
        #: Slowloris defence: the AUTHORIZATION state lasts at most ``timeout`` from the
        #: connection's start; neither bytes nor commands extend it.
        self._login_deadline = factory.reactor.seconds() + self.policy.timeout
        self.peer = ""
        self.secure = False
        self.utf8 = False
        self.user_name: str | None = None  # USER given, waiting for PASS
        self.user = ""  # the logged-in account's address
        self.account: Any = None
        self.maildrop: Maildrop | None = None
        self.errors = 0
        self._logout: Callable[[], None] | None = None
        self._locked = False
        self._events: deque[Any] = deque()
        self.events = SessionEvents(log, "pop3", factory)  # metrics, mail log and trace
        self._busy = True  # until the greeting is sent
        self._closing = False
        self._paused = False
        self._counted = False
        self._timeout: Any = None
        self._sasl: Exchange | None = None
        #: The RETR/TOP being streamed, if any (stopped when the connection is lost).
        self.sender: MessageSender | None = None

    # -- connection life cycle ---------------------------------------------------------

    def connectionMade(self) -> None:
        self.peer = self.events.peer = accepted(self.transport)
        policy = self.policy
        if not self.factory.admit(self.peer):
            self.write(err("Too many connections, try again later", "SYS/TEMP"))
            self.close()
            return
        self._counted = True
        self.secure = policy.implicit_tls
        self.write(ok(f"{policy.hostname} POP3 server ready"))
        self._busy = False
        self._reset_timeout()
        self._process()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._closing = True
        self._cancel_timeout()
        sender, self.sender = self.sender, None
        if sender is not None:
            sender.stopProducing()
        if self._counted:
            self._counted = False
            self.factory.release(self.peer)
        self._release()

    def _release(self) -> None:
        """Drop the maildrop lock and the avatar (design rule 4: nothing is committed)."""
        if self._locked:
            self._locked = False
            self.factory.locks.release(self.user)
        self.maildrop = None
        logout, self._logout = self._logout, None
        if logout is not None:
            logout()

    # -- the autologout timer (RFC 1939 §3) --------------------------------------------

    def _reset_timeout(self) -> None:
        self._cancel_timeout()
        seconds = self.policy.timeout
        if self.state is State.AUTHORIZATION:
            seconds = max(self._login_deadline - self.factory.reactor.seconds(), 0.0)
        self._timeout = self.factory.reactor.callLater(seconds, self._timed_out)

    def _cancel_timeout(self) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None

    def _timed_out(self) -> None:
        """RFC 1939 §3: close without entering UPDATE (nothing is deleted)."""
        self._timeout = None
        if self.sender is not None:  # a slow reader of a big RETR is not idle
            self._reset_timeout()
            return
        self.write(err("Autologout; idle for too long"))
        self.close()

    # -- input --------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self._reset_timeout()
        self._events.extend(self.reader.feed(data))
        self._process()
        if self._busy and len(self._events) > MAX_QUEUED and not self._paused:
            self._paused = True
            self.transport.pauseProducing()

    def _process(self) -> None:
        """Handle input until a response is pending."""
        while not self._busy and not self._closing and self._events:
            event = self._events.popleft()
            if isinstance(event, BadLine):
                if self._sasl is not None:
                    self._sasl = None
                    self._answer(err("Invalid SASL response"))
                else:
                    self._answer(err(event.reason), error=True)
            elif self._sasl is not None:
                self._answer(self._sasl_line(event.data))
            else:
                self._dispatch(event.data)
        if self._paused and not self._busy and not self._closing:
            self._paused = False
            self.transport.resumeProducing()

    def _dispatch(self, line: bytes) -> None:
        self.events.line_command(line, COMMANDS)
        if self.factory.shutting_down:
            self.write(err("Server shutting down, try again later", "SYS/TEMP"))
            self.close()
            return
        command = parse_command(line)
        if isinstance(command, BadLine):
            self._answer(err(command.reason), error=True)
            return
        entry = COMMANDS.get(command.name)
        if entry is None:
            self._answer(err(f"Unknown command {command.name}"), error=True)
            return
        if self.state not in entry.states:
            if self.state is State.AUTHORIZATION:
                hint = "Log in first"
            else:
                hint = "Not allowed after login"
            self._answer(err(f"{command.name}: {hint}"), error=True)
            return
        try:
            result = entry.handler(self, command)
        except Exception:
            result = self.failure_response(Failure())
        self._answer(result)

    def _answer(self, result: Any, error: bool = False) -> None:
        """Write ``result`` now or when its Deferred fires (None: nothing to write)."""
        if isinstance(result, Deferred):
            self._busy = True
            result.addErrback(self.failure_response)
            result.addCallback(self._deferred_done)
            result.addErrback(lambda failure: log.failure("POP3 response failed", failure))
            return
        if result is None:
            return
        self.write(result)
        self.events.line_reply(result)
        if isinstance(result, Closing):
            self.close()
        elif error:
            self._count_error()

    def _deferred_done(self, result: bytes | None) -> None:
        self._busy = False
        if self._closing:
            return
        self._answer(result)
        self._reset_timeout()
        self._process()

    def failure_response(self, failure: Failure) -> bytes:
        """Design rule 5."""
        if failure.check(MailError):
            error: Any = failure.value
            return err(error.text, "SYS/TEMP" if error.temporary else "SYS/PERM")
        log.failure("POP3 command failed", failure)
        return err("Internal server error", "SYS/TEMP")

    def _count_error(self) -> None:
        self.errors += 1
        if self.errors >= self.policy.max_errors:
            self.write(err("Too many errors"))
            self.close()

    # -- output -------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """The one writer."""
        if not self._closing:
            self.transport.write(data)

    def close(self) -> None:
        """Close the connection (after what was written); nothing more is read or written."""
        self._closing = True
        self.transport.loseConnection()

    @property
    def closing(self) -> bool:
        return self._closing

    def in_thread(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """Blocking work (index reads, message files) in the reactor's thread pool."""
        reactor: Any = self.factory.reactor
        return deferToThreadPool(reactor, reactor.getThreadPool(), function, *args)

    # -- capabilities (RFC 2449 §5) ----------------------------------------------------

    def tls_offered(self) -> bool:
        return self.factory.tls is not None and self.policy.offer_starttls and not self.secure

    def auth_allowed(self) -> bool:
        return self.secure or not self.policy.auth_needs_tls

    def mechanisms(self) -> list[str]:
        return [name for name in self.policy.auth_mechanisms if name in ALL_MECHANISMS]

    def capabilities(self) -> list[str]:
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state is State.AUTHORIZATION:
            if self.auth_allowed():
                caps.append("USER")
                if self.mechanisms():
                    caps.append("SASL " + " ".join(self.mechanisms()))
            if self.tls_offered():
                caps.append("STLS")
            caps.append("UTF8 USER")  # RFC 6856 §2: UTF-8 user names and passwords too
        caps.append("EXPIRE NEVER")  # RFC 2449 §6.7: this server never expires mail itself
        caps.append(f"LOGIN-DELAY {self.policy.login_delay}")
        caps.append(f"IMPLEMENTATION {self.policy.implementation}")
        return caps

    def do_CAPA(self, command: Command) -> bytes:
        lines = [cap.encode("ascii") for cap in self.capabilities()]
        return multiline(ok("Capability list follows"), lines)

    # -- AUTHORIZATION (RFC 1939 §4, §7) ------------------------------------------------

    def do_QUIT(self, command: Command) -> Any:
        if self.state is State.AUTHORIZATION or self.maildrop is None:
            return Closing(ok(f"{self.policy.hostname} POP3 server signing off"))
        # RFC 1939 §6: UPDATE. The lock is held until the changes are made.
        self.state = State.UPDATE
        d = maybeDeferred(self.maildrop.commit)

        def committed(left: int) -> bytes:
            return Closing(ok(f"{self.policy.hostname} POP3 server signing off ({left} left)"))

        def failed(failure: Failure) -> bytes:
            log.failure("POP3 UPDATE failed for {user}", failure, user=self.user)
            return Closing(err("Some deleted messages not removed", "SYS/TEMP"))

        return d.addCallbacks(committed, failed)

    def do_STLS(self, command: Command) -> bytes | None:
        if self.secure:
            return err("Already using TLS")
        if not self.tls_offered():
            return err("STLS is not available")
        self.write(ok("Begin TLS negotiation"))
        self.reader.discard()  # design rule 6
        self._events.clear()
        self.transport.startTLS(self.factory.tls)
        self.secure = True
        self.user_name = None
        return None

    def do_UTF8(self, command: Command) -> bytes:
        """RFC 6856 §2: allowed in the AUTHORIZATION state; messages are served as stored
        (UTF-8 header fields included) with or without it."""
        self.utf8 = True
        return ok("UTF8 enabled")

    def do_USER(self, command: Command) -> bytes:
        if not self.auth_allowed():
            return err("Log in over TLS: use STLS first", "AUTH")
        name = command.raw_args.strip()
        if not name:
            return err("USER needs a user name")
        self.user_name = name.decode("utf-8")
        return ok("Send your password")

    def do_PASS(self, command: Command) -> Any:
        if not self.auth_allowed():
            return err("Log in over TLS: use STLS first", "AUTH")
        name, self.user_name = self.user_name, None
        if name is None:
            return err("Send USER first")
        # RFC 1939 §7: spaces may be part of the password; take the rest of the line.
        password = command.raw_args
        if not password:
            return err("PASS needs a password")
        return self._login(MailLogin(name.encode("utf-8"), password))

    def do_APOP(self, command: Command) -> bytes:
        return err("APOP is not supported: use USER/PASS or AUTH over TLS")

    # -- AUTH (RFC 5034) ---------------------------------------------------------------

    def do_AUTH(self, command: Command) -> Any:
        if not command.args:
            # Not in RFC 5034, but clients of RFC 1734 ask for the list this way.
            lines = [name.encode("ascii") for name in self.mechanisms()]
            return multiline(ok("Supported mechanisms follow"), lines)
        if not self.auth_allowed():
            return err("Log in over TLS: use STLS first", "AUTH")
        if len(command.args) > 2:
            return err("AUTH takes a mechanism and an optional initial response")
        offered = {name: ALL_MECHANISMS[name] for name in self.mechanisms()}
        exchange = new_exchange(command.args[0], offered)
        if exchange is None:
            return err("Unsupported authentication mechanism")
        self._sasl = exchange
        initial = None
        if len(command.args) == 2:
            try:
                initial = decode(command.args[1].encode("ascii"))  # "=": empty (RFC 5034 §4)
            except SASLError as error:
                return self._sasl_error(error)
        return self._sasl_step(initial)

    def _sasl_line(self, line: bytes) -> Any:
        self.events.sasl_line(line)
        try:
            answer = decode(line)
        except SASLError as error:
            return self._sasl_error(error)
        return self._sasl_step(answer)

    def _sasl_step(self, answer: bytes | None) -> Any:
        exchange = self._sasl
        assert exchange is not None
        try:
            step = exchange.step(answer)
        except SASLError as error:
            return self._sasl_error(error)
        if isinstance(step, bytes):
            return b"+ " + base64.b64encode(step) + b"\r\n"  # RFC 5034 §4
        self._sasl = None
        return self._login(step, exchange)

    def _sasl_error(self, error: SASLError) -> bytes:
        self._sasl = None
        if isinstance(error, Cancelled):
            return err("Authentication cancelled")  # RFC 5034 §4
        if isinstance(error, Rejected):
            return err("Authentication failed", "AUTH")
        return err(f"Invalid SASL response: {error}")

    # -- login ------------------------------------------------------------------------

    def _login(self, credentials: Any, exchange: Exchange | None = None) -> Deferred[Any]:
        """Ask the portal for the user's IAccount; then lock and list the maildrop."""
        credentials = with_context(credentials, "pop3", self.peer)
        d = self.factory.portal.login(credentials, None, IAccount)
        return d.addCallbacks(self._logged_in, self._not_logged_in, errbackArgs=(exchange,))

    def _not_logged_in(self, failure: Failure, exchange: Exchange | None) -> bytes | None:
        """RFC 3206 [AUTH] for bad credentials, [SYS/TEMP] for a temporary failure; a failure
        whose exception has ``tell_user`` shows its text (e.g. "use an app password")."""
        if isinstance(exchange, OAuthBearerExchange) and failure.check(UnauthorizedLogin):
            # RFC 7628 §3.2.2: an error challenge; the client's answer ends the exchange.
            self._sasl = exchange
            return b"+ " + base64.b64encode(exchange.error_challenge()) + b"\r\n"
        if failure.check(UnauthorizedLogin, UnhandledCredentials):
            log.info(
                "{peer}: POP3 authentication failed", peer=self.peer, **self.events.auth(False)
            )
            error = failure.value
            if getattr(error, "tell_user", False):
                code = "SYS/TEMP" if getattr(error, "temporary", False) else "AUTH"
                return err(str(error), code)
            return err("Authentication failed", "AUTH")
        log.failure("POP3 login error", failure)
        return err("Temporary authentication failure", "SYS/TEMP")

    def _logged_in(self, result: tuple[Any, Any, Callable[[], None]]) -> Any:
        _interface, account, logout = result
        user = str(getattr(account, "address", ""))
        if self._closing:
            logout()
            return None
        if self.factory.login_too_soon(user):
            logout()
            delay = self.policy.login_delay
            return err(f"Wait {delay} seconds between logins", "LOGIN-DELAY")
        if not self.factory.locks.acquire(user):
            logout()  # RFC 1939 §8, RFC 2449 §8.1.2
            return err("Maildrop is in use by another POP3 session", "IN-USE")
        self.user, self.account, self._logout, self._locked = user, account, logout, True
        self.factory.logged_in(user)
        leave = self.factory.leave_on_server(user)
        d = self.in_thread(
            lambda: maildrop_module.load(account.folder("INBOX"), leave, self.policy.mark_seen)
        )
        return d.addCallbacks(self._opened, self._not_opened)

    def _opened(self, maildrop: Maildrop) -> bytes:
        if self._closing:
            self._release()
            return b""
        self.maildrop = maildrop
        self.state = State.TRANSACTION
        count, size = maildrop.stat()
        log.info(
            "{peer}: POP3 login as {user}", peer=self.peer, user=self.user,
            **self.events.auth(True),
        )
        return ok(f"Logged in, {count} messages ({size} octets)")

    def _not_opened(self, failure: Failure) -> bytes:
        log.failure("POP3 cannot open the maildrop of {user}", failure, user=self.user)
        self._release()
        self.user = ""
        return err("Cannot open the maildrop, try again later", "SYS/TEMP")


def _states(*states: State) -> frozenset[State]:
    return frozenset(states)


AUTHORIZATION = _states(State.AUTHORIZATION)
TRANSACTION = _states(State.TRANSACTION)
BOTH = _states(State.AUTHORIZATION, State.TRANSACTION)

#: command -> (handler, states it is allowed in)
COMMANDS: dict[str, Entry] = {
    "CAPA": Entry(POP3Server.do_CAPA, BOTH),  # RFC 2449 §5: in every state
    "QUIT": Entry(POP3Server.do_QUIT, BOTH),
    "USER": Entry(POP3Server.do_USER, AUTHORIZATION),
    "PASS": Entry(POP3Server.do_PASS, AUTHORIZATION),
    "APOP": Entry(POP3Server.do_APOP, AUTHORIZATION),
    "AUTH": Entry(POP3Server.do_AUTH, AUTHORIZATION),
    "STLS": Entry(POP3Server.do_STLS, AUTHORIZATION),
    "UTF8": Entry(POP3Server.do_UTF8, AUTHORIZATION),
    "STAT": Entry(transaction.stat, TRANSACTION),
    "LIST": Entry(transaction.list_, TRANSACTION),
    "UIDL": Entry(transaction.uidl, TRANSACTION),
    "RETR": Entry(transaction.retr, TRANSACTION),
    "TOP": Entry(transaction.top, TRANSACTION),
    "DELE": Entry(transaction.dele, TRANSACTION),
    "NOOP": Entry(transaction.noop, TRANSACTION),
    "RSET": Entry(transaction.rset, TRANSACTION),
}
