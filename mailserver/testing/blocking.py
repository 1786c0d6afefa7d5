"""Blocking calls into the reactor, for tests written as plain functions (import these from
:mod:`mailserver.testing`; this module's path is private).

A :data:`BlockingCall` runs a function in the reactor's context and waits for its result,
unwrapping a Deferred: ``call(system.wait_for_delivery, "alice@example.org")`` returns the
messages or raises the failure. Two providers:

- :class:`ReactorThread` runs the global reactor in a daemon thread (the way aiosmtpd's
  ``Controller`` runs its event loop), for test code that is not run by the reactor (plain
  pytest without pytest-twisted, scripts). Calling it from the reactor thread itself is
  refused: it would wait for ever.
- :func:`greenlet_call` uses pytest-twisted's ``blockon``; it works in fixtures, whereas a
  test function run by pytest-twisted is already on the reactor and must ``await`` instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import maybeDeferred
from twisted.internet.threads import blockingCallFromThread
from twisted.python.failure import Failure

__all__ = ["BlockingCall", "ReactorThread", "greenlet_call"]


class BlockingCall(Protocol):
    """Run ``function(*args, **kwargs)`` in the reactor's context and return its result (the
    result of its Deferred), or raise its exception."""

    def __call__(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any: ...


class ReactorThread:
    """The global reactor (or ``reactor``) running in a daemon thread.

    :meth:`start` is idempotent; :meth:`stop` stops the reactor, which cannot be started
    again in this process (Twisted's rule), so call it once, at the end of the run.
    """

    def __init__(self, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run the reactor in a daemon thread (once); a reactor already running elsewhere
        is refused with RuntimeError."""
        if self._thread is not None:
            return
        if self.reactor.running:
            raise RuntimeError(
                "the reactor already runs (under trial or pytest-twisted?): use its Deferreds"
                " instead of blocking calls"
            )
        self._thread = threading.Thread(
            target=self.reactor.run,
            kwargs={"installSignalHandlers": False},
            name="mailserver-reactor",
            daemon=True,
        )
        self._thread.start()

    def __call__(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._thread is None:
            raise RuntimeError("the reactor thread is not started: call start() first")
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "a blocking call from the reactor thread would wait for ever: return or await"
                " the Deferred instead"
            )
        return blockingCallFromThread(self.reactor, function, *args, **kwargs)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the reactor and wait (up to ``timeout`` seconds) for its thread to end."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        self.reactor.callFromThread(self.reactor.stop)
        thread.join(timeout)


def greenlet_call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """pytest-twisted's ``blockon`` for a call, where pytest runs code outside the reactor's
    greenlet (fixtures). On the reactor (inside a pytest-twisted test) nothing can wait: a
    call whose result is there at once (e.g. ``MailSystem.start``) returns it, any other
    raises RuntimeError saying to await the Deferred instead (the call has started)."""
    import greenlet
    import pytest_twisted

    instances = getattr(pytest_twisted, "_instances", None)
    if greenlet.getcurrent() is not getattr(instances, "gr_twisted", None):
        return pytest_twisted.blockon(maybeDeferred(function, *args, **kwargs))
    result = maybeDeferred(function, *args, **kwargs)
    outcome: list[Any] = []
    result.addBoth(outcome.append)
    if not outcome:
        raise RuntimeError(
            "this code already runs on the reactor (a pytest-twisted test): await the"
            " Deferred (e.g. await system.wait_for_delivery(...)) instead of a blocking call"
        )
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]
