"""FolderChanges: watchers run on a later reactor turn, once per turn, and never after
they stopped watching."""

from __future__ import annotations

from twisted.internet.task import Clock

from mailserver.store.changes import FolderChanges


def test_notices_run_later_once_per_turn_and_only_for_the_folder():
    clock = Clock()
    changes = FolderChanges(clock)
    calls: list[str] = []
    changes.watch("a@x", "INBOX", lambda: calls.append("inbox"))
    changes.watch("a@x", "Junk", lambda: calls.append("junk"))
    changes.watch("b@x", "INBOX", lambda: calls.append("other user"))
    changes.notify("a@x", "INBOX")
    changes.notify("a@x", "INBOX")
    assert calls == []  # never inside the notifier's call chain
    clock.advance(0)
    assert calls == ["inbox"]  # coalesced: one call for the burst
    changes.notify("a@x", "INBOX")
    clock.advance(0)
    assert calls == ["inbox", "inbox"]


def test_unwatch_cancels_pending_and_future_notices():
    clock = Clock()
    changes = FolderChanges(clock)
    calls: list[int] = []
    unwatch = changes.watch("a@x", "INBOX", lambda: calls.append(1))
    changes.notify("a@x", "INBOX")
    unwatch()
    clock.advance(0)
    changes.notify("a@x", "INBOX")
    clock.advance(0)
    unwatch()  # idempotent
    assert calls == []


def test_notify_without_watchers_schedules_nothing():
    clock = Clock()
    FolderChanges(clock).notify("a@x", "INBOX")
    assert clock.getDelayedCalls() == []
