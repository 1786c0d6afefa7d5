"""The service twistd runs (mailserver.tap.TwistdRoot) freezes the start-up heap once the
reactor runs, so the garbage collector's full passes no longer walk it (issue 6)."""

from __future__ import annotations

import gc

from twisted.application.service import Service
from twisted.internet.testing import MemoryReactorClock

from mailserver.tap import TwistdRoot


def test_start_up_heap_is_frozen_once_the_reactor_runs():
    """Starting the root asks the reactor to run the freeze when it runs; after that hook
    the objects alive at start-up sit in the collector's permanent generation."""
    reactor = MemoryReactorClock()
    root = TwistdRoot(Service(), None, reactor)
    gc.unfreeze()
    try:
        root.startService()
        assert root.main.running
        assert gc.get_freeze_count() == 0  # not before the reactor runs
        for hook, args, kwargs in reactor.whenRunningHooks:
            hook(*args, **kwargs)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        root.stopService()
