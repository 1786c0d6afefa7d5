"""Per-session limits of the SMTP server that protect the server from its clients.

:class:`SessionLimits` is a mixin of :class:`mailserver.smtp.server.ESMTPServer`:

1. **Timers that a slow client cannot stretch** (slowloris). The command timer
   (``command_timeout``) restarts when a whole command line has arrived, never for the
   bytes of an unfinished one. Message content may pause up to ``data_timeout`` between
   blocks (RFC 5321 §4.5.3.2.5), and all of one message (DATA, or every BDAT chunk of it)
   must arrive within ``data_timeout + size / min_data_rate`` seconds (Postfix's
   ``smtpd_min_data_rate``). Past either, the session ends with ``421 4.4.2``.
2. **A spool that cannot fill memory or crash the session.** The message is spooled in a
   ``SpooledTemporaryFile`` (memory up to 1 MiB, then a temporary file), so one session
   holds at most that much of a message in memory while it arrives. When the temporary file
   cannot be written (ENOSPC: the disk is full), the rest of the content is still read, to
   stay in step with the client, and the message is refused with ``452 4.3.1`` (RFC 3463
   X.3.1) instead of the session failing.
"""

from __future__ import annotations

import errno
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from mailserver.smtp import codes
from mailserver.smtp.codes import Reply

__all__ = ["GuardedSpool", "SessionLimits"]

log = Logger(namespace="mailserver.smtp")

#: errno values of a write that failed for lack of space.
_FULL = (errno.ENOSPC, errno.EDQUOT)


class GuardedSpool:
    """A message spool file whose first failing write is kept in :attr:`error` instead of
    raised; later writes are dropped. Everything else is the wrapped file's."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        if self.error is None:
            try:
                return self.file.write(data)
            except OSError as error:
                self.error = error
        return len(data)

    def reply(self) -> Reply:
        """The refusal for the kept error: 452 4.3.1 when the disk is full, else 451."""
        if self.error is not None and self.error.errno in _FULL:
            return codes.INSUFFICIENT_STORAGE
        return codes.LOCAL_ERROR

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


class SessionLimits:
    """The timers and the guarded spool of one SMTP session (see the module docstring)."""

    policy: Any
    factory: Any
    transaction: Any
    _reader: Any
    _timeout: Any

    def _timed_out(self) -> None:
        raise NotImplementedError

    def _cancel_timeout(self) -> None:
        raise NotImplementedError

    # -- timers ---------------------------------------------------------------------------

    def _reset_timeout(self) -> None:
        """Restart the timer: data_timeout while content arrives, else command_timeout,
        never past the current message's content budget. A running timer is moved (a
        cheap ``reset``: this runs for every command line and every block of content)."""
        seconds = self.policy.data_timeout if self._reader else self.policy.command_timeout
        left = self._budget_left()
        if left is not None:
            seconds = min(seconds, left)
        timer = self._timeout
        if timer is not None and timer.active():
            timer.reset(max(seconds, 0.0))
        else:
            self._timeout = self.factory.reactor.callLater(max(seconds, 0.0), self._timed_out)

    def _budget_left(self) -> float | None:
        """Seconds left of the current message's content budget; None without one."""
        rate = self.policy.min_data_rate
        budget = getattr(self, "_budget", None)
        if rate <= 0 or budget is None or self.transaction is None or budget[0] is not (
            self.transaction
        ):
            return None
        _owner, started, count = budget
        deadline = started + self.policy.data_timeout + count / rate
        return float(deadline - self.factory.reactor.seconds())

    def _content_arrived(self, count: int) -> None:
        """Count ``count`` bytes of message content against the budget of the current
        transaction (started by its first content byte)."""
        budget = getattr(self, "_budget", None)
        if budget is None or budget[0] is not self.transaction:
            budget = (self.transaction, self.factory.reactor.seconds(), 0)
        self._budget = (budget[0], budget[1], budget[2] + count)

    def _feed_reader(self) -> None:
        """Count the buffered content against the budget, then let the reader take it."""
        self._content_arrived(len(self._buffer))  # type: ignore[attr-defined]
        super()._feed_reader()  # type: ignore[misc]

    # -- the spool ------------------------------------------------------------------------

    def _start_message(self, transaction: Any) -> None:
        super()._start_message(transaction)  # type: ignore[misc]
        transaction.sink = GuardedSpool(transaction.sink)

    def _deliver(self) -> Deferred[Reply]:
        """Refuse a message whose spool could not be written; deliver the others."""
        transaction = self.transaction
        sink = getattr(transaction, "sink", None)
        if isinstance(sink, GuardedSpool) and sink.error is not None:
            log.error(
                "{queue_id}: cannot spool the message: {error}",
                queue_id=transaction.queue_id,
                error=sink.error,
            )
            reply = sink.reply()
            self._abort_transaction()  # type: ignore[attr-defined]
            return succeed(reply)
        return super()._deliver()  # type: ignore[misc, no-any-return]
