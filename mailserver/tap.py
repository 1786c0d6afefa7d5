"""``twistd mailserver``: command-line options and the service maker.

``twistd -n --pidfile= mailserver [--config PATH]``. Without ``--config`` the server runs on
the embedded defaults (data under ``./var``, listeners on 127.0.0.1). An expected start-up
problem (bad config, unusable TLS files, a port in use, an index that will not open) ends
the process with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import gc
import sys
from typing import IO, Any

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import ILogObserver
from twisted.python import usage
from twisted.python.components import Componentized
from twisted.python.logfile import LogFile

from mailserver.config import Config, load
from mailserver.errors import ConfigError, MailError
from mailserver.log import make_observer

#: Exit status for an expected start-up error (same as ``mailserver config check``).
EXIT_CONFIG = 2


class Options(usage.Options):
    """``twistd mailserver`` options."""

    synopsis = "[--config PATH]"
    optParameters = [
        ["config", "c", None, "TOML config file (default: the embedded defaults)."],
    ]


def _fail(error: Exception) -> SystemExit:
    """Print ``error`` as one line on stderr; the SystemExit to raise."""
    message = str(error)
    if isinstance(error, MailError) and not isinstance(error, ConfigError):
        message = f"error: {error.detail or error.text}"
    # Once twistd's logging has begun, sys.stderr is redirected into the log.
    stream = sys.__stderr__ or sys.stderr
    stream.write(message + "\n")
    stream.flush()
    return SystemExit(EXIT_CONFIG)


class TwistdRoot(MultiService):
    """The service twistd runs: turns expected start-up errors into one line + exit 2, and
    installs the ``[log]`` observer on the twistd application."""

    def __init__(self, main: IService, observer: ILogObserver | None, reactor: Any) -> None:
        super().__init__()
        self.main = main
        self.observer = observer
        self.reactor = reactor
        main.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        """Register the log observer as the application's ILogObserver component; twistd's
        AppLogger uses it (unless ``--logger`` was given)."""
        if self.observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.observer)
        super().setServiceParent(parent)

    def privilegedStartService(self) -> None:
        """Bind the listeners; a port in use ends start-up with one line."""
        try:
            super().privilegedStartService()
        except (ConfigError, MailError) as error:
            raise _fail(error) from None

    def startService(self) -> None:
        """Start the server; once the reactor runs, what start-up allocated (modules, config,
        listeners: objects that live as long as the process) is collected once and then
        frozen out of the garbage collector's full passes (``gc.freeze``). Otherwise the first
        command that allocates much (an IMAP ``FETCH 1:*`` of 10,000 messages) pays a full
        pass over that whole heap (~60 ms here), and every later full pass walks it again."""
        super().startService()
        self.reactor.callWhenRunning(_freeze_heap)

    def stopService(self) -> Deferred[None]:
        """Stop the server. After a clean shutdown caused by SIGTERM/SIGINT, exit with status
        0 instead of twistd's default of re-raising the signal; an unclean one (in-flight work
        cut off by the shutdown timeout) keeps the signal as the exit status."""
        stopping: Deferred[None] = maybeDeferred(super().stopService)

        def stopped(result: None) -> None:
            if getattr(self.main, "stopped_cleanly", False):
                # twistd re-kills itself with the signal that stopped the reactor
                # (twisted.internet.base.ReactorBase._exitSignal); a clean stop is success.
                self.reactor._exitSignal = None
            return result

        stopping.addCallback(stopped)
        return stopping


def _log_stream(options: usage.Options) -> IO[str]:
    """Where twistd itself would log: stdout with ``-n`` or ``--logfile=-``, else the log
    file (``twistd.log`` by default)."""
    parent = getattr(options, "parent", None)
    if parent is None:
        return sys.stdout
    logfile = parent.get("logfile")
    if logfile == "-" or (not logfile and parent.get("nodaemon")):
        return sys.stdout
    return LogFile.fromFullPath(logfile or "twistd.log")  # type: ignore[return-value]


def _freeze_heap() -> None:
    gc.collect()
    gc.freeze()


def makeService(options: Options) -> MultiService:
    """Load the config and build the server (see :func:`mailserver.service.build`).

    A ConfigError (or an index that cannot be opened) is printed as one line on stderr and
    ends the process with exit status 2.
    """
    from twisted.internet import reactor

    from mailserver import service

    try:
        config: Config = load(options["config"])
        main = service.build(config, reactor)
    except (ConfigError, MailError) as error:
        raise _fail(error) from None
    observer = make_observer(config.log, _log_stream(options))
    return TwistdRoot(main, observer, reactor)
