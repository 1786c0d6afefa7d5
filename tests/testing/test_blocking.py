"""The blocking calls' refusals: each says what to do instead of waiting for ever."""

from __future__ import annotations

import pytest
from twisted.internet import reactor

from mailserver.testing import ReactorThread, greenlet_call


def test_reactor_thread_refuses_a_running_reactor() -> None:
    """Under pytest-twisted the reactor already runs, so a ReactorThread cannot start one."""
    assert reactor.running  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="already runs"):
        ReactorThread().start()


def test_reactor_thread_needs_start() -> None:
    """A call before start() is refused with the fix."""
    with pytest.raises(RuntimeError, match="call start"):
        ReactorThread()(lambda: None)


def test_greenlet_call_returns_an_immediate_result_on_the_reactor() -> None:
    """In a test (on the reactor) a call whose result is there at once returns it, and its
    exception is raised."""
    assert greenlet_call(lambda x: x + 1, 41) == 42
    with pytest.raises(ZeroDivisionError):
        greenlet_call(lambda: 1 / 0)
