"""Run one command's work on the real storage under the reactor, then close it.

The storage nouns (``domain``, ``user``, ``alias``, ``reindex``, ``deliver``) call
:func:`run_with_storage` with a ``work`` function. It loads the config, opens the index, the
directory and the maildir store (:func:`mailserver.service.open_storage`), runs the work,
always closes the store and then the index, and returns the exit status.

A command reports an expected failure by raising :class:`CommandError` (one ``error: ...``
line on stderr and its status). An OSError from the store becomes StoreUnavailable; it,
other MailErrors and ConfigError are re-raised after closing, so ``main.py`` reports them
as one line as well.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import react

from mailserver.auth.directory import LmdbDirectory, canonical_address, canonical_domain
from mailserver.cli.common import load_config
from mailserver.config import Config
from mailserver.db import Database
from mailserver.errors import ConfigError, InvalidName, MailError, StoreUnavailable
from mailserver.store.maildir_store import MaildirStore

#: ``work(config, directory, store)``: called before the reactor starts (so it may prompt
#: on the terminal and read the storage synchronously); the awaitable it returns runs under
#: the reactor and gives the exit status.
Work = Callable[[Config, LmdbDirectory, MaildirStore], Awaitable[int]]

#: Exit statuses shared by the storage nouns (``main.py`` uses the same numbers).
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


class CommandError(MailError):
    """An expected failure of a command: ``message`` says what went wrong and what to do.

    A MailError, so that one raised outside :func:`run_with_storage` (e.g. while parsing the
    arguments) is still reported by ``main.py`` as ``error: <message>`` with exit status 1.
    """

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def say_error(message: str) -> None:
    """Print ``error: <message>`` on stderr (one line)."""
    print(f"error: {message}", file=sys.stderr)


def say_note(message: str) -> None:
    """Print ``note: <message>`` on stderr: a warning that does not change the outcome."""
    print(f"note: {message}", file=sys.stderr)


def run_with_storage(args: argparse.Namespace, work: Work) -> int:
    """Open the storage named by the config, run ``work``, close the storage; the exit status.

    CommandError is printed (``error: ...``) and its status returned; an OSError becomes a
    StoreUnavailable naming the file; any other exception is re-raised once the storage is
    closed. Ctrl-C while the reactor runs closes the storage and returns 130.
    """
    config = load_config(args)
    from twisted.internet import reactor

    db, directory, store = _open(config, reactor)
    pending: BaseException | None = None
    awaitable: Awaitable[int] | None = None
    try:
        awaitable = work(config, directory, store)
    except BaseException as error:  # KeyboardInterrupt at a prompt too: close first
        pending = error
    outcome: list[Any] = []
    reactor.addSystemEventTrigger("before", "shutdown", _close, store, db)
    try:
        react(lambda _reactor: ensureDeferred(_finish(awaitable, store, db, outcome)))
    except SystemExit:
        pass  # react always exits; the outcome list holds what happened
    if pending is None and outcome and isinstance(outcome[0], BaseException):
        pending = outcome[0]
    if isinstance(pending, OSError):
        pending = _storage_failure(pending)
    if pending is not None:
        if isinstance(pending, CommandError):
            say_error(pending.message)
            return pending.status
        raise pending
    if not outcome:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return int(outcome[0])


def _open(config: Config, reactor: Any) -> tuple[Database, LmdbDirectory, MaildirStore]:
    """open_storage, with an unwritable data directory reported as a ConfigError."""
    from mailserver.service import open_storage  # the wiring: imported only when needed

    try:
        return open_storage(config, reactor)
    except OSError as error:
        where = error.filename or config.server.data_path
        raise ConfigError(
            "server.data_dir",
            f"cannot open {where}: {error.strerror or error}",
            "make it writable for this user, or point --config at the server's config",
        ) from None


def _storage_failure(error: OSError) -> StoreUnavailable:
    """A file-system failure in the store as one temporary MailError naming file and fix."""
    where = f" ({error.filename})" if error.filename else ""
    return StoreUnavailable(
        detail=f"{error.strerror or error}{where}; check the permissions and free space "
        "under server.data_dir, then run the command again"
    )


async def _finish(
    awaitable: Awaitable[int] | None,
    store: MaildirStore,
    db: Database,
    outcome: list[Any],
) -> None:
    """Await the work (recording its status or exception in ``outcome``), then close."""
    try:
        if awaitable is not None:
            outcome.append(await awaitable)
    except Exception as error:
        outcome.append(error)
    finally:
        try:
            await _close(store, db)
        except Exception as error:
            if not outcome or not isinstance(outcome[0], BaseException):
                outcome[:] = [error]


def _close(store: MaildirStore, db: Database) -> Deferred[None]:
    """Wait for the store's in-flight work, then close the index (both idempotent)."""

    async def close() -> None:
        await store.close()
        await db.close()

    return ensureDeferred(close())


# -- argument checks shared by the nouns ---------------------------------------------------


def domain_name(text: str) -> str:
    """The canonical form of a domain argument; CommandError when it is not a domain."""
    try:
        return canonical_domain(text)
    except InvalidName as error:
        raise CommandError(
            f"{text!r} is not a domain name ({error.text}); give one such as example.org"
        ) from None


def address(text: str) -> str:
    """The canonical form of an address argument; CommandError when it is malformed."""
    try:
        return canonical_address(text)
    except InvalidName as error:
        raise CommandError(
            f"{text!r} is not an address ({error.text}); give one such as alice@example.org"
        ) from None


def require_domain(directory: LmdbDirectory, name: str) -> None:
    """CommandError (with the command that fixes it) when ``name`` is not served here."""
    if not directory.has_domain(name):
        raise CommandError(
            f"domain {name} is not served here; add it first: mailserver domain add {name}"
        )
