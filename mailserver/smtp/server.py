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
"""

from __future__ import annotations

import enum
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.cred.credentials import Anonymous
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailserver.errors import MailError
from mailserver.interfaces import IDelivery, IDeliveryTarget
from mailserver.message.received import protocol_name, received_header
from mailserver.smtp import codes
from mailserver.smtp.codes import Reply
from mailserver.smtp.data import BdatState, ChunkReader, DataReader, Outcome
from mailserver.smtp.grammar import (
    GrammarError,
    MailParams,
    parse_command,
    parse_helo,
    parse_mail,
    parse_rcpt,
)
from mailserver.types import Address, Envelope

if TYPE_CHECKING:
    from mailserver.smtp.factory import SMTPFactory

log = Logger(namespace="mailserver.smtp")

#: Spool a message in memory up to this size, then in a temporary file.
SPOOL_IN_MEMORY = 1 << 20
#: Pause reading from the socket when this much input waits behind a pending reply.
PAUSE_AT = 1 << 18


class State(enum.Enum):
    CONNECTED = "connected"  # before EHLO/HELO
    GREETED = "greeted"  # no transaction
    MAIL = "mail"  # MAIL accepted, no recipient yet
    RCPT = "rcpt"  # at least one recipient accepted
    CHUNKING = "chunking"  # BDAT chunks arriving (RFC 3030)


ANY = frozenset(State)
TRANSACTION = frozenset({State.MAIL, State.RCPT, State.CHUNKING})


@dataclass
class Transaction:
    """One mail transaction: from MAIL to the end of the message (or RSET)."""

    delivery: IDelivery
    sender: Address | None
    params: MailParams
    queue_id: str
    recipients: list[Address] = field(default_factory=list)
    bdat: BdatState = field(default_factory=BdatState)
    sink: Any = None
    size: int = 0
    failed: Reply | None = None  # a BDAT chunk failed: the rest is read and refused


def new_queue_id() -> str:
    """A short, unique, unguessable id shown in the 250 reply and the Received header."""
    return secrets.token_hex(6).upper()


class ESMTPServer(Protocol):
    """One SMTP session. Created by :class:`mailserver.smtp.factory.SMTPFactory`."""

    def __init__(self, factory: SMTPFactory) -> None:
        self.factory = factory
        self.policy = factory.policy
        self.state = State.CONNECTED
        self.avatar: IDeliveryTarget | None = None
        self.helo = ""
        self.esmtp = False
        self.secure = False
        self.errors = 0
        self.peer = ""
        self.transaction: Transaction | None = None
        self._buffer = b""
        self._busy = True  # until the greeting is sent
        self._paused = False
        self._discarding = False
        self._closing = False
        self._reader: DataReader | ChunkReader | None = None
        self._reader_done: Callable[[Any], Reply | Deferred[Reply]] | None = None
        self._timeout: Any = None
        self._counted = False

    # -- connection life cycle ---------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.peer = getattr(peer, "host", str(peer))
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass
        factory = self.factory
        if (
            factory.connections >= self.policy.max_connections
            or factory.per_ip[self.peer] >= self.policy.max_connections_per_ip
        ):
            self.send(
                codes.TOO_MANY_CONNECTIONS.with_text(f"{self.policy.hostname} Too many connections")
            )
            return
        factory.connections += 1
        factory.per_ip[self.peer] += 1
        self._counted = True
        self._reset_timeout()
        d = factory.portal.login(Anonymous(), None, IDeliveryTarget)
        d.addCallbacks(self._logged_in, self._login_failed)

    def _logged_in(self, result: tuple[Any, Any, Any]) -> None:
        _interface, self.avatar, _logout = result
        if self._closing:
            return
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
            self.factory.connections -= 1
            self.factory.per_ip[self.peer] -= 1
            if self.factory.per_ip[self.peer] <= 0:
                del self.factory.per_ip[self.peer]
            self._counted = False
        self._abort_transaction()

    # -- timeouts (RFC 5321 §4.5.3.2) ---------------------------------------------------

    def _reset_timeout(self) -> None:
        self._cancel_timeout()
        seconds = self.policy.data_timeout if self._reader else self.policy.command_timeout
        self._timeout = self.factory.reactor.callLater(seconds, self._timed_out)

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
            self._error(codes.BAD_SEQUENCE.with_text(_sequence_hint(command.verb, self.state)))
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
            return  # the reply comes when the BDAT chunk has been read
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
        self.transport.write(reply.encode())
        if reply.close:
            self._closing = True
            self._abort_transaction()
            self.transport.loseConnection()

    # -- message content ----------------------------------------------------------------

    def _feed_reader(self) -> None:
        assert self._reader is not None and self._reader_done is not None
        leftover = self._reader.feed(self._buffer)
        if leftover is None:
            self._buffer = b""
            return
        self._buffer = leftover
        reader, done = self._reader, self._reader_done
        self._reader, self._reader_done = None, None
        self._reset_timeout()
        self._answer(done(reader))

    def _start_message(self, transaction: Transaction) -> None:
        """Open the spool for the message and write our Received header first."""
        transaction.sink = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
        one = transaction.recipients[0] if len(transaction.recipients) == 1 else None
        transaction.sink.write(
            received_header(
                helo=self.helo,
                client_address=self.peer,
                client_name=None,
                hostname=self.policy.hostname,
                protocol=protocol_name(
                    esmtp=self.esmtp,
                    tls=self.secure,
                    authenticated=False,
                    utf8=transaction.params.smtputf8,
                ),
                queue_id=transaction.queue_id,
                recipient=str(one) if one else None,
                timestamp=time.time(),
                tls=self._tls_description(),
            )
        )

    def _tls_description(self) -> str | None:
        if not self.secure:
            return None
        try:
            connection = self.transport.getHandle()
            version = connection.get_protocol_version_name()
            return f"{version} with cipher {connection.get_cipher_name()}"
        except Exception:  # not a pyOpenSSL transport (tests with iosim)
            return "TLS"

    def _deliver(self) -> Deferred[Reply]:
        """Hand the complete message to the avatar's transaction and commit it."""
        transaction = self.transaction
        assert transaction is not None
        self.transaction = None
        self.state = State.GREETED
        sink = transaction.sink
        sink.seek(0)
        delivery = transaction.delivery

        def committed(_: object) -> Reply:
            log.info(
                "{queue_id}: from=<{sender}> to={count} size={size} accepted",
                queue_id=transaction.queue_id,
                sender=transaction.sender or "",
                count=len(transaction.recipients),
                size=transaction.size,
            )
            return codes.QUEUED.with_text(f"OK: queued as {transaction.queue_id}")

        def failed(failure: Failure) -> Failure:
            delivery.abort()
            return failure

        d = maybeDeferred(delivery.body, sink)
        d.addCallback(lambda _: delivery.commit())
        d.addCallbacks(committed, failed)
        d.addBoth(lambda result: (sink.close(), result)[1])
        return d

    def _abort_transaction(self) -> None:
        transaction, self.transaction = self.transaction, None
        self._reader = None
        self._reader_done = None
        if transaction is not None:
            if transaction.sink is not None:
                transaction.sink.close()
            transaction.delivery.abort()
        if self.state in TRANSACTION:
            self.state = State.GREETED

    # -- command handlers ---------------------------------------------------------------

    def extensions(self) -> list[str]:
        """The EHLO keywords offered in the current state."""
        offered = ["PIPELINING"]
        size = self.policy.max_message_size
        offered.append(f"SIZE {size}" if size else "SIZE")
        offered += ["8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING", "BINARYMIME"]
        offered.append("DSN")
        if self.factory.tls is not None and self.policy.offer_starttls and not self.secure:
            offered.append("STARTTLS")
        return offered

    def _param_extensions(self) -> frozenset[str]:
        if not self.esmtp:
            return frozenset()  # RFC 5321 §4.1.1.1: parameters need EHLO
        return frozenset({"SIZE", "8BITMIME", "SMTPUTF8", "DSN", "BINARYMIME"})

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
        sender, params = parse_mail(
            argument,
            extensions=self._param_extensions(),
            max_size=self.policy.max_message_size,
        )
        assert self.avatar is not None
        envelope = Envelope(
            sender=sender,
            helo=self.helo,
            client_address=self.peer,
            params=_mail_params(params),
            received_at=time.time(),
        )
        delivery = self.avatar.start(envelope)
        self.transaction = Transaction(delivery, sender, params, new_queue_id())
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

    def do_DATA(self, argument: str) -> Reply:
        if argument:
            return codes.BAD_ARGUMENTS.with_text("DATA takes no arguments")
        transaction = self.transaction
        if transaction is None or self.state is State.MAIL:
            return codes.TRANSACTION_FAILED.with_text("No valid recipients")
        if self.state is State.CHUNKING:
            return codes.BAD_SEQUENCE.with_text("DATA not allowed after BDAT")
        if transaction.params.body == "BINARYMIME":
            return codes.NEED_BINARY  # RFC 3030 §3: BINARYMIME needs BDAT
        self._start_message(transaction)
        self._reader = DataReader(
            transaction.sink,
            max_size=self.policy.max_message_size,
            max_line=self.policy.max_text_line,
            bare_newline=self.policy.bare_newline,
        )
        self._reader_done = self._data_done
        return codes.START_DATA

    def _data_done(self, reader: DataReader) -> Reply | Deferred[Reply]:
        transaction = self.transaction
        assert transaction is not None
        transaction.size = reader.size
        return self._finish(transaction, reader.outcome)

    def _finish(self, transaction: Transaction, outcome: Outcome) -> Reply | Deferred[Reply]:
        if outcome is Outcome.BARE_NEWLINE:
            return codes.BARE_NEWLINE.with_text(
                f"{self.policy.hostname} Error: bare <LF> or <CR> received"
            )
        refused = {
            Outcome.TOO_BIG: codes.MESSAGE_TOO_BIG,
            Outcome.LINE_TOO_LONG: codes.LINE_TOO_LONG,
        }.get(outcome)
        if refused is not None:
            self._abort_transaction()
            return refused
        return self._deliver()

    def do_BDAT(self, argument: str) -> Reply | None:
        parts = argument.split()
        if (
            not 1 <= len(parts) <= 2
            or not parts[0].isdigit()
            or (len(parts) == 2 and parts[1].upper() != "LAST")
        ):
            return codes.BAD_ARGUMENTS.with_text("Syntax: BDAT <size> [LAST]")
        size, last = int(parts[0]), len(parts) == 2
        transaction = self.transaction
        if transaction is None or self.state is State.MAIL:
            # RFC 3030 §2: the chunk must still be read; it is then refused.
            self._reader = ChunkReader(_Discard(), size)
            self._reader_done = lambda _reader: _refuse_chunk(self.state)
            return None
        if self.state is State.RCPT:
            self._start_message(transaction)
            self.state = State.CHUNKING
        self._reader = ChunkReader(
            transaction.sink,
            size,
            already=transaction.size,
            max_size=self.policy.max_message_size,
            binary=transaction.params.body == "BINARYMIME",
            bare_newline=self.policy.bare_newline,
            state=transaction.bdat,
            last=last,
        )
        self._reader_done = lambda reader: self._chunk_done(reader, transaction, size, last)
        return None

    def _chunk_done(
        self, reader: ChunkReader, transaction: Transaction, size: int, last: bool
    ) -> Reply | Deferred[Reply]:
        transaction.size = reader.size
        if reader.outcome is not Outcome.OK and transaction.failed is None:
            transaction.failed = {
                Outcome.TOO_BIG: codes.MESSAGE_TOO_BIG,
                Outcome.BARE_NEWLINE: codes.BARE_NEWLINE.with_text(
                    f"{self.policy.hostname} Error: bare <LF> or <CR> received"
                ),
            }.get(reader.outcome, codes.TRANSACTION_FAILED)
        if reader.outcome is Outcome.BARE_NEWLINE:
            return transaction.failed  # type: ignore[return-value]
        if not last:
            if transaction.failed is not None:
                return transaction.failed
            return codes.OK.with_text(f"{size} octets received")
        if transaction.failed is not None:
            failed = transaction.failed
            self._abort_transaction()
            return failed
        return self._deliver()

    def do_RSET(self, argument: str) -> Reply:
        self._abort_transaction()
        if self.state is not State.CONNECTED:
            self.state = State.GREETED
        return codes.OK

    def do_NOOP(self, argument: str) -> Reply:
        return codes.OK

    def do_QUIT(self, argument: str) -> Reply:
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
        return None


class _Discard:
    """A sink for chunks that are read only to stay in sync."""

    def write(self, data: bytes) -> int:
        return len(data)


def _mail_params(params: MailParams) -> dict[str, str]:
    """The MAIL parameters as kept in the Envelope (for DSNs and the trace)."""
    kept: dict[str, str] = {}
    if params.size is not None:
        kept["SIZE"] = str(params.size)
    if params.body is not None:
        kept["BODY"] = params.body
    if params.smtputf8:
        kept["SMTPUTF8"] = ""
    if params.ret is not None:
        kept["RET"] = params.ret
    if params.envid is not None:
        kept["ENVID"] = params.envid
    return kept


def _refuse_chunk(state: State) -> Reply:
    if state in (State.CONNECTED, State.GREETED):
        return codes.BAD_SEQUENCE.with_text(_sequence_hint("BDAT", state))
    return codes.TRANSACTION_FAILED.with_text("No valid recipients")


def _sequence_hint(verb: str, state: State) -> str:
    if state is State.CONNECTED:
        return "Send EHLO/HELO first"
    if verb in ("RCPT", "DATA", "BDAT"):
        return "Need MAIL command first"
    if verb == "MAIL":
        return "Nested MAIL command"
    return "Bad sequence of commands"


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
}
