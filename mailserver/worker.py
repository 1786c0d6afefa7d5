"""``python -m mailserver.worker``: one inbound SMTP worker process (``[smtp] workers``).

The server process spawns ``workers - 1`` of these (:mod:`mailserver.smtp_workers`). Each
adopts the server's already-bound ``[smtp] listen`` sockets (inherited file descriptors, one
``--fd N:FAMILY`` per endpoint), opens the same data directory (LMDB serialises writers
across processes; maildir names are unique per process) and serves port-25 SMTP exactly as
the server process does: the same avatar, filters and message authentication, and the 250
only after the fsync. It runs no recovery, no spool, no other listener.

Its contract with the parent, over the inherited descriptors:

- fd 0 is a pipe from the parent. Nothing is sent on it; when it reaches end-of-file (or fd
  1 breaks) the parent has died (a clean stop of the server ends its workers first), and
  the worker exits at once with status 3, as if killed together with it: a server started
  again on the same data must never run its store recovery while an old worker is still
  delivering. What the worker had acknowledged is on disk; what it had not, the client
  sends again. No worker outlives its server.
- fd 1 carries the worker's log events, one line of JSON per event
  (:func:`mailserver.smtp_workers.encode_event`): those at ``[log] level`` or above
  and every event with a ``mail_event`` field, so the parent's log file, mail log, metrics
  and trace log see the worker's sessions as their own.
- fd 2 is for what Python itself prints (a start-up error, a traceback of a dying process);
  the parent logs each line as an error.
- SIGHUP (the server forwards its own) reloads the certificates and the reloadable config
  keys, as in the server (:mod:`mailserver.reload`).
- SIGTERM (or SIGINT) stops accepting, lets in-flight sessions finish within
  ``server.shutdown_timeout`` and closes the index; exit status 0. A start-up problem (bad
  config, an index that will not open) prints one line on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.internet.protocol import Protocol
from twisted.logger import (
    ILogObserver,
    Logger,
    LogLevel,
    globalLogBeginner,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from mailserver.config import Config, load
from mailserver.errors import ConfigError, MailError
from mailserver.filtering import Filters
from mailserver.service import MailService, open_storage, port25_factory, server_tls
from mailserver.smtp_workers import encode_event

__all__ = ["EXIT_PARENT_DIED", "EXIT_STARTUP", "WorkerService", "build", "main"]

log = Logger(namespace="mailserver.worker")

#: Exit status of a worker that could not start (the same as twistd's for a bad config).
EXIT_STARTUP = 2
#: Exit status of a worker whose server process died.
EXIT_PARENT_DIED = 3
#: The listener key the worker's sessions are labelled with (metrics, trace).
LISTENER_KEY = "smtp.listen"


class AdoptedPort(Service):
    """Serves ``factory`` on an inherited listening socket while running."""

    def __init__(self, fd: int, family: int, factory: IProtocolFactory, reactor: Any) -> None:
        self.fd = fd
        self.family = family
        self.factory = factory
        self.reactor = reactor
        self.key = LISTENER_KEY
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        # adoptStreamPort duplicates the descriptor; the inherited one is ours to close.
        self.port = self.reactor.adoptStreamPort(self.fd, self.family, self.factory)
        os.close(self.fd)

    def stopService(self) -> Any:
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


class WorkerService(MailService):
    """A :class:`MailService` that serves only adopted SMTP ports and runs no recovery (the
    server process recovers the store before it starts any worker); stopping is the same:
    stop accepting, wait for in-flight work, close the store and the index."""

    def privilegedStartService(self) -> None:
        MultiService.privilegedStartService(self)

    def startService(self) -> None:
        MultiService.startService(self)
        self.state = "ok"
        self._install_sighup()  # the server forwards its SIGHUP: certificates and limits
        log.info(
            "smtp worker {pid} serving {n} listening socket(s) of the server",
            pid=os.getpid(),
            n=sum(1 for child in self if isinstance(child, AdoptedPort)),
        )


def build(config: Config, reactor: Any, sockets: Sequence[tuple[int, int]]) -> WorkerService:
    """Wire a worker for ``config``: storage, TLS (for STARTTLS), the filters when on, and
    the port-25 factory on each ``(fd, family)`` socket."""
    tls = server_tls(config)
    db, directory, store = open_storage(config, reactor)
    root = WorkerService(config, reactor, db=db, store=store, directory=directory, tls=tls)
    if config.filter.enabled:
        root.filters = Filters(config, db, directory, store.account, reactor)
        root.filters.setServiceParent(root)
    factory = port25_factory(config, root, reactor)
    factory.listener = LISTENER_KEY
    factory.trace = "smtp" in config.log.trace
    root.factories.append(factory)
    for fd, family in sockets:
        AdoptedPort(fd, family, factory, reactor).setServiceParent(root)
    return root


@implementer(ILogObserver)
class EventForwarder:
    """Writes each event the parent wants (see the module doc) to ``transport`` as one line
    of JSON (:func:`mailserver.smtp_workers.encode_event`)."""

    def __init__(self, transport: Any, level: LogLevel) -> None:
        self.transport = transport
        self.level = level

    def __call__(self, event: dict[str, Any]) -> None:
        if "mail_event" not in event and event.get("log_level", LogLevel.info) < self.level:
            return
        self.transport.write(encode_event(event))


class ParentPipe(Protocol):
    """fd 0 (from the parent) and fd 1 (log records to it): when either closes, the parent
    has died and the worker exits at once (module doc)."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def dataReceived(self, data: bytes) -> None:
        """The parent sends nothing; anything is ignored."""

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.reactor.running:
            os._exit(EXIT_PARENT_DIED)  # no graceful stop, and nobody left to tell: module doc


def _socket_arg(text: str) -> tuple[int, int]:
    """``FD`` or ``FD:FAMILY`` (the address family's number; the socket's own by default)."""
    fd_text, _, family_text = text.partition(":")
    try:
        fd = int(fd_text)
        if family_text:
            return fd, int(family_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not FD or FD:FAMILY: {text!r}") from None
    with socket.socket(fileno=os.dup(fd)) as probe:
        return fd, int(probe.family)


def _arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mailserver.worker",
        description="An inbound SMTP worker of a running mailserver (spawned by the server).",
    )
    parser.add_argument("--config", default=None, help="the server's TOML config file")
    parser.add_argument(
        "--fd",
        dest="sockets",
        action="append",
        type=_socket_arg,
        required=True,
        help="an inherited listening socket, FD or FD:FAMILY (repeatable)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one worker until SIGTERM or the parent's end; the exit status."""
    arguments = _arguments(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the service handles it: never fatal
    from twisted.internet import reactor
    from twisted.internet.stdio import StandardIO

    try:
        config = load(arguments.config)
        root = build(config, reactor, arguments.sockets)
    except (ConfigError, MailError) as error:
        message = str(error)
        if isinstance(error, MailError) and not isinstance(error, ConfigError):
            message = f"error: {error.detail or error.text}"
        sys.stderr.write(f"smtp worker {os.getpid()}: {message}\n")
        return EXIT_STARTUP
    pipe = StandardIO(  # type: ignore[call-arg]  # the POSIX one takes stdin and stdout
        ParentPipe(reactor), stdin=0, stdout=1, reactor=reactor
    )
    level = LogLevel.levelWithName(config.log.level)
    globalLogBeginner.beginLoggingTo(
        [EventForwarder(pipe, level)], redirectStandardIO=False, discardBuffer=False
    )
    reactor.callWhenRunning(root.privilegedStartService)
    reactor.callWhenRunning(root.startService)
    reactor.addSystemEventTrigger("before", "shutdown", lambda: _stop(root, pipe, reactor))
    reactor.run()
    return 0


def _stop(root: WorkerService, pipe: Any, reactor: Any) -> Deferred[None]:
    """Stop the service, then give the last log records up to a second to reach the parent
    (the reactor does no more I/O once this Deferred fires)."""
    done: Deferred[None] = Deferred()
    deadline = reactor.seconds() + 1.0

    def drain(_: object = None) -> None:
        writer = getattr(pipe, "_writer", None)
        pending = writer is not None and writer.connected and (
            writer.dataBuffer or writer._tempDataBuffer
        )
        if pending and reactor.seconds() < deadline:
            reactor.callLater(0.01, drain)
        else:
            done.callback(None)

    stopping: Deferred[Any] = maybeDeferred(root.stopService)
    stopping.addErrback(lambda failure: log.failure("smtp worker stop failed", failure))
    stopping.addBoth(drain)
    return done


if __name__ == "__main__":
    sys.exit(main())
