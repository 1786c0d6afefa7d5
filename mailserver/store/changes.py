"""In-process change notices per (account, folder): how an IDLE session learns at once that
a delivery, or another session, changed its folder.

Design rules:

1. Notices are hints, not data: a watcher re-reads the index when woken. Missing one costs
   latency only (IMAP IDLE also polls), so nothing here is durable or cross-process.
2. :meth:`FolderChanges.notify` is called on the reactor thread once a write is durable;
   watchers run on a later reactor turn (``callLater(0)``), never inside the writer's call
   chain, so a watcher can never reorder a command's own responses.
3. Every watcher is called at most once per reactor turn however many notices arrive (a
   burst of deliveries into one folder wakes each IDLE session once).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

__all__ = ["FolderChanges"]

Key = tuple[str, str]


class FolderChanges:
    """Watchers of folders, by (account address, folder name)."""

    def __init__(self, reactor: Any = None) -> None:
        self._reactor = reactor
        self._watchers: defaultdict[Key, set[Callable[[], None]]] = defaultdict(set)
        self._due: set[Callable[[], None]] = set()

    def watch(self, address: str, folder: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` after each change of ``folder``; returns the function that stops
        watching."""
        key = (address, folder)
        self._watchers[key].add(callback)

        def unwatch() -> None:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.discard(callback)
                if not watchers:
                    del self._watchers[key]
            self._due.discard(callback)

        return unwatch

    def notify(self, address: str, folder: str) -> None:
        """``folder`` of ``address`` changed (its change is durable)."""
        watchers = self._watchers.get((address, folder))
        if not watchers:
            return
        fresh = watchers - self._due
        if not fresh:
            return
        self._due |= fresh
        self._clock().callLater(0, self._run, fresh)

    def _run(self, callbacks: set[Callable[[], None]]) -> None:
        for callback in callbacks:
            if callback in self._due:
                self._due.discard(callback)
                callback()

    def _clock(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor
