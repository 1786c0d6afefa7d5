"""IDLE (RFC 2177, RFC 9051 §6.3.13): report mailbox changes as they happen until ``DONE``.

An idling session learns of changes two ways:

- any change of its folder made through this process (SMTP deliveries, APPEND, COPY/MOVE,
  flag changes, expunges, DELETE and RENAME, from any listener: IMAP on 143 or 993, POP3)
  wakes it at once through the store's change notices (``IAccount.watch``);
- anything else (other processes) is found by polling the folder's counters
  every ``policy.idle_poll`` seconds (1 s by default): a cheap index read that only turns into
  a UID scan when something changed (:meth:`mailserver.imap.selected.SelectedMailbox.sync`).

The server owns the connection side (``+ idling``, reading ``DONE``); this module only runs
the updates while the session idles.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from mailserver.imap.session import Session

__all__ = ["Idler"]

log = Logger(namespace="mailserver.imap")


class Idler:
    """Sends untagged updates through ``write`` while the session idles; ``failed`` is called
    (once, after which the idler stops) when the selected mailbox cannot be read any more."""

    def __init__(
        self,
        session: Session,
        write: Callable[[bytes], None],
        failed: Callable[[BaseException], None],
    ) -> None:
        self.session = session
        self.write = write
        self.failed = failed
        self._loop = LoopingCall(self.poll)
        self._loop.clock = session.factory.reactor  # type: ignore[assignment]
        self._unwatch_store: Callable[[], None] | None = None
        self._running = False

    def start(self) -> None:
        """Report what changed so far, then keep watching."""
        self._running = True
        selected = self.session.selected
        if selected is not None:
            account = self.session.account
            if account is not None:
                self._unwatch_store = account.watch(selected.name, self.poll)
        self._loop.start(self.session.policy.idle_poll, now=True)

    def poll(self) -> None:
        if not self._running:
            return
        selected = self.session.selected
        if selected is None:
            return
        try:
            updates = selected.sync(allow_expunge=True)
        except Exception as error:  # the mailbox is gone or the store failed
            log.info("IDLE update failed: {error!r}", error=error)
            self.stop()
            self.failed(error)
            return
        if updates:
            self.write(b"".join(updates))

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        if self._loop.running:
            self._loop.stop()
        if self._unwatch_store is not None:
            self._unwatch_store()
            self._unwatch_store = None
