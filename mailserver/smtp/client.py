"""The outbound SMTP client protocol (RFC 5321 client side), used by the spool.

:class:`SMTPClient` is a thin, ordered request/reply machine: every command returns a Deferred
of the server's :class:`ServerReply`, replies are matched to commands first-in first-out, so
PIPELINING (RFC 2920) is simply sending several commands before awaiting their replies.
:func:`send_mail` runs one whole transaction on a greeted connection, pipelined when the
server offers it, and reports a reply per recipient.

Rules: every reply line must end in CRLF and be at most ``MAX_REPLY_LINE`` octets, a reply
that cannot be parsed is a protocol error (the connection is dropped, every waiter gets a
failure), the message is dot-stuffed with bare CR/LF normalised (``data.dot_stuff``) so no
smuggling sequence can reach the next hop, and every wait has a timeout (RFC 5321 §4.5.3.2).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from mailserver.smtp.data import dot_stuff
from mailserver.smtp.grammar import xtext_encode

__all__ = ["ProtocolError", "ServerReply", "SMTPClient", "TransactionResult", "send_mail"]

MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 1000
_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -])(.*)")
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")

#: RFC 5321 §4.5.3.2 client timeouts (seconds).
TIMEOUTS = {"greeting": 300.0, "MAIL": 300.0, "RCPT": 300.0, "DATA": 120.0, "end": 600.0}


class ProtocolError(Exception):
    """The server broke the protocol (unparseable or over-long reply) or the connection."""


@dataclass(frozen=True, slots=True)
class ServerReply:
    """A reply as received: code, the enhanced code if the first line has one, text lines."""

    code: int
    lines: tuple[str, ...]

    @property
    def enhanced(self) -> str:
        match = _ENHANCED.match(self.lines[0]) if self.lines else None
        return match.group(0) if match else ""

    @property
    def text(self) -> str:
        """All lines joined, for logs and DSNs."""
        return " / ".join(self.lines)

    @property
    def positive(self) -> bool:
        return self.code < 400

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class SMTPClient(Protocol):
    """One outbound connection. ``greeting`` fires with the 220 (or a failure)."""

    def __init__(self, reactor: Any, timeouts: dict[str, float] | None = None) -> None:
        self.reactor = reactor
        self.timeouts = {**TIMEOUTS, **(timeouts or {})}
        self.greeting: Deferred[ServerReply] = Deferred()
        self.extensions: dict[str, str] = {}
        self.secure = False
        self._waiting: deque[tuple[Deferred[ServerReply], Any]] = deque(
            [(self.greeting, None)]
        )
        self._buffer = b""
        self._lines: list[str] = []
        self._closed: Failure | None = None
        #: Transactions completed on this connection (the courier reuses connections).
        self.uses = 0

    # -- transport events ---------------------------------------------------------------

    def connectionMade(self) -> None:
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass
        self._arm(self.greeting, self.timeouts["greeting"])

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\r\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\r\n", 1)
            if not self._line(line):
                return
        if len(self._buffer) > MAX_REPLY_LINE:
            self._fail(ProtocolError("reply line too long"))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if reason is None or reason.check(ConnectionDone):
            reason = Failure(ProtocolError("connection closed by the server"))
        elif not reason.check(ProtocolError):
            # TLS handshake and verification failures end up here too
            reason = Failure(ProtocolError(f"connection lost: {reason.getErrorMessage()}"))
        self._closed = reason
        self._fail_waiters(reason)

    # -- replies -----------------------------------------------------------------------

    def _line(self, line: bytes) -> bool:
        match = _REPLY_LINE.fullmatch(line) or (
            _REPLY_LINE.fullmatch(line + b" ") if len(line) == 3 else None
        )
        if match is None or len(line) > MAX_REPLY_LINE:
            self._fail(ProtocolError(f"unparseable reply line {line[:80]!r}"))
            return False
        code, more, text = match.groups()
        if self._lines and self._lines[0][:3] != code.decode():
            self._fail(ProtocolError("reply code changed within a multi-line reply"))
            return False
        self._lines.append(code.decode() + text.decode("utf-8", "replace"))
        if more == b"-":
            if len(self._lines) > MAX_REPLY_LINES:
                self._fail(ProtocolError("too many reply lines"))
                return False
            return True
        lines, self._lines = self._lines, []
        reply = ServerReply(int(lines[0][:3]), tuple(text[3:] for text in lines))
        if not self._waiting:
            self._fail(ProtocolError(f"unexpected reply {reply}"))
            return False
        waiter, timer = self._waiting.popleft()
        if timer is not None and timer.active():
            timer.cancel()
        waiter.callback(reply)
        return True

    def _fail(self, error: Exception) -> None:
        self._fail_waiters(Failure(error))
        self.transport.abortConnection()

    def _fail_waiters(self, failure: Failure) -> None:
        while self._waiting:
            waiter, timer = self._waiting.popleft()
            if timer is not None and timer.active():
                timer.cancel()
            if not waiter.called:
                waiter.errback(failure)

    def _arm(self, waiter: Deferred[ServerReply], seconds: float) -> Any:
        def expired() -> None:
            self._fail(ProtocolError(f"timeout after {seconds:g}s waiting for a reply"))

        timer = self.reactor.callLater(seconds, expired)
        for index, (d, _old) in enumerate(self._waiting):
            if d is waiter:
                self._waiting[index] = (d, timer)
        return timer

    # -- commands ----------------------------------------------------------------------

    def command(self, line: str, timeout: str = "MAIL") -> Deferred[ServerReply]:
        """Send one command line; Deferred of its reply (in order with earlier commands)."""
        return self._send(line.encode("utf-8") + b"\r\n", timeout)

    def _send(self, data: bytes, timeout: str) -> Deferred[ServerReply]:
        waiter: Deferred[ServerReply] = Deferred()
        if self._closed is not None:
            waiter.errback(self._closed)
            return waiter
        self._waiting.append((waiter, None))
        self._arm(waiter, self.timeouts[timeout])
        self.transport.write(data)
        return waiter

    @inlineCallbacks
    def ehlo(self, name: str) -> Any:
        """EHLO, falling back to HELO on a 5xx (RFC 5321 §3.2); records the extensions."""
        reply = yield self.command(f"EHLO {name}")
        if reply.code >= 500:
            reply = yield self.command(f"HELO {name}")
            self.extensions = {}
            return reply
        if reply.positive:
            self.extensions = {}
            for line in reply.lines[1:]:
                keyword, _, value = line.partition(" ")
                self.extensions[keyword.upper()] = value
        return reply

    @property
    def usable(self) -> bool:
        """Connected, nothing outstanding: another transaction may start."""
        return self._closed is None and not self._waiting and self.transport is not None

    def supports(self, keyword: str) -> bool:
        return keyword.upper() in self.extensions

    @inlineCallbacks
    def starttls(self, context: Any) -> Any:
        """STARTTLS (RFC 3207): on 220 start TLS; the caller must EHLO again."""
        reply = yield self.command("STARTTLS")
        if reply.code == 220:
            self.transport.startTLS(context)
            self.secure = True
            self.extensions = {}
        return reply

    def data_payload(self, message: bytes) -> Deferred[ServerReply]:
        """Send the message after a 354: dot-stuffed, final ``.`` line included."""
        return self._send(dot_stuff(message), "end")

    def quit(self) -> Deferred[Any]:
        """QUIT and close; never fails."""
        if self._closed is not None:
            d: Deferred[Any] = Deferred()
            d.callback(None)
            return d
        d = self.command("QUIT", "MAIL")
        d.addBoth(lambda _: self.transport.loseConnection())
        return d


@dataclass
class TransactionResult:
    """What happened to one message on one connection."""

    mail: ServerReply | None = None
    recipients: dict[str, ServerReply] = field(default_factory=dict)
    data: ServerReply | None = None

    def reply_for(self, recipient: str) -> ServerReply | None:
        """The reply that decides ``recipient``: its RCPT refusal, else the final reply,
        else the MAIL refusal."""
        rcpt = self.recipients.get(recipient)
        if rcpt is not None and not rcpt.positive:
            return rcpt
        if self.mail is not None and not self.mail.positive:
            return self.mail
        return self.data


def _mail_line(client: SMTPClient, sender: str, size: int, params: dict[str, str]) -> str:
    parts = [f"MAIL FROM:<{sender}>"]
    if client.supports("SIZE"):
        parts.append(f"SIZE={size}")
    body = params.get("BODY")
    if body and client.supports("8BITMIME"):
        parts.append(f"BODY={body}")
    if "SMTPUTF8" in params and client.supports("SMTPUTF8"):
        parts.append("SMTPUTF8")
    if client.supports("DSN"):
        if "RET" in params:
            parts.append(f"RET={params['RET']}")
        if "ENVID" in params:
            parts.append(f"ENVID={xtext_encode(params['ENVID'])}")
    return " ".join(parts)


def _rcpt_line(client: SMTPClient, recipient: str, params: dict[str, str]) -> str:
    parts = [f"RCPT TO:<{recipient}>"]
    if client.supports("DSN"):
        if "NOTIFY" in params:
            parts.append(f"NOTIFY={params['NOTIFY']}")
        if "ORCPT" in params:
            kind, _, address = params["ORCPT"].partition(";")
            parts.append(f"ORCPT={kind};{xtext_encode(address)}")
    return " ".join(parts)


@inlineCallbacks
def send_mail(
    client: SMTPClient,
    sender: str,
    recipients: Sequence[tuple[str, dict[str, str]]],
    message: bytes,
    mail_params: dict[str, str] | None = None,
) -> Any:
    """One transaction on a greeted (EHLO'd) connection -> Deferred[TransactionResult].

    With PIPELINING, MAIL, every RCPT and DATA go in one write (RFC 2920 §3.1); DATA's reply
    decides whether the content is sent. A message is sent only when at least one recipient
    was accepted; otherwise the transaction is reset.
    """
    params = mail_params or {}
    result = TransactionResult()
    mail_line = _mail_line(client, sender, len(message), params)
    rcpt_lines = [(address, _rcpt_line(client, address, p)) for address, p in recipients]
    if client.supports("PIPELINING"):
        mail_d = client.command(mail_line, "MAIL")
        rcpt_ds = [client.command(line, "RCPT") for _address, line in rcpt_lines]
        data_d = client.command("DATA", "DATA")
        replies = yield DeferredList([mail_d, *rcpt_ds, data_d], fireOnOneErrback=True,
                                     consumeErrors=True)
        values = [value for _ok, value in replies]
        result.mail, data_reply = values[0], values[-1]
        for (address, _line), reply in zip(rcpt_lines, values[1:-1]):
            result.recipients[address] = reply
    else:
        result.mail = yield client.command(mail_line, "MAIL")
        if not result.mail.positive:
            yield client.command("RSET")
            return result
        for address, line in rcpt_lines:
            result.recipients[address] = yield client.command(line, "RCPT")
        data_reply = None
        if any(r.positive for r in result.recipients.values()):
            data_reply = yield client.command("DATA", "DATA")
    accepted = result.mail.positive and any(r.positive for r in result.recipients.values())
    if data_reply is not None and data_reply.code == 354:
        if accepted:
            result.data = yield client.data_payload(message)
        else:
            # RFC 2920 §3.1: a 354 with no valid recipient: send an empty message's end and
            # discard whatever reply it gets.
            yield client.data_payload(b"")
            yield client.command("RSET")
    elif data_reply is not None:
        result.data = data_reply if accepted else None
        yield client.command("RSET")
    else:
        yield client.command("RSET")
    return result
