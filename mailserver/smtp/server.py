"""The ESMTP server protocol (RFC 5321 with PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES,
SMTPUTF8, STARTTLS, CHUNKING/BINARYMIME and DSN).

Design rules:

1. State is explicit: :class:`State`, and :data:`VERBS` maps each verb to its handler and the
   states it is allowed in; a verb in the wrong state gets ``503 5.5.1`` in one place.
2. Handlers return a :class:`~mailserver.smtp.codes.Reply` (or a Deferred of one) and never
   write; :meth:`ESMTPServer.send` is the one writer, one ``write`` per reply.
3. One command in flight: while a reply is pending, input is buffered (and the transport
   paused when the buffer grows), so pipelined replies keep their order (RFC 2920 §3).
4. Message content is only ever read by the DATA/BDAT readers of ``smtp/data.py``; body text
   can never be taken for a command, and bytes after STARTTLS are discarded (RFC 3207 §4.2).
5. The avatar from the portal decides who may receive mail; this module knows no store.

Message content (DATA, BDAT, the transaction's spool and commit) is in ``transaction.py``.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.cred.credentials import Anonymous
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailserver.errors import MailError
from mailserver.interfaces import IDeliveryTarget, IFilterSession, ISessionFilter
from mailserver.listener import accepted
from mailserver.observe.events import SessionEvents
from mailserver.smtp import codes
from mailserver.smtp.codes import Reply
from mailserver.smtp.data import ChunkReader, DataReader
from mailserver.smtp.grammar import (
    GrammarError,
    parse_command,
    parse_helo,
    parse_mail,
    parse_rcpt,
)
from mailserver.smtp.limits import SessionLimits
from mailserver.smtp.sasl import (
    ALL_MECHANISMS,
    Cancelled,
    Exchange,
    OAuthBearerExchange,
    Rejected,
    SASLError,
    decode,
    new_exchange,
    with_context,
)
from mailserver.smtp.transaction import (
    ANY,
    TRANSACTION,
    MessageContent,
    State,
    Transaction,
    mail_params,
    new_queue_id,
    sequence_hint,
)
from mailserver.smtp.wire import send_now
from mailserver.types import Envelope, Peer

if TYPE_CHECKING:
    from mailserver.smtp.factory import SMTPFactory

log = Logger(namespace="mailserver.smtp")

#: Pause reading from the socket when this much input waits behind a pending reply.
PAUSE_AT = 1 << 18



class ESMTPServer(SessionLimits, MessageContent, Protocol):
    """One SMTP session. Created by :class:`mailserver.smtp.factory.SMTPFactory`."""

    def __init__(self, factory: SMTPFactory) -> None:
        self.factory = factory
        self.policy = factory.policy
        self.state = State.CONNECTED
        self.avatar: IDeliveryTarget | None = None
        self.helo = ""
        self.esmtp = False
        self.secure = False
        self.authenticated_as: str | None = None
        self._anonymous: IDeliveryTarget | None = None
        #: The filter session when the avatar filters (ISessionFilter), else None.
        self.screen: IFilterSession | None = None
        self._anonymous_screen: IFilterSession | None = None
        self._sasl: Exchange | None = None
        self.errors = 0
        self.peer = ""
        self.transaction: Transaction | None = None
        self.events = SessionEvents(log, "smtp", factory)  # metrics, mail log and trace
        self._buffer = b""
        self._busy = True  # until the greeting is sent
        self._paused = False
        self._discarding = False
        self._closing = False
        self._reader: DataReader | ChunkReader | None = None
        self._reader_done: Callable[[Any], Reply | Deferred[Reply]] | None = None
        self._timeout: Any = None
        self._counted = False
        #: The slow-sender budget (limits.py): (transaction, first content byte, bytes).
        self._budget: tuple[Transaction | None, float, int] | None = None

    # -- connection life cycle ---------------------------------------------------------

    def connectionMade(self) -> None:
        self.peer = self.events.peer = accepted(self.transport)
        factory = self.factory
        if not factory.admit(self.peer):
            self.send(
                codes.TOO_MANY_CONNECTIONS.with_text(f"{self.policy.hostname} Too many connections")
            )
            return
        self._counted = True
        self._reset_timeout()
        if self.policy.implicit_tls:
            self.secure = True
        if self.policy.require_auth:
            self._logged_in((None, None, None))  # no avatar until AUTH
            return
        d = factory.portal.login(Anonymous(), None, IDeliveryTarget)
        d.addCallbacks(self._logged_in, self._login_failed)

    def _logged_in(self, result: tuple[Any, Any, Any]) -> None:
        _interface, self.avatar, _logout = result
        self._anonymous = self.avatar
        if self._closing:
            return
        if ISessionFilter.providedBy(self.avatar):
            self.screen = self._anonymous_screen = self.avatar.open(self._as_peer())
            screening = self.screen.connect()
            screening.addCallbacks(self._screened, self._login_failed)
            return
        self._greeting()

    def _as_peer(self) -> Peer:
        return Peer(
            self.peer,
            self.helo,
            tls=self.secure,
            authenticated_as=self.authenticated_as,
            listener="submission" if self.policy.require_auth else "smtp",
        )

    def _screened(self, refused: tuple[int, str, str] | None) -> None:
        """The filter's connect phase is done: greet, or refuse with 421 and close."""
        if self._closing:
            return
        if refused is not None:
            code, enhanced, text = refused
            self.send(Reply(code, enhanced, (f"{self.policy.hostname} {text}",), close=True))
            return
        self._greeting()

    def _greeting(self) -> None:
        self.send(codes.GREETING.with_text(f"{self.policy.hostname} ESMTP mailserver"))
        self._busy = False
        self._process()

    def _login_failed(self, failure: Failure) -> None:
        log.failure("SMTP session could not get an avatar", failure)
        self.send(codes.SHUTTING_DOWN.with_text("Service not available, closing channel"))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._closing = True
        self._cancel_timeout()
        if self._counted:
            self._counted = False
            self.factory.release(self.peer)
        self._abort_transaction()

    # -- timeouts (RFC 5321 §4.5.3.2; _reset_timeout and the slow-sender budget: limits.py)

    def _cancel_timeout(self) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None

    def _timed_out(self) -> None:
        self._timeout = None
        self.send(codes.TIMEOUT.with_text(f"{self.policy.hostname} Timeout, closing connection"))

    # -- input --------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if self._reader is not None:  # message content: each block restarts the timer
            self._reset_timeout()
        self._buffer += data
        self._process()
        if self._busy and len(self._buffer) > PAUSE_AT and not self._paused:
            self._paused = True
            self.transport.pauseProducing()

    def _process(self) -> None:
        """Handle buffered input until a reply is pending or more input is needed."""
        while not self._busy and not self._closing and self._buffer:
            if self._reader is not None:
                self._feed_reader()
                continue
            line = self._next_line()
            if line is None:
                break
            if self._sasl is not None:
                self._sasl_response(line)
            else:
                self._dispatch(line)
        if self._paused and not self._busy:
            self._paused = False
            self.transport.resumeProducing()

    def _next_line(self) -> bytes | None:
        """The next command line without its CRLF, or None when it is not complete yet."""
        end = self._buffer.find(b"\n")
        limit = self.policy.max_line_length
        if end < 0:
            if len(self._buffer) > limit:
                # RFC 5321 §4.5.3.1.4: too long. Drop what we have and skip to the line end.
                if not self._discarding:
                    self._discarding = True
                    self._reply(codes.LINE_TOO_LONG)
                self._buffer = b""
            return None
        raw, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
        self._reset_timeout()  # a whole line: the client gets a new command_timeout
        if not raw.endswith(b"\r"):
            if self.policy.bare_newline == "reject":
                self._reply(
                    codes.BARE_NEWLINE.with_text(
                        f"{self.policy.hostname} Error: bare <LF> received"
                    )
                )
                return None
            line = raw
        else:
            line = raw[:-1]
        if self._discarding:
            self._discarding = False
            return None
        if len(line) + 2 > limit:
            self._reply(codes.LINE_TOO_LONG)
            return None
        if b"\r" in line and self.policy.bare_newline == "reject":
            self._reply(
                codes.BARE_NEWLINE.with_text(f"{self.policy.hostname} Error: bare <CR> received")
            )
            return None
        return line

    def _dispatch(self, line: bytes) -> None:
        self.events.line_command(line, VERBS)
        if self.factory.shutting_down:
            self._reply(
                codes.SHUTTING_DOWN.with_text(
                    f"{self.policy.hostname} Service shutting down, closing channel"
                )
            )
            return
        try:
            command = parse_command(line)
        except GrammarError as error:
            self._error(error.reply)
            return
        entry = VERBS.get(command.verb)
        if entry is None:
            self._error(codes.SYNTAX_ERROR)
            return
        handler, allowed = entry
        if self.state not in allowed:
            self._error(codes.BAD_SEQUENCE.with_text(sequence_hint(command.verb, self.state)))
            return
        try:
            result = handler(self, command.argument)
        except GrammarError as error:
            self._error(error.reply)
            return
        except MailError as error:
            self._reply(codes.reply_for_error(error))
            return
        self._answer(result)

    def _answer(self, result: Reply | Deferred[Reply] | None) -> None:
        if result is None:
            # The reply comes when the BDAT chunk has been read. Feed the reader now: a
            # chunk of 0 octets ("BDAT 0 LAST", RFC 3030 §2) is complete with no more input.
            if self._reader is not None:
                self._feed_reader()
            return
        if isinstance(result, Reply):
            self._reply(result)
            return
        self._busy = True
        result.addErrback(self._failure_reply)
        result.addCallback(self._deferred_reply)

    def _deferred_reply(self, reply: Reply) -> None:
        self._busy = False
        self._reply(reply)
        self._process()

    def _failure_reply(self, failure: Failure) -> Reply:
        if failure.check(GrammarError):
            return failure.value.reply  # type: ignore[union-attr, no-any-return]
        if failure.check(MailError):
            return codes.reply_for_error(failure.value)  # type: ignore[arg-type]
        log.failure("SMTP command failed", failure)
        return codes.LOCAL_ERROR

    def _error(self, reply: Reply) -> None:
        self.errors += 1
        if self.errors >= self.policy.max_errors:
            reply = codes.SHUTTING_DOWN.with_text(f"{self.policy.hostname} Too many errors")
        self._reply(reply)

    # -- output -------------------------------------------------------------------------

    def _reply(self, reply: Reply) -> None:
        self.send(reply)

    def send(self, reply: Reply) -> None:
        """The one writer: one ``write`` per reply; close after 221/421/521."""
        if self._closing:
            return
        data = reply.encode()
        if not send_now(self.transport, data):
            self.transport.write(data)
        self.events.reply(str(reply.code), lambda: " | ".join(reply.lines()), reply.enhanced)
        if reply.close:
            self._closing = True
            self._abort_transaction()
            self.transport.loseConnection()

    # -- command handlers ---------------------------------------------------------------

    def extensions(self) -> list[str]:
        """The EHLO keywords offered in the current state."""
        offered = ["PIPELINING"]
        size = self.policy.max_message_size
        offered.append(f"SIZE {size}" if size else "SIZE")
        offered += ["8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING", "BINARYMIME"]
        # RFC 5321 §4.1.1.1: every supported command outside the §4.5.1 minimum is listed.
        offered += ["DSN", "HELP"]
        if self.factory.tls is not None and self.policy.offer_starttls and not self.secure:
            offered.append("STARTTLS")
        if self._auth_offered():
            offered.append("AUTH " + " ".join(self.policy.auth_mechanisms))
        return offered

    def _auth_offered(self) -> bool:
        policy = self.policy
        return policy.auth and (self.secure or not policy.auth_needs_tls)

    def _param_extensions(self) -> frozenset[str]:
        if not self.esmtp:
            return frozenset()  # RFC 5321 §4.1.1.1: parameters need EHLO
        offered = {"SIZE", "8BITMIME", "SMTPUTF8", "DSN", "BINARYMIME"}
        if self.policy.auth:
            offered.add("AUTH")  # RFC 4954 §5
        return frozenset(offered)

    def _greet(self, argument: str, esmtp: bool) -> Reply:
        try:
            domain = parse_helo(argument)
        except GrammarError:
            raise
        if self.policy.helo_check == "fqdn" and not (domain.startswith("[") or "." in domain):
            return codes.BAD_DOMAIN.with_text("Need a fully-qualified host name")
        self._abort_transaction()
        self.helo = domain
        self.esmtp = esmtp
        self.state = State.GREETED
        if self.screen is not None:
            self.screen.helo(domain)
        greeting = f"{self.policy.hostname} Hello {domain} [{self.peer}]"
        # RFC 2034 §3: no enhanced status code in the reply to EHLO/HELO (the client has
        # not seen ENHANCEDSTATUSCODES yet, and the EHLO lines are keywords).
        if not esmtp:
            return codes.HELLO.with_text(greeting)
        return codes.HELLO.with_text(greeting, *self.extensions())

    def do_EHLO(self, argument: str) -> Reply:
        return self._greet(argument, esmtp=True)

    def do_HELO(self, argument: str) -> Reply:
        return self._greet(argument, esmtp=False)

    def do_MAIL(self, argument: str) -> Reply:
        if self.policy.require_auth and self.authenticated_as is None:
            if self.policy.auth_needs_tls and not self.secure:
                return codes.TLS_REQUIRED
            return codes.AUTH_REQUIRED
        sender, params = parse_mail(
            argument,
            extensions=self._param_extensions(),
            max_size=self.policy.max_message_size,
        )
        assert self.avatar is not None
        queue_id = new_queue_id()
        envelope = Envelope(
            sender=sender,
            helo=self.helo,
            client_address=self.peer,
            authenticated_as=self.authenticated_as,
            params=mail_params(params),
            received_at=time.time(),
            queue_id=queue_id,
        )
        target = self.screen if self.screen is not None else self.avatar
        delivery = target.start(envelope)
        self.transaction = Transaction(delivery, sender, params, queue_id)
        self.state = State.MAIL
        return codes.SENDER_OK

    def do_RCPT(self, argument: str) -> Reply | Deferred[Reply]:
        transaction = self.transaction
        assert transaction is not None
        recipient, params = parse_rcpt(
            argument,
            extensions=self._param_extensions(),
            smtputf8=transaction.params.smtputf8,
        )
        if len(transaction.recipients) >= self.policy.max_recipients:
            return codes.TOO_MANY_RECIPIENTS  # RFC 5321 §4.5.3.1.10
        rcpt_params: dict[str, str] = {}
        if params.notify is not None:
            rcpt_params["NOTIFY"] = ",".join(params.notify)
        if params.orcpt is not None:
            rcpt_params["ORCPT"] = f"{params.orcpt[0]};{params.orcpt[1]}"

        def accepted(_: object) -> Reply:
            if self.transaction is transaction:
                transaction.recipients.append(recipient)
                self.state = State.RCPT
            return codes.RECIPIENT_OK

        d = maybeDeferred(transaction.delivery.add_recipient, recipient, rcpt_params)
        return d.addCallback(accepted)

    def do_RSET(self, argument: str) -> Reply:
        if argument:  # RFC 5321 §4.1.1: RSET, DATA and QUIT take no parameters
            return codes.BAD_ARGUMENTS.with_text("RSET takes no arguments")
        self._abort_transaction()
        if self.state is not State.CONNECTED:
            self.state = State.GREETED
        return codes.OK

    def do_NOOP(self, argument: str) -> Reply:
        return codes.OK

    def do_QUIT(self, argument: str) -> Reply:
        if argument:  # RFC 5321 §4.1.1: RSET, DATA and QUIT take no parameters
            return codes.BAD_ARGUMENTS.with_text("QUIT takes no arguments")
        return codes.CLOSING.with_text(f"{self.policy.hostname} Bye")

    def do_VRFY(self, argument: str) -> Reply:
        if self.policy.vrfy == "disabled":
            return codes.NOT_IMPLEMENTED.with_text("VRFY is disabled")
        if not argument:
            return codes.BAD_ARGUMENTS.with_text("VRFY needs an argument")
        return codes.CANNOT_VRFY  # RFC 5321 §3.5.3: no user enumeration

    def do_EXPN(self, argument: str) -> Reply:
        return codes.NOT_IMPLEMENTED.with_text("EXPN is not supported")

    def do_HELP(self, argument: str) -> Reply:
        return codes.HELP.with_text(
            "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS",
            "See RFC 5321",
        )

    def do_STARTTLS(self, argument: str) -> Reply | None:
        if argument:
            return codes.BAD_ARGUMENTS.with_text("STARTTLS takes no arguments")
        if self.factory.tls is None or not self.policy.offer_starttls:
            return codes.NOT_IMPLEMENTED.with_text("STARTTLS not available")
        if self.secure:
            return codes.BAD_SEQUENCE.with_text("TLS already active")
        # RFC 3207 §4.2: discard anything pipelined after STARTTLS, reset all state.
        self._buffer = b""
        self._abort_transaction()
        self.send(codes.READY_TLS)
        self.transport.startTLS(self.factory.tls)
        self.secure = True
        self.state = State.CONNECTED
        self.helo = ""
        self.esmtp = False
        self.authenticated_as = None
        self.avatar = self._anonymous
        self.screen = self._anonymous_screen
        return None

    # -- AUTH (RFC 4954) -----------------------------------------------------------------

    def do_AUTH(self, argument: str) -> Reply | Deferred[Reply] | None:
        if not self.policy.auth:
            return codes.NOT_IMPLEMENTED.with_text("AUTH not available")
        if self.authenticated_as is not None:
            return codes.BAD_SEQUENCE.with_text("Already authenticated")  # RFC 4954 §4
        if not self._auth_offered():
            return codes.ENCRYPTION_REQUIRED
        mechanism, _, initial = argument.partition(" ")
        offered = {name: ALL_MECHANISMS[name] for name in self.policy.auth_mechanisms}
        exchange = new_exchange(mechanism, offered)
        if exchange is None:
            return codes.MECHANISM_UNKNOWN
        self._sasl = exchange
        try:
            response = decode(initial.encode()) if initial else None
        except SASLError as error:
            return self._sasl_error(error)
        return self._sasl_step(response)

    def _sasl_response(self, line: bytes) -> None:
        self.events.sasl_line(line)
        try:
            response = decode(line)
        except SASLError as error:
            self._answer(self._sasl_error(error))
            return
        self._answer(self._sasl_step(response))

    def _sasl_error(self, error: SASLError) -> Reply:
        self._sasl = None
        if isinstance(error, Cancelled):
            return codes.AUTH_CANCELLED
        if isinstance(error, Rejected):  # RFC 7628 §3.2.2: the client acknowledged the error
            return codes.AUTH_FAILED
        return codes.AUTH_BAD_RESPONSE.with_text(f"Cannot decode response: {error}")

    def _sasl_step(self, response: bytes | None) -> Reply | Deferred[Reply]:
        assert self._sasl is not None
        try:
            step = self._sasl.step(response)
        except SASLError as error:
            return self._sasl_error(error)
        if isinstance(step, bytes):
            return codes.CHALLENGE.with_text(base64.b64encode(step).decode())
        exchange, self._sasl = self._sasl, None
        credentials = with_context(step, "smtp", self.peer)
        d = self.factory.portal.login(credentials, None, IDeliveryTarget)
        return d.addCallbacks(
            self._authenticated, self._not_authenticated, errbackArgs=(exchange,)
        )

    def _authenticated(self, result: tuple[Any, Any, Any]) -> Reply:
        _interface, avatar, _logout = result
        self.avatar = avatar
        self.authenticated_as = str(getattr(avatar, "user", "") or "")
        # The user's own target may filter too (rate limits, virus scanning); its session
        # skips the connect phase, which the connection has passed.
        self.screen = avatar.open(self._as_peer()) if ISessionFilter.providedBy(avatar) else None
        if self.screen is not None and self.helo:
            self.screen.helo(self.helo)
        log.info(
            "{peer}: authenticated as {user}", peer=self.peer, user=self.authenticated_as,
            **self.events.auth(True),
        )
        return codes.AUTH_OK

    def _not_authenticated(self, failure: Failure, exchange: Any = None) -> Reply:
        if failure.check(UnauthorizedLogin, UnhandledCredentials):
            log.info("{peer}: authentication failed", peer=self.peer, **self.events.auth(False))
            self.errors += 1
            error = failure.value
            if isinstance(exchange, OAuthBearerExchange):
                # RFC 7628 §3.2.2: an error challenge first; the client answers ^A, then 535
                self._sasl = exchange
                challenge = exchange.error_challenge()
                return codes.CHALLENGE.with_text(base64.b64encode(challenge).decode())
            if getattr(error, "tell_user", False):  # e.g. two-factor accounts, throttling
                reply = codes.AUTH_TEMPORARY if getattr(error, "temporary", False) else (
                    codes.AUTH_FAILED
                )
                return reply.with_text(str(error))
            return codes.AUTH_FAILED
        log.failure("authentication error", failure)
        return codes.AUTH_TEMPORARY


Handler = Callable[[ESMTPServer, str], Any]
#: verb -> (handler, states it is allowed in)
VERBS: dict[str, tuple[Handler, frozenset[State]]] = {
    "EHLO": (ESMTPServer.do_EHLO, ANY - {State.CHUNKING}),
    "HELO": (ESMTPServer.do_HELO, ANY - {State.CHUNKING}),
    "MAIL": (ESMTPServer.do_MAIL, frozenset({State.GREETED})),
    "RCPT": (ESMTPServer.do_RCPT, frozenset({State.MAIL, State.RCPT})),
    "DATA": (ESMTPServer.do_DATA, TRANSACTION),
    # BDAT is accepted in every state so that its chunk is always read (never taken for
    # commands), then refused when out of sequence (RFC 3030 §2).
    "BDAT": (ESMTPServer.do_BDAT, ANY),
    "RSET": (ESMTPServer.do_RSET, ANY),
    "NOOP": (ESMTPServer.do_NOOP, ANY),
    "QUIT": (ESMTPServer.do_QUIT, ANY),
    "VRFY": (ESMTPServer.do_VRFY, ANY - {State.CHUNKING}),
    "EXPN": (ESMTPServer.do_EXPN, ANY - {State.CHUNKING}),
    "HELP": (ESMTPServer.do_HELP, ANY),
    "STARTTLS": (ESMTPServer.do_STARTTLS, frozenset({State.GREETED, State.CONNECTED})),
    "AUTH": (ESMTPServer.do_AUTH, frozenset({State.GREETED})),  # RFC 4954 §4: not in a mail
}
