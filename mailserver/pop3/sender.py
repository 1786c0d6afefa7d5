"""RETR and TOP: a message streamed from its file, byte-stuffed, in bounded chunks.

:class:`MessageSender` is a streaming producer (``IPushProducer``) registered with the
transport: file reads run in the reactor's thread pool (DESIGN decision 7), one chunk at a
time, and stop while the transport's buffer is full, so a 50 MiB message never sits in
memory whole and a slow client holds back the reads instead of filling the server's memory.
A message that fits in its first chunk (nearly every one) goes out in a single ``write``
together with the status line and the terminating ``.`` (DESIGN decision 2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from mailserver.pop3.grammar import Stuffer, TopLimiter

__all__ = ["CHUNK", "MessageSender", "read_first"]

#: Octets read from the file per step.
CHUNK = 64 * 1024


def read_first(opener: Callable[[], BinaryIO], size: int = CHUNK) -> tuple[BinaryIO, bytes]:
    """Open the message and read its first chunk (blocking: run in a thread)."""
    source = opener()
    try:
        return source, source.read(size)
    except BaseException:
        source.close()
        raise


@implementer(IPushProducer)
class MessageSender:
    """Writes ``status``, then the stuffed message, then ``.`` CRLF; :meth:`start` returns a
    Deferred that fires when the last byte is handed to the transport (or the connection is
    gone), or fails when the file cannot be read (the caller then drops the connection: the
    client has already been told ``+OK``)."""

    def __init__(
        self,
        transport: Any,
        write: Callable[[bytes], None],
        in_thread: Callable[..., Deferred[Any]],
        source: BinaryIO,
        limiter: TopLimiter | None = None,
        chunk: int = CHUNK,
    ) -> None:
        self.transport = transport
        self.write = write
        self.in_thread = in_thread
        self.source = source
        self.limiter = limiter
        self.chunk = chunk
        self.stuffer = Stuffer()
        self.done: Deferred[None] = Deferred()
        self._paused = False
        self._reading = False
        self._stopped = False
        self._registered = False

    def start(self, status: bytes, first: bytes) -> Deferred[None]:
        data, end = self._transform(first)
        if end or len(first) < self.chunk:
            self.write(status + data + self.stuffer.end())
            self._finish(registered=False)
            return self.done
        self.write(status + data)
        self.transport.registerProducer(self, True)
        self._registered = True
        self._pump()
        return self.done

    def _transform(self, data: bytes) -> tuple[bytes, bool]:
        """Stuffed output for ``data`` and whether the message (or TOP's part) is done."""
        end = not data
        if self.limiter is not None:
            data = self.limiter.feed(data)
            end = end or self.limiter.done
        return self.stuffer.feed(data), end

    def _pump(self) -> None:
        if self._paused or self._reading or self._stopped or self.done.called:
            return
        self._reading = True
        reading = self.in_thread(self.source.read, self.chunk)
        reading.addCallbacks(self._read, self._failed)

    def _read(self, data: bytes) -> None:
        self._reading = False
        if self._stopped:
            self._close_source()
            return
        out, end = self._transform(data)
        if end:
            self.write(out + self.stuffer.end())
            self._finish(registered=True)
            return
        if out:
            self.write(out)
        self._pump()

    def _failed(self, failure: Failure) -> None:
        self._reading = False
        self._close_source()
        self._unregister()
        if not self.done.called:
            self.done.errback(failure)

    def _finish(self, registered: bool) -> None:
        self._close_source()
        if registered:
            self._unregister()
        if not self.done.called:
            self.done.callback(None)

    def _unregister(self) -> None:
        if self._registered:
            self._registered = False
            self.transport.unregisterProducer()

    def _close_source(self) -> None:
        try:
            self.source.close()
        except OSError:
            pass

    # -- IPushProducer -------------------------------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        """The connection is gone: stop reading and let the session finish."""
        self._stopped = True
        self._registered = False
        if not self._reading:
            self._close_source()
        if not self.done.called:
            self.done.callback(None)
