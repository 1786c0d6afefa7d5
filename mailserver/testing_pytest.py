"""A pytest plugin: the ``mail_system`` and ``make_mail_system`` fixtures.

Enable it in the top-level ``conftest.py`` with ``pytest_plugins = ["mailserver.testing_pytest"]``
(or ``-p mailserver.testing_pytest``). Each fixture gives started
:class:`~mailserver.testing.MailSystem` objects, stopped at the end of the test.

Two ways to write the tests, chosen by whether pytest-twisted is active:

- **With pytest-twisted** (the reactor runs in a greenlet and test functions run on it):
  tests are ``async def`` and await the Deferreds; blocking clients (smtplib, imaplib) run in
  a thread::

      async def test_welcome(mail_system):
          await mail_system.add_user("alice@example.org", "secret")
          await deferToThread(send_with_smtplib, mail_system.smtp)
          [message] = await mail_system.wait_for_delivery("alice@example.org")

- **Without it** (``-p no:twisted``, or not installed): the reactor runs in a daemon thread
  (:class:`~mailserver.testing.ReactorThread`, stopped when pytest ends) and tests are plain
  functions using the blocking helpers::

      def test_welcome(mail_system):
          mail_system.add_user_blocking("alice@example.org", "secret")
          with smtplib.SMTP(*mail_system.smtp) as client:
              client.sendmail("bob@example.net", ["alice@example.org"], message)
          [message] = mail_system.wait_for_delivery_blocking("alice@example.org")

``make_mail_system(**options)`` takes :class:`~mailserver.testing.MailSystem`'s keyword
arguments (e.g. ``data_dir=tmp_path`` for the maildir + LMDB store) and may be called
several times in one test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mailserver.testing import BlockingCall, MailSystem, ReactorThread, greenlet_call

__all__ = ["mail_system", "make_mail_system"]

_REACTOR_THREAD: list[ReactorThread] = []


def _blocking_call(config: pytest.Config) -> BlockingCall:
    """pytest-twisted's blockon when that plugin is active, else a reactor thread."""
    if config.pluginmanager.has_plugin("twisted"):
        return greenlet_call
    if not _REACTOR_THREAD:
        thread = ReactorThread()
        thread.start()
        _REACTOR_THREAD.append(thread)
    return _REACTOR_THREAD[0]


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the reactor thread, if this plugin started one."""
    while _REACTOR_THREAD:
        _REACTOR_THREAD.pop().stop()


@pytest.fixture
def make_mail_system(request: pytest.FixtureRequest) -> Iterator[Callable[..., MailSystem]]:
    """A function making started MailSystems (keyword arguments as MailSystem's); each is
    stopped after the test."""
    call = _blocking_call(request.config)
    made: list[MailSystem] = []

    def make(**options: Any) -> MailSystem:
        system = MailSystem(call=call, **options)
        made.append(system)
        call(system.start)
        return system

    yield make
    for system in reversed(made):
        call(system.stop)


@pytest.fixture
def mail_system(make_mail_system: Callable[..., MailSystem]) -> MailSystem:
    """A started in-memory MailSystem (host name mail.test, no users yet)."""
    return make_mail_system()
