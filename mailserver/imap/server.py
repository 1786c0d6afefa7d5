"""The IMAP4rev2 server protocol (RFC 9051), IMAP4rev1 (RFC 3501) compatible.

Design rules:

1. State is explicit: :class:`~mailserver.imap.session.State`, and :data:`COMMANDS` maps each
   command to its handler, the states it is allowed in, and how the selected mailbox may be
   brought up to date after it. A command in the wrong state is answered BAD in one place.
2. Handlers return a :class:`~mailserver.imap.commands.base.Result` and never write;
   :meth:`IMAPServer.write` is the one writer, one ``write`` per response (untagged lines,
   mailbox updates and the tagged line together). The exception is a response too big to
   build at once (``FETCH 1:* BODY[]``): its handler returns a ``Result.stream``, an async
   iterator of chunks of complete untagged responses, and the writer writes one chunk at a
   time, asking for the next only while the transport takes more (it is registered as the
   transport's push producer for that time), then the mailbox updates and the tagged line.
   So the memory a command holds is a chunk plus the transport's buffer, not the response.
3. One command in flight: input is parsed ahead by the
   :class:`~mailserver.imap.grammar.CommandReader`, but each event waits until the previous
   command is answered, so pipelined commands are answered in order and a continuation
   request (``+ Ready``) is only sent when its command is next. The transport is paused when
   too much input waits.
4. After AUTHENTICATE, IDLE, STARTTLS and ENABLE the reader pauses; SASL responses and
   ``DONE`` are read as lines, and input sent before the TLS handshake is discarded (RFC 9051
   §6.2.1).
5. Sequence numbers change only where RFC 9051 §7.4.1/§7.5.1 allow (see
   :mod:`mailserver.imap.selected`): at the end of a command (no EXPUNGE after FETCH, STORE
   or SEARCH) and while idling.
6. The account comes from the portal; this package imports no store. Errors never show a
   traceback: MailErrors map to RFC 5530 codes, anything else is logged and answered
   ``NO [SERVERBUG]``.
"""

from __future__ import annotations

import enum
import inspect
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailserver.errors import MailError, NoSuchFolder
from mailserver.imap import parse_session, response
from mailserver.imap.commands import (
    append,
    copy,
    fetch,
    flags,
    general,
    listing,
    mailbox,
    quota,
    search,
)
from mailserver.imap.commands.base import Refusal, Result, result_for_error
from mailserver.imap.commands.idle import Idler
from mailserver.imap.grammar import (
    BARRIERS,
    LITERAL_MINUS_MAX,
    BadCommand,
    Command,
    CommandReader,
    ContinuationNeeded,
    Event,
    LineTooLong,
    LiteralTooBig,
    close_spooled,
)
from mailserver.imap.session import Session, State
from mailserver.listener import accepted
from mailserver.observe.events import imap_line
from mailserver.smtp.sasl import (
    ALL_MECHANISMS,
    Cancelled,
    Exchange,
    OAuthBearerExchange,
    Rejected,
    SASLError,
    decode,
    new_exchange,
)

if TYPE_CHECKING:
    from mailserver.imap.factory import IMAPFactory

__all__ = ["COMMANDS", "IMAPServer", "Sync"]

log = Logger(namespace="mailserver.imap")

#: Pause reading from the socket when this much input, or this many parsed commands, wait.
PAUSE_AT = 1 << 18
MAX_QUEUED = 64


class Sync(enum.Enum):
    """What the end-of-command synchronisation of the selected mailbox may report."""

    NONE = "none"
    NO_EXPUNGE = "no expunge"  # FETCH, STORE, SEARCH (RFC 9051 §7.4.1)
    FULL = "full"


@dataclass(frozen=True)
class Entry:
    handler: Callable[[IMAPServer, Command], Any]
    states: frozenset[State]
    sync: Sync = Sync.FULL


@implementer(IPushProducer)
class _Output:
    """The producer of a streamed response, as the transport sees it: paused while the
    transport's write buffer is full (rule 2)."""

    def __init__(self) -> None:
        self.paused = False
        self.stopped = False
        self._waiting: Deferred[None] | None = None

    def resumed(self) -> Deferred[None]:
        """Fires when the transport takes more output again (or the connection is gone)."""
        self._waiting = Deferred()
        return self._waiting

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._wake()

    def stopProducing(self) -> None:
        self.stopped = True
        self.paused = False
        self._wake()


class IMAPServer(Protocol):
    """One IMAP session. Created by :class:`mailserver.imap.factory.IMAPFactory`."""

    def __init__(self, factory: IMAPFactory) -> None:
        self.factory = factory
        self.policy = factory.policy
        self.session = Session(factory)
        self.events = self.session.events
        #: Slowloris defence: before login the session has login_timeout from its start in
        #: all; neither bytes nor commands extend it (RFC 9051 §5.4 allows a shorter timer).
        self._login_deadline = factory.reactor.seconds() + self.policy.login_timeout  # type: ignore[attr-defined]
        self.reader = CommandReader(
            self.policy.max_line,
            self.policy.max_literal,
            self.policy.literal_plus,
            spool_threshold=self.policy.spool_threshold,
            spool=partial(tempfile.TemporaryFile, dir=self.policy.spool_directory),
        )
        self.peer = ""
        self.errors = 0
        self._events: deque[Event] = deque()
        self._busy = True  # until the greeting is sent
        self._closing = False
        self._paused = False
        self._counted = False
        self._timeout: Any = None
        self._sasl: Exchange | None = None
        self._sasl_command: Command | None = None
        self._idler: Idler | None = None
        self._idle_command: Command | None = None

    # -- connection life cycle ---------------------------------------------------------

    def connectionMade(self) -> None:
        self.peer = self.session.peer = self.events.peer = accepted(self.transport)
        policy = self.policy
        if not self.factory.admit(self.peer):
            self.write(response.bye(f"{policy.hostname} Too many connections"))
            self._close()
            return
        self._counted = True
        self.session.secure = policy.implicit_tls
        code = self.session.capability_code()
        self.write(
            response.untagged_status(
                "OK", f"{policy.hostname} IMAP4rev2 server ready", response_code=code
            )
        )
        self._busy = False
        self._reset_timeout()
        self._process()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._closing = True
        self._cancel_timeout()
        self._stop_idle()
        self.reader.close()  # a literal being spooled to disk is dropped, and so are
        close_spooled(self._events)  # those of commands that will not run now
        if self._counted:
            self._counted = False
            self.factory.release(self.peer)
        self.session.logout()

    # -- timeouts (RFC 9051 §5.4) -------------------------------------------------------

    def _reset_timeout(self) -> None:
        self._cancel_timeout()
        reactor = self.factory.reactor
        if self.session.state is State.NOT_AUTHENTICATED:
            seconds = max(self._login_deadline - reactor.seconds(), 0.0)  # type: ignore[attr-defined]
        else:
            seconds = self.policy.idle_timeout
        self._timeout = reactor.callLater(seconds, self._timed_out)  # type: ignore[attr-defined]

    def _cancel_timeout(self) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None

    def _timed_out(self) -> None:
        self._timeout = None
        self.write(response.bye("Autologout; idle for too long"))
        self._close()

    # -- input --------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self._reset_timeout()
        self._events.extend(self.reader.feed(data))
        self._process()
        waiting = self.reader.buffered > PAUSE_AT or len(self._events) > MAX_QUEUED
        if self._busy and waiting and not self._paused:
            self._paused = True
            self.transport.pauseProducing()

    def _process(self) -> None:
        """Handle input until a response is pending or more input is needed."""
        while not self._busy and not self._closing:
            if self._sasl is not None or self._idler is not None:
                line = self._read_line()
                if line is None:
                    break
                if self._sasl is not None:
                    self._sasl_line(line)
                else:
                    self._idle_line(line)
                continue
            if not self._events:
                break
            self._event(self._events.popleft())
        if self._paused and not self._busy and not self._closing:
            self._paused = False
            self.transport.resumeProducing()

    def _read_line(self) -> bytes | None:
        """The next SASL response or DONE line; an over-long one becomes a line that is
        neither (so it is refused like any other wrong line)."""
        try:
            return self.reader.read_line()
        except LineTooLong:
            return b"\x00"

    def _event(self, event: Event) -> None:
        if isinstance(event, ContinuationNeeded):
            self.write(response.continuation("Ready"))  # RFC 9051 §7.6
        elif isinstance(event, LiteralTooBig):
            if event.literal_minus:
                # RFC 7888 §5: a {n+} over 4096 octets breaks LITERAL-, a protocol error.
                text = f"Non-synchronizing literals over {LITERAL_MINUS_MAX} octets need {{n}}"
                result = Result("BAD", text, b"TOOBIG")
            else:
                result = Result("NO", "Literal too big", b"TOOBIG")  # RFC 7888 §4
            self._send(event.tag, result)
        elif isinstance(event, BadCommand):
            status = "NO" if event.code == "BADCHARSET" else "BAD"
            code = event.code.encode("ascii") if event.code else None
            self._send(event.tag, Result(status, event.reason, code))
        else:
            self._dispatch(event)

    def _dispatch(self, command: Command) -> None:
        name = command.name if command.name in COMMANDS else "UNKNOWN"
        self.events.command(name, lambda: imap_line(command.tag, command.name, command.args))
        if self.factory.shutting_down:
            self.write(response.bye("Server shutting down"))
            self._close()
            return
        entry = COMMANDS.get(command.name)
        if entry is None:
            self._finish(command, None, Result("BAD", f"{command.name} is not supported"))
            return
        if self.session.state not in entry.states:
            self._finish(command, None, Result("BAD", _state_hint(entry, self.session.state)))
            return
        try:
            result = entry.handler(self, command)
        except Exception:
            result = self._failure_result(Failure())
        self._answer(command, entry, result)

    def _answer(self, command: Command, entry: Entry | None, result: Any) -> None:
        """Send ``result`` now, or when it is ready; None means the command goes on (SASL,
        IDLE, STARTTLS) and is answered later."""
        if inspect.iscoroutine(result):
            result = Deferred.fromCoroutine(result)
        if isinstance(result, Deferred):
            self._busy = True
            result.addErrback(self._failure_result)
            result.addCallback(self._deferred_done, command, entry)
            result.addErrback(lambda failure: log.failure("IMAP response failed", failure))
            return
        if result is not None:
            self._finish(command, entry, result)

    def _deferred_done(self, result: Result | None, command: Command, entry: Entry | None) -> None:
        self._busy = False
        if self._closing:
            return
        if result is not None:
            self._finish(command, entry, result)
        self._process()

    def _failure_result(self, failure: Failure) -> Result:
        if not failure.check(Refusal, MailError):
            log.failure("IMAP command failed", failure)
        return result_for_error(failure.value)  # type: ignore[arg-type]

    # -- output -------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """The one writer."""
        if not self._closing:
            self.transport.write(data)

    def _close(self) -> None:
        self._closing = True
        self._stop_idle()
        self.transport.loseConnection()

    def _send(self, tag: str, result: Result) -> None:
        """A response to input that is not a command (bad syntax, literal too big)."""
        self.events.command("UNKNOWN", lambda: f"{tag} (not a valid command)")
        self.events.reply(result.status, lambda: f"{tag} {result.status} {result.text}")
        if tag == "*":
            self.write(response.untagged_status(result.status, result.text))
        else:
            self.write(response.tagged(tag, result.status, result.text, response_code=result.code))
        self._count_error(result)

    def _finish(self, command: Command, entry: Entry | None, result: Result) -> None:
        """Write ``result`` with the mailbox updates the command allows, then read on."""
        if result.stream is not None:
            self._busy = True
            stream, result.stream = result.stream, None
            done = Deferred.fromCoroutine(self._write_stream(command, entry, result, stream))
            done.addErrback(lambda failure: log.failure("IMAP response failed", failure))
            return
        chunks = list(result.untagged)
        view = self.session.selected
        if view is not None and entry is not None and entry.sync is not Sync.NONE:
            try:
                chunks += view.sync(allow_expunge=entry.sync is Sync.FULL)
            except NoSuchFolder:  # deleted by another session: nothing sensible remains
                self.write(b"".join([*chunks, response.bye("Selected mailbox no longer exists")]))
                self._close()
                return
            except Exception:
                log.failure("IMAP mailbox update failed", Failure())
                self.write(b"".join([*chunks, response.bye("Internal server error")]))
                self._close()
                return
        code = result.code
        chunks.append(response.tagged(command.tag, result.status, result.text, response_code=code))
        self.write(b"".join(chunks))
        self.events.reply(result.status, lambda: f"{command.tag} {result.status} {result.text}")
        self.reader.utf8 = self.session.utf8
        self._reset_timeout()  # the state, and so the timer's length, may have changed
        if result.close:
            self._close()
            return
        self._count_error(result)
        if command.name in BARRIERS and not self._closing:
            self._events.extend(self.reader.resume())

    async def _write_stream(
        self, command: Command, entry: Entry | None, result: Result, stream: AsyncIterator[bytes]
    ) -> None:
        """Write a streamed response (rule 2): a chunk at a time, asking for the next one only
        while the transport takes more (it pauses this producer when its buffer is full),
        then the rest of ``result`` as :meth:`_finish` does."""
        if result.untagged:
            self.write(b"".join(result.untagged))
            result.untagged = []
        output = _Output()
        self.transport.registerProducer(output, True)
        try:
            async for chunk in stream:
                self.write(chunk)
                self._reset_timeout()
                if output.paused:
                    await output.resumed()
                if self._closing or output.stopped:
                    break  # the connection is gone: produce nothing more
        except Exception:
            result = self._failure_result(Failure())  # after the responses already sent
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
            if not output.stopped:
                self.transport.unregisterProducer()
        self._busy = False
        if self._closing:
            return
        self._finish(command, entry, result)
        self._process()

    def _count_error(self, result: Result) -> None:
        if result.status != "BAD":
            return
        self.errors += 1
        if self.errors >= self.policy.max_errors:
            self.write(response.bye("Too many errors"))
            self._close()

    # -- LOGOUT, STARTTLS (RFC 9051 §6.1.3, §6.2.1) ---------------------------------------

    def do_LOGOUT(self, command: Command) -> Result:
        self.session.state = State.LOGOUT
        bye = response.bye(f"{self.policy.hostname} logging out")
        return Result(text="LOGOUT completed", untagged=[bye], close=True)

    def do_STARTTLS(self, command: Command) -> Result | None:
        if self.session.secure:
            return Result("BAD", "TLS is already active")
        if not self.session.tls_offered():
            return Result("BAD", "STARTTLS is not available")
        self.reader.discard_buffer()  # nothing sent before the handshake counts
        self.write(response.tagged(command.tag, "OK", "Begin TLS negotiation now"))
        self.transport.startTLS(self.factory.tls)
        self.session.secure = True
        self._events.extend(self.reader.resume())
        return None

    # -- AUTHENTICATE (RFC 9051 §6.2.2, SASL-IR RFC 4959) ------------------------------

    def do_AUTHENTICATE(self, command: Command) -> Any:
        args = command.args
        assert isinstance(args, parse_session.Authenticate)
        if not self.session.auth_allowed():
            return Result("NO", "Authentication is disabled before STARTTLS", b"PRIVACYREQUIRED")
        offered = {
            name: ALL_MECHANISMS[name]
            for name in self.policy.auth_mechanisms
            if name in ALL_MECHANISMS
        }
        exchange = new_exchange(args.mechanism, offered)
        if exchange is None:
            return Result("NO", "Unsupported authentication mechanism", b"CANNOT")
        self._sasl = exchange
        self._sasl_command = command
        return self._sasl_step(args.initial_response)

    def _sasl_line(self, line: bytes) -> None:
        command = self._sasl_command
        assert command is not None
        self.events.sasl_line(line)
        try:
            answer = decode(line)
        except SASLError as error:
            self._answer(command, None, self._sasl_error(error))
            return
        self._answer(command, None, self._sasl_step(answer))

    def _sasl_step(self, answer: bytes | None) -> Any:
        exchange = self._sasl
        assert exchange is not None
        try:
            step = exchange.step(answer)
        except SASLError as error:
            return self._sasl_error(error)
        if isinstance(step, bytes):
            self.write(response.continuation(challenge=step))
            return None
        self._sasl = None
        d = self.session.authenticate(step)
        return d.addCallbacks(
            self.session.logged_in, self._not_authenticated, errbackArgs=(exchange,)
        )

    def _sasl_error(self, error: SASLError) -> Result:
        self._sasl = None
        if isinstance(error, Cancelled):
            return Result("BAD", "Authentication cancelled")  # RFC 9051 §6.2.2
        if isinstance(error, Rejected):
            return Result("NO", "Authentication failed", b"AUTHENTICATIONFAILED")
        return Result("BAD", f"Invalid SASL response: {error}")

    def _not_authenticated(self, failure: Failure, exchange: Exchange) -> Result | None:
        if isinstance(exchange, OAuthBearerExchange) and failure.check(UnauthorizedLogin):
            # RFC 7628 §3.2.2: an error challenge; the client's answer ends the exchange.
            self._sasl = exchange
            self.write(response.continuation(challenge=exchange.error_challenge()))
            return None
        return self.session.login_failed(failure)

    # -- IDLE (RFC 2177) ---------------------------------------------------------------

    def do_IDLE(self, command: Command) -> None:
        self._idle_command = command
        self.write(response.continuation("idling"))
        self._idler = Idler(self.session, self.write, self._idle_failed)
        self._idler.start()

    def _idle_line(self, line: bytes) -> None:
        command = self._idle_command
        assert command is not None
        self._stop_idle()
        if line.upper() == b"DONE":
            result = Result(text="IDLE terminated")
        else:
            result = Result("BAD", "Expected DONE")
        self._finish(command, COMMANDS["IDLE"], result)

    def _idle_failed(self, error: BaseException) -> None:
        self.write(response.bye("Selected mailbox no longer exists"))
        self._close()

    def _stop_idle(self) -> None:
        idler, self._idler = self._idler, None
        if idler is not None:
            idler.stop()


def _on_session(handler: Callable[[Session, Command], Any]) -> Callable[[IMAPServer, Command], Any]:
    def call(server: IMAPServer, command: Command) -> Any:
        return handler(server.session, command)

    call.__name__ = handler.__name__
    return call


def _state_hint(entry: Entry, state: State) -> str:
    if state is State.NOT_AUTHENTICATED:
        return "Log in first"
    if State.SELECTED in entry.states and State.AUTHENTICATED not in entry.states:
        return "No mailbox selected"
    if State.NOT_AUTHENTICATED in entry.states:
        return "Already authenticated"
    return "Not allowed with a mailbox selected"


ANY = frozenset({State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED})
NOT_AUTHENTICATED = frozenset({State.NOT_AUTHENTICATED})
AUTHENTICATED = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})

_s = _on_session
#: command -> (handler, states it is allowed in, what the mailbox update after it may say)
COMMANDS: dict[str, Entry] = {
    "CAPABILITY": Entry(_s(general.capability), ANY),
    "NOOP": Entry(_s(general.noop), ANY),
    "ID": Entry(_s(general.id_), ANY),
    "LOGOUT": Entry(IMAPServer.do_LOGOUT, ANY, Sync.NONE),
    "STARTTLS": Entry(IMAPServer.do_STARTTLS, NOT_AUTHENTICATED),
    "LOGIN": Entry(_s(general.login), NOT_AUTHENTICATED),
    "AUTHENTICATE": Entry(IMAPServer.do_AUTHENTICATE, NOT_AUTHENTICATED),
    # RFC 5161 §3.1: ENABLE only in the authenticated state.
    "ENABLE": Entry(_s(general.enable), frozenset({State.AUTHENTICATED})),
    "NAMESPACE": Entry(_s(general.namespace), AUTHENTICATED),
    "SELECT": Entry(_s(mailbox.select), AUTHENTICATED, Sync.NONE),
    "EXAMINE": Entry(_s(mailbox.select), AUTHENTICATED, Sync.NONE),
    "CREATE": Entry(_s(mailbox.create), AUTHENTICATED),
    "DELETE": Entry(_s(mailbox.delete), AUTHENTICATED),
    "RENAME": Entry(_s(mailbox.rename), AUTHENTICATED),
    "SUBSCRIBE": Entry(_s(mailbox.subscribe), AUTHENTICATED),
    "UNSUBSCRIBE": Entry(_s(mailbox.unsubscribe), AUTHENTICATED),
    "LIST": Entry(_s(listing.list_), AUTHENTICATED),
    "LSUB": Entry(_s(listing.lsub), AUTHENTICATED),
    "STATUS": Entry(_s(mailbox.status), AUTHENTICATED),
    "GETQUOTA": Entry(_s(quota.getquota), AUTHENTICATED),
    "GETQUOTAROOT": Entry(_s(quota.getquotaroot), AUTHENTICATED),
    "SETQUOTA": Entry(_s(quota.setquota), AUTHENTICATED),
    "APPEND": Entry(_s(append.append), AUTHENTICATED),
    "IDLE": Entry(IMAPServer.do_IDLE, AUTHENTICATED),
    "CHECK": Entry(_s(general.noop), SELECTED),  # IMAP4rev1 only; a NOOP here
    "CLOSE": Entry(_s(mailbox.close), SELECTED, Sync.NONE),
    "UNSELECT": Entry(_s(mailbox.unselect), SELECTED, Sync.NONE),
    "EXPUNGE": Entry(_s(flags.expunge), SELECTED),
    "UID EXPUNGE": Entry(_s(flags.uid_expunge), SELECTED),
    "SEARCH": Entry(_s(search.search), SELECTED, Sync.NO_EXPUNGE),
    "UID SEARCH": Entry(_s(search.search), SELECTED),
    "FETCH": Entry(_s(fetch.fetch), SELECTED, Sync.NO_EXPUNGE),
    "UID FETCH": Entry(_s(fetch.fetch), SELECTED),
    "STORE": Entry(_s(flags.store), SELECTED, Sync.NO_EXPUNGE),
    "UID STORE": Entry(_s(flags.store), SELECTED),
    "COPY": Entry(_s(copy.copy), SELECTED),
    "UID COPY": Entry(_s(copy.copy), SELECTED),
    "MOVE": Entry(_s(copy.copy), SELECTED),
    "UID MOVE": Entry(_s(copy.copy), SELECTED),
}
