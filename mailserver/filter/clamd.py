"""Virus scanning through ClamAV's ``clamd``: an asynchronous INSTREAM client and the
``virus`` check.

The client (:class:`ClamdClient`) speaks clamd's socket protocol (``man clamd``) with the
``z`` prefix: each command is ``z<COMMAND>\\0`` and each reply ends with a NUL. ``INSTREAM``
sends the message as chunks, each a 4-byte big-endian length and that many bytes, then a
zero length; clamd answers ``stream: OK``, ``stream: <name> FOUND`` or ``<message> ERROR``
(for instance ``INSTREAM size limit exceeded. ERROR`` past its ``StreamMaxLength``, after
which it closes the connection). ``PING`` (``PONG``) and ``VERSION`` serve health checks.

Design rules:

- **Where clamd is** is one string (:func:`parse_address`): ``unix:/run/clamav/clamd.ctl``
  (an absolute path, or a bare ``/path``) or ``tcp:127.0.0.1:3310`` (``tcp:[::1]:3310``
  for IPv6; a host name is resolved by Twisted, off the reactor thread).
- **Every exchange has one deadline**, covering connect, upload and reply: when it passes,
  the Deferred is cancelled and the connection aborted. Each exchange opens its own
  connection (clamd's ``IDSESSION`` is not used), so one stuck scan never blocks another.
- **The upload is a pull producer** of 64 KiB frames: a chunk is written only when the
  previous one left the socket buffer, so a 25 MB message never doubles in memory, and a
  reply that comes early (clamd's size limit) stops the upload at once.
- **Every failure is a** :class:`ScanError` with a human reason (refused, timed out, size
  limit, malformed reply); nothing else escapes the client. :class:`ScanTooLarge` (a
  subclass) is clamd's size limit. Reply parsing is a pure function (:func:`parse_reply`)
  and so is framing (:func:`frame_chunks`), both property-tested.

:class:`VirusCheck` provides :class:`~mailserver.interfaces.ICheck` (``"virus"``; allow
lists never skip it). Only ``body`` does work: the whole message as received goes to clamd,
which decodes MIME, base64 and archives itself (``ScanMail yes``, the default). Verdicts:

- infected: REJECT ``554 5.7.1 Message rejected: virus found (<name>)``;
- clean: ACCEPT with ``X-Virus-Scanned: clamav``;
- clamd unreachable, timed out or answering nonsense: the ``fail`` policy. ``"open"``
  (default) delivers with ``X-Virus-Scanned: no; clamav unavailable`` and logs a warning;
  ``"closed"`` answers ``451 4.7.1 virus scanner unavailable, try again later`` so the
  sender retries (mail is delayed, never lost);
- larger than ``max_size`` (or refused by clamd's own ``StreamMaxLength``): not scanned,
  delivered with ``X-Virus-Scanned: no; message too large to scan``, whatever the policy.
  A size is permanent, so a 451 would only make the sender retry until it bounces; set
  ``max_size`` (and clamd's ``StreamMaxLength``) at least as large as the SMTP server's
  maximum message size and this never happens.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from twisted.internet import error as net_error
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
    connectProtocol,
)
from twisted.internet.interfaces import IPullProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailserver.filter.session import Abstaining
from mailserver.interfaces import ICheck
from mailserver.types import Action, Envelope, Peer, Verdict

__all__ = [
    "CHUNK_SIZE",
    "ClamdAddress",
    "ClamdClient",
    "FailPolicy",
    "MAX_REPLY",
    "ScanError",
    "ScanResult",
    "ScanTooLarge",
    "VirusCheck",
    "frame_chunks",
    "parse_address",
    "parse_reply",
]

log = Logger(namespace="mailserver.filter.clamd")

#: Bytes per INSTREAM chunk (clamd reads any size up to its StreamMaxLength).
CHUNK_SIZE = 64 * 1024
#: Longest reply accepted (a real one is a virus name and a few words).
MAX_REPLY = 4096
#: Longest virus name repeated in an SMTP reply line (the rest is in the log).
MAX_NAME_IN_REPLY = 200
_END = b"\0\0\0\0"

HEADER = "X-Virus-Scanned"
SCANNED = "clamav"
NOT_SCANNED_UNAVAILABLE = "no; clamav unavailable"
NOT_SCANNED_TOO_LARGE = "no; message too large to scan"


class ScanError(Exception):
    """A scan (or PING/VERSION) that gave no answer; ``reason`` says why, for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ScanTooLarge(ScanError):
    """clamd refused the stream as longer than its ``StreamMaxLength``."""


@dataclass(frozen=True, slots=True)
class ScanResult:
    """clamd's answer: ``infected`` with the signature ``name``, or clean (``name`` None)."""

    infected: bool
    name: str | None = None


# --- addresses ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClamdAddress:
    """Where clamd listens: ``kind`` ``"unix"`` (``path``) or ``"tcp"`` (``host``, ``port``)."""

    kind: str
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"


def parse_address(text: str) -> ClamdAddress:
    """``unix:/abs/path``, ``/abs/path`` or ``tcp:HOST:PORT`` (``tcp:[v6]:PORT``) as a
    :class:`ClamdAddress`; ValueError naming the accepted forms otherwise."""
    forms = "expected unix:/path/to/clamd.sock or tcp:127.0.0.1:3310"
    if text.startswith("/"):
        text = "unix:" + text
    kind, _, rest = text.partition(":")
    if kind == "unix":
        if not rest.startswith("/") or "\0" in rest:
            raise ValueError(f"clamd address {text!r}: the socket path must be absolute; {forms}")
        return ClamdAddress("unix", path=rest)
    if kind == "tcp":
        if rest.startswith("["):
            host, bracket, port_text = rest[1:].partition("]")
            if not bracket or not port_text.startswith(":"):
                raise ValueError(f"clamd address {text!r}: unclosed [IPv6]; {forms}")
            port_text = port_text[1:]
        else:
            host, _, port_text = rest.rpartition(":")
        if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"clamd address {text!r}: needs a host and a port 1-65535; {forms}")
        return ClamdAddress("tcp", host=host, port=int(port_text))
    raise ValueError(f"clamd address {text!r}: {forms}")


# --- the wire format --------------------------------------------------------------------------


def frame_chunks(data: bytes, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The INSTREAM body for ``data``: frames of a 4-byte big-endian length and at most
    ``chunk_size`` bytes, then the zero-length end frame. Empty data is just the end frame."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    view = memoryview(data)
    for start in range(0, len(view), chunk_size):
        chunk = view[start : start + chunk_size]
        yield struct.pack(">I", len(chunk)) + chunk.tobytes()
    yield _END


def parse_reply(raw: bytes) -> ScanResult:
    """One INSTREAM reply (with or without its NUL terminator) as a :class:`ScanResult`.

    ``stream: OK`` is clean; ``stream: <name> FOUND`` infected. Anything ending in
    ``ERROR`` raises :class:`ScanError` with clamd's message (:class:`ScanTooLarge` for the
    size limit), and so does every other reply: this never raises anything else."""
    text = _reply_text(raw)
    if text.endswith("ERROR"):
        message = text[: -len("ERROR")].rstrip(" .") or "unspecified error"
        if "size limit exceeded" in message:
            raise ScanTooLarge(f"clamd refused the message: {message} (StreamMaxLength)")
        raise ScanError(f"clamd error: {message}")
    prefix, colon, verdict = text.partition(": ")
    if colon and prefix == "stream":
        if verdict == "OK":
            return ScanResult(False)
        if verdict.endswith(" FOUND"):
            name = verdict[: -len(" FOUND")].strip()
            if name:
                return ScanResult(True, name)
    raise ScanError(f"malformed clamd reply: {_shown(text)}")


def _reply_text(raw: bytes) -> str:
    """The reply as text: at most one trailing NUL (or newline) removed; ScanError when it is
    empty, too long, not ASCII or holds control characters."""
    if len(raw) > MAX_REPLY:
        raise ScanError(f"malformed clamd reply: longer than {MAX_REPLY} bytes")
    body = raw[:-1] if raw[-1:] in (b"\0", b"\n") else raw
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise ScanError(f"malformed clamd reply: not ASCII: {_shown(body)}") from None
    if not text.strip():
        raise ScanError("malformed clamd reply: empty")
    if not text.isprintable():
        raise ScanError(f"malformed clamd reply: control characters: {_shown(text)}")
    return text.strip()


def _shown(value: str | bytes) -> str:
    """A bounded, repr-escaped excerpt for error messages and logs."""
    shown = repr(value[:120])
    return shown + ("..." if len(value) > 120 else "")


# --- the connection ---------------------------------------------------------------------------


@implementer(IPullProducer)
class _ClamdProtocol(Protocol):
    """One command (and, for INSTREAM, its frames) on one connection; ``reply`` fires with
    the reply's bytes up to the NUL, or fails with ScanError."""

    def __init__(self, command: bytes, frames: Iterator[bytes] | None) -> None:
        self.command = command
        self.frames = frames
        self.buffer = b""
        self.producing = False
        self.reply: Deferred[bytes] = Deferred(self._cancel)

    def connectionMade(self) -> None:
        self.transport.write(b"z" + self.command + b"\0")
        if self.frames is not None:
            self.producing = True
            self.transport.registerProducer(self, False)

    # IPullProducer: the transport asks for the next frame when its buffer is empty.
    def resumeProducing(self) -> None:
        if not self.producing or self.frames is None:
            return
        frame = next(self.frames, None)
        if frame is None:
            self._stop_upload()
        else:
            self.transport.write(frame)

    def stopProducing(self) -> None:
        self.producing = False

    def _stop_upload(self) -> None:
        if self.producing:
            self.producing = False
            self.transport.unregisterProducer()

    def dataReceived(self, data: bytes) -> None:
        if self.reply.called:
            return
        self.buffer += data
        end = self.buffer.find(b"\0")
        if end >= 0:
            self._finish(self.buffer[:end])
        elif len(self.buffer) > MAX_REPLY:
            self._fail(ScanError(f"malformed clamd reply: no NUL in {MAX_REPLY} bytes"))

    def connectionLost(self, reason: Failure = net_error.ConnectionDone) -> None:  # type: ignore[assignment]
        self.producing = False
        if self.reply.called:
            return
        if self.buffer:
            self.reply.errback(
                ScanError(f"clamd closed the connection mid-reply: {_shown(self.buffer)}")
            )
        else:
            why = reason.getErrorMessage() if isinstance(reason, Failure) else str(reason)
            self.reply.errback(ScanError(f"clamd closed the connection without a reply ({why})"))

    def _finish(self, reply: bytes) -> None:
        early = self.producing  # clamd answered mid-upload (its size limit): drop the rest
        self._stop_upload()
        if early:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()
        self.reply.callback(reply)

    def _fail(self, error: ScanError) -> None:
        self._stop_upload()
        self.transport.abortConnection()
        self.reply.errback(error)

    def _cancel(self, reply: Deferred[bytes]) -> None:
        self.producing = False
        if self.transport is not None:
            self.transport.abortConnection()


class ClamdClient:
    """Talks to one clamd. ``address`` is a :func:`parse_address` string (or a parsed
    :class:`ClamdAddress`); ``timeout`` (seconds) bounds each whole exchange, connect
    included. Every method returns a Deferred that fails only with :class:`ScanError`."""

    def __init__(
        self,
        reactor: Any,
        address: str | ClamdAddress,
        *,
        timeout: float = 20.0,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        if timeout <= 0:
            raise ValueError("clamd timeout must be positive")
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.reactor = reactor
        self.address = address if isinstance(address, ClamdAddress) else parse_address(address)
        self.timeout = timeout
        self.chunk_size = chunk_size

    def scan(self, data: bytes) -> Deferred[ScanResult]:
        """INSTREAM ``data``: a :class:`ScanResult` (infected or clean)."""
        frames = frame_chunks(data, self.chunk_size)
        return self._exchange(b"INSTREAM", frames).addCallback(parse_reply)

    def ping(self) -> Deferred[None]:
        """``PING``: fires with None when clamd answers ``PONG``."""

        def pong(reply: bytes) -> None:
            if _reply_text(reply) != "PONG":
                raise ScanError(f"unexpected answer to PING: {_shown(reply)}")

        return self._exchange(b"PING").addCallback(pong)

    def version(self) -> Deferred[str]:
        """``VERSION``: clamd's version line (``ClamAV 1.4.6[/<db version>/<db date>]``)."""

        def checked(reply: bytes) -> str:
            text = _reply_text(reply)
            if not text.startswith("ClamAV "):
                raise ScanError(f"unexpected answer to VERSION: {_shown(text)}")
            return text

        return self._exchange(b"VERSION").addCallback(checked)

    # --- one exchange -------------------------------------------------------------------------

    def _endpoint(self) -> Any:
        address, timeout = self.address, self.timeout
        if address.kind == "unix":
            return UNIXClientEndpoint(self.reactor, address.path, timeout=timeout)
        try:
            literal = ipaddress.ip_address(address.host)
        except ValueError:  # a name: resolved (off the reactor thread) on each connect
            return HostnameEndpoint(self.reactor, address.host.encode(), address.port, timeout)
        kind = TCP4ClientEndpoint if literal.version == 4 else TCP6ClientEndpoint
        return kind(self.reactor, address.host, address.port, timeout=timeout)

    def _exchange(self, command: bytes, frames: Iterator[bytes] | None = None) -> Deferred[bytes]:
        """Connect, send, read one reply; all within :attr:`timeout`; errors as ScanError."""

        async def run() -> bytes:
            protocol = _ClamdProtocol(command, frames)
            await connectProtocol(self._endpoint(), protocol)
            return await protocol.reply

        def timed_out(result: object, timeout: float) -> Failure:
            return Failure(ScanError(f"no answer from clamd at {where} within {timeout:g}s"))

        where = str(self.address)
        exchange = Deferred.fromCoroutine(run())
        exchange.addTimeout(self.timeout, self.reactor, onTimeoutCancel=timed_out)
        return exchange.addErrback(self._explain, command)

    def _explain(self, failure: Failure, command: bytes) -> Failure:
        where = str(self.address)
        error = failure.value
        if isinstance(error, ScanError):
            return failure
        if isinstance(error, net_error.TimeoutError):
            reason = f"no answer from clamd at {where} within {self.timeout:g}s"
        elif isinstance(error, CancelledError | net_error.ConnectingCancelledError):
            reason = f"{command.decode()} to clamd at {where} cancelled"
        elif isinstance(error, net_error.ConnectError | OSError):
            reason = f"cannot connect to clamd at {where}: {_connect_reason(error)}"
        else:
            reason = f"{command.decode()} to clamd at {where} failed: {error!r}"
        return Failure(ScanError(reason))


def _connect_reason(error: BaseException) -> str:
    if isinstance(error, net_error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, net_error.ConnectError) and error.osError is not None:
        return str(error.osError)
    if isinstance(error, net_error.ConnectError) and error.args:
        return str(error.args[0]) if len(error.args) == 1 else " ".join(map(str, error.args))
    return str(error) or type(error).__name__


# --- the check --------------------------------------------------------------------------------


class FailPolicy(enum.Enum):
    """What a message gets when clamd cannot scan it."""

    OPEN = "open"  # deliver, unscanned (marked in a header, logged)
    CLOSED = "closed"  # 451 4.7.1: the sender retries later


@implementer(ICheck)
class VirusCheck:
    """The ``virus`` check (see the module docstring). ``address``/``timeout`` are the
    :class:`ClamdClient`'s; ``fail`` is ``"open"`` or ``"closed"``; ``max_size`` (bytes, 0 =
    no limit) is the largest message sent to clamd."""

    name = "virus"
    honours_allow_list = False

    def __init__(
        self,
        reactor: Any,
        address: str | ClamdAddress,
        *,
        timeout: float = 20.0,
        fail: str | FailPolicy = "open",
        max_size: int = 25 * 1024 * 1024,
    ) -> None:
        try:
            self.fail = FailPolicy(fail)
        except ValueError:
            raise ValueError(f"virus fail policy {fail!r}: expected 'open' or 'closed'") from None
        if max_size < 0:
            raise ValueError("virus max_size must be 0 (no limit) or positive")
        self.client = ClamdClient(reactor, address, timeout=timeout)
        self.max_size = max_size

    def session(self, peer: Peer) -> VirusSession:
        return VirusSession(self, peer)

    # --- verdicts -----------------------------------------------------------------------------

    def scan(self, message: bytes, peer: Peer | None = None) -> Deferred[Verdict]:
        """The verdict for one whole message (what a session's ``body`` returns)."""
        client = peer.address if peer is not None else "-"
        if self.max_size and len(message) > self.max_size:
            log.info(
                "virus scan skipped for a message from {client}: {size} bytes > {limit}",
                client=client,
                size=len(message),
                limit=self.max_size,
            )
            return succeed(self._unscanned_too_large(len(message)))
        scanning = self.client.scan(message)
        scanning.addCallbacks(
            self._judged, self._failed, callbackArgs=(client,), errbackArgs=(client, len(message))
        )
        return scanning

    def _judged(self, result: ScanResult, client: str) -> Verdict:
        if not result.infected:
            return Verdict(check=self.name, headers=((HEADER, SCANNED),))
        name = result.name or "unknown"
        log.info("virus {name} found in a message from {client}", name=name, client=client)
        return Verdict(
            action=Action.REJECT,
            check=self.name,
            rule="VIRUS",
            reason=f"clamd found {name}",
            code=554,
            enhanced="5.7.1",
            text=f"Message rejected: virus found ({name[:MAX_NAME_IN_REPLY]})",
        )

    def _failed(self, failure: Failure, client: str, size: int) -> Verdict:
        error = failure.value
        if not isinstance(error, ScanError):  # the client promises ScanError; stay safe
            error = ScanError(f"unexpected scanner failure: {error!r}")
        if isinstance(error, ScanTooLarge):
            log.warn(
                "virus scan skipped for a message from {client} ({size} bytes): {reason}; "
                "raise clamd's StreamMaxLength to at least the maximum message size",
                client=client,
                size=size,
                reason=error.reason,
            )
            return self._unscanned_too_large(size)
        log.warn(
            "virus scan failed for a message from {client} (fail {policy}): {reason}",
            client=client,
            policy=self.fail.value,
            reason=error.reason,
        )
        if self.fail is FailPolicy.CLOSED:
            return Verdict(
                action=Action.TEMPFAIL,
                check=self.name,
                rule="VIRUS_UNSCANNED",
                reason=error.reason,
                code=451,
                enhanced="4.7.1",
                text="virus scanner unavailable, try again later",
            )
        return Verdict(
            check=self.name,
            rule="VIRUS_UNSCANNED",
            reason=error.reason,
            headers=((HEADER, NOT_SCANNED_UNAVAILABLE),),
        )

    def _unscanned_too_large(self, size: int) -> Verdict:
        return Verdict(
            check=self.name,
            rule="VIRUS_UNSCANNED",
            reason=f"not scanned: {size} bytes is more than the scanner takes",
            headers=((HEADER, NOT_SCANNED_TOO_LARGE),),
        )


class VirusSession(Abstaining):
    """One connection's view: only the message is scanned; every other phase accepts."""

    def __init__(self, check: VirusCheck, peer: Peer) -> None:
        self.check = check
        self.peer = peer

    def body(self, envelope: Envelope, recipients: object, message: bytes) -> Deferred[Verdict]:
        return self.check.scan(message, self.peer)
