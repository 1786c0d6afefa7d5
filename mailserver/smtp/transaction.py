"""One mail transaction: its state, its spooled message, and the DATA/BDAT handlers.

:class:`MessageContent` is the half of :class:`mailserver.smtp.server.ESMTPServer` that deals
with message content: it starts the spool (with our Received header first), feeds the
DATA/BDAT readers of ``data.py``, and hands the complete message to the avatar's delivery
transaction, whose commit (fsync) comes before the 250 (DESIGN decision 5).
"""

from __future__ import annotations

import enum
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailserver.interfaces import IDelivery
from mailserver.message.received import protocol_name, received_header
from mailserver.randomness import token_hex
from mailserver.smtp import codes
from mailserver.smtp.codes import Reply
from mailserver.smtp.data import BdatState, ChunkReader, DataReader, Outcome
from mailserver.smtp.grammar import MailParams
from mailserver.types import Address

log = Logger(namespace="mailserver.smtp")


#: How much of the message start is scanned for Received fields (loop detection).
HEADER_SCAN = 1 << 18
_RECEIVED = re.compile(rb"^received[ \t]*:", re.IGNORECASE | re.MULTILINE)


def count_received(head: bytes) -> int:
    """Received fields in the header block at the start of ``head`` (RFC 5321 §6.3)."""
    end = head.find(b"\r\n\r\n")
    if end < 0:
        end = head.find(b"\n\n")
    return len(_RECEIVED.findall(head if end < 0 else head[:end]))


#: Spool a message in memory up to this size, then in a temporary file.
SPOOL_IN_MEMORY = 1 << 20


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
    return token_hex(6).upper()



class MessageContent:
    """DATA and BDAT for :class:`~mailserver.smtp.server.ESMTPServer` (a mixin: it uses the
    session's policy, state, buffer, peer and reply machinery)."""

    policy: Any
    state: State
    transaction: Transaction | None
    helo: str
    esmtp: bool
    secure: bool
    peer: str
    transport: Any
    authenticated_as: str | None
    events: Any  # mailserver.observe.events.SessionEvents
    _buffer: bytes
    _reader: DataReader | ChunkReader | None
    _reader_done: Callable[[Any], Reply | Deferred[Reply] | None] | None

    def _reset_timeout(self) -> None:
        raise NotImplementedError

    def _answer(self, result: Reply | Deferred[Reply] | None) -> None:
        raise NotImplementedError

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
                    authenticated=self.authenticated_as is not None,
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
        hops = count_received(sink.read(HEADER_SCAN))
        sink.seek(0)
        if hops > self.policy.max_hops:
            # RFC 5321 §6.3: a message that went through this many relays is looping
            sink.close()
            delivery.abort()
            return succeed(codes.TOO_MANY_HOPS.with_text(f"Too many hops ({hops}): mail loop?"))

        def committed(_: object) -> Reply:
            # the mail log line comes from the 250's message event (mailserver.observe)
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
        self.events.content(transaction.queue_id, transaction.sender, transaction.recipients,
                            reader.size, reader.message_id, self.helo)
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
        self.events.content(transaction.queue_id, transaction.sender, transaction.recipients,
                            reader.size, reader.message_id, self.helo)
        if transaction.failed is not None:
            failed = transaction.failed
            self._abort_transaction()
            return failed
        return self._deliver()


class _Discard:
    """A sink for chunks that are read only to stay in sync."""

    def write(self, data: bytes) -> int:
        return len(data)


def mail_params(params: MailParams) -> dict[str, str]:
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
        return codes.BAD_SEQUENCE.with_text(sequence_hint("BDAT", state))
    return codes.TRANSACTION_FAILED.with_text("No valid recipients")


def sequence_hint(verb: str, state: State) -> str:
    if state is State.CONNECTED:
        return "Send EHLO/HELO first"
    if verb in ("RCPT", "DATA", "BDAT"):
        return "Need MAIL command first"
    if verb == "MAIL":
        return "Nested MAIL command"
    return "Bad sequence of commands"

