"""``[smtp] workers = N``: N - 1 worker processes sharing the server's port-25 sockets.

One Python process runs the SMTP dialogue of every session on one core (the GIL). With
``workers > 1`` the server process still binds ``[smtp] listen`` and serves it, and
:class:`WorkerPool` spawns ``workers - 1`` children (``python -m mailserver.worker``, see
:mod:`mailserver.worker`) that adopt the same listening sockets: the kernel hands each new
connection to whichever process accepts it first. Submission, IMAP, POP3, HTTP and the
outbound spool stay in the server process.

Guarantees:

- Workers start only once the server has recovered the store (``/healthz`` ``ok``), so
  recovery never races a worker's delivery; they serve the same data directory (LMDB is
  multi-process safe with its lock file, maildir file names are unique per process).
- A worker that ends while the server runs (a crash, ``kill -9``) is logged and started
  again after a back-off: 0.5 s, doubling per consecutive early end up to 30 s; a worker
  that ran for a minute counts as healthy again.
- Stopping the server (SIGTERM) sends SIGTERM to every worker and waits for them (their
  in-flight sessions get ``server.shutdown_timeout``) before the server closes its index; a
  worker still alive 5 s after that gets SIGKILL. If the server itself dies (even by
  SIGKILL) each worker sees its pipe from the server close and exits at once, so a server
  started again never recovers the store while an old worker still delivers.
- SIGHUP to the server is passed on to every worker (certificates and reloadable keys).
- Worker log events reach the server's log (their ``system`` is ``smtp-worker N``) and,
  through the same events, its mail log, metrics and trace log.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import (
    InvalidLogLevelError,
    Logger,
    LogLevel,
    formatEvent,
    globalLogPublisher,
)
from twisted.python.failure import Failure

from mailserver.config import EMBEDDED, Config

__all__ = ["WorkerPool"]

log = Logger(namespace="mailserver.smtp_workers")

#: Back-off before restarting a worker that ended: first, cap (seconds).
FIRST_RESTART = 0.5
MAX_RESTART = 30.0
#: A worker that ran this long before ending is restarted after FIRST_RESTART again.
HEALTHY_AFTER = 60.0
#: Seconds after SIGTERM (beyond server.shutdown_timeout) before a worker gets SIGKILL.
KILL_GRACE = 5.0
#: Largest log record buffered from a worker before the buffer is dropped (a runaway line).
MAX_RECORD = 1 << 20


#: Event fields that stay in the worker: objects of its own process.
_LOCAL_FIELDS = frozenset(
    {"log_logger", "log_source", "log_observer", "log_flattened", "log_trace"}
)


def encode_event(event: dict[str, Any]) -> bytes:
    """One worker log event as a line of JSON for the parent: the level by name, a failure
    as its traceback text, other values JSON cannot hold as their ``repr`` (cheaper than
    :func:`twisted.logger.eventAsJSON`, which formats and flattens every event)."""
    fields: dict[str, Any] = {}
    for key, value in event.items():
        if key in _LOCAL_FIELDS:
            continue
        if key == "log_level":
            value = getattr(value, "name", "info")
        elif key == "log_failure":
            key, value = "log_failure_text", value.getTraceback()
        fields[key] = value
    try:
        text = json.dumps(fields, default=repr)
    except (TypeError, ValueError):  # e.g. a dict with tuple keys: keep the formatted text
        text = json.dumps(
            {
                "log_level": fields.get("log_level", "info"),
                "log_namespace": fields.get("log_namespace", "-"),
                "log_time": fields.get("log_time"),
                "log_format": "{log_text}",
                "log_text": formatEvent(event),
            }
        )
    return text.encode("ascii") + b"\n"


def decode_event(line: bytes) -> dict[str, Any]:
    """The event :func:`encode_event` wrote; ValueError when ``line`` is not one."""
    event = json.loads(line)
    if not isinstance(event, dict):
        raise ValueError("not a JSON object")
    try:
        event["log_level"] = LogLevel.levelWithName(str(event.get("log_level", "info")))
    except InvalidLogLevelError:
        event["log_level"] = LogLevel.info
    if "log_failure_text" in event:
        event["log_format"] = f"{event.get('log_format') or ''}\n{{log_failure_text}}"
    return event


class WorkerProcess(ProcessProtocol):
    """One worker's pipes: log records from fd 1, text from fd 2; ``ended`` fires with its
    exit status (or the signal, negated)."""

    def __init__(self, index: int, on_end: Callable[[WorkerProcess, int], None]) -> None:
        self.index = index
        self.on_end = on_end
        self.system = f"smtp-worker {index}"
        self.started_at = 0.0
        #: The process id, once spawned (kept after the process has ended, for logs).
        self.pid: int | None = None
        self._records = b""
        self._text = b""
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        """Publish each complete JSON record as a log event of the server."""
        self._records += data
        *complete, self._records = self._records.split(b"\n")  # one event per line
        if len(self._records) > MAX_RECORD:
            self._records = b""
        for record in complete:
            if not record.strip():
                continue
            try:
                event = decode_event(record)
            except ValueError:
                log.warn("{system}: unreadable log record dropped", system=self.system)
                continue
            level = event.get("log_level")
            namespace = event.get("log_namespace", "-")
            where = f"{namespace}#{level.name}" if level is not None else namespace
            event["log_system"] = f"{self.system} {where}"
            globalLogPublisher(event)

    def errReceived(self, data: bytes) -> None:
        """Each stderr line becomes an error event of the server's log."""
        self._text += data
        *lines, self._text = self._text.split(b"\n")
        if len(self._text) > MAX_RECORD:
            lines.append(self._text)
            self._text = b""
        for line in lines:
            if line.strip():
                log.error(
                    "{system} (pid {pid}): {line}",
                    system=self.system,
                    pid=self.pid,
                    line=line.decode("utf-8", "replace"),
                )

    def processEnded(self, reason: Failure) -> None:
        if self._text.strip():
            self.errReceived(b"\n")
        status: int
        if reason.check(ProcessDone):
            status = 0
        else:
            value = reason.value
            signal_number = getattr(value, "signal", None)
            status = -signal_number if signal_number else int(getattr(value, "exitCode", 1) or 1)
        self.on_end(self, status)
        self.ended.callback(status)


class WorkerPool(Service):
    """Keeps ``config.smtp.workers - 1`` workers on ``listeners``' sockets (module doc).

    ``listeners`` are the ``smtp.listen`` services (their ``_waitingForPort`` gives the bound
    ports); ``ready()`` says whether the server has recovered the store ("ok"), "failed",
    or is still "starting".
    """

    def __init__(
        self,
        config: Config,
        listeners: Sequence[Any],
        ready: Callable[[], str],
        reactor: Any,
        *,
        executable: str | None = None,
    ) -> None:
        self.setName("smtp-workers")
        self.config = config
        self.count = config.smtp.workers - 1
        self.listeners = list(listeners)
        self.ready = ready
        self.reactor = reactor
        self.executable = executable or sys.executable
        self.cwd = os.getcwd()  # before twistd daemonises: relative paths stay meaningful
        self.config_path = None if config.source == EMBEDDED else os.path.abspath(config.source)
        self.workers: dict[int, WorkerProcess] = {}
        self.failures: dict[int, int] = {}
        self._sockets: list[tuple[int, int]] = []
        self._pending: dict[int, IDelayedCall] = {}
        self._waiting: IDelayedCall | None = None

    # --- starting -------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        waiting = [listener._waitingForPort for listener in self.listeners]
        gatherResults(waiting).addCallbacks(self._bound, self._not_bound)

    def _bound(self, ports: list[Any]) -> None:
        sockets = []
        for listener, port in zip(self.listeners, ports, strict=True):
            fileno = getattr(port, "fileno", None)
            family = getattr(port, "addressFamily", None)
            if fileno is None or family is None:
                log.error(
                    "smtp workers not started: {endpoint} is not a socket they can share "
                    "(use tcp: endpoints in smtp.listen, or [smtp] workers = 1)",
                    endpoint=listener.description,
                )
                return
            sockets.append((fileno(), int(family)))
        self._sockets = sockets
        self._when_ready()

    def _not_bound(self, failure: Failure) -> None:
        log.failure("smtp workers not started", failure)

    def _when_ready(self) -> None:
        """Start the workers once the store is recovered (checked every 0.1 s)."""
        self._waiting = None
        if not self.running:
            return
        state = self.ready()
        if state == "starting":
            self._waiting = self.reactor.callLater(0.1, self._when_ready)
            return
        if state != "ok":
            log.error("smtp workers not started: the server is {state}", state=state)
            return
        log.info("starting {n} smtp worker process(es)", n=self.count)
        self._forward_sighup()
        for index in range(1, self.count + 1):
            self._spawn(index)

    def _forward_sighup(self) -> None:
        """Chain onto the server's SIGHUP handler (installed by now): each worker gets the
        signal too and reloads as the server does."""
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGHUP)

        def handler(signum: int, frame: Any) -> None:
            if callable(previous):
                previous(signum, frame)
            self.reactor.callFromThread(self._signal_all, "HUP")

        signal.signal(signal.SIGHUP, handler)

    def _signal_all(self, name: str) -> None:
        for worker in list(self.workers.values()):
            _signal(worker, name)

    def _command(self) -> list[str]:
        command = [self.executable, "-m", "mailserver.worker"]
        if self.config_path is not None:
            command += ["--config", self.config_path]
        for number, (_, family) in enumerate(self._sockets):
            command += ["--fd", f"{3 + number}:{family}"]
        return command

    def _spawn(self, index: int) -> None:
        self._pending.pop(index, None)
        if not self.running:
            return
        child_fds: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
        for number, (fileno, _) in enumerate(self._sockets):
            child_fds[3 + number] = fileno
        protocol = WorkerProcess(index, self._ended)
        protocol.started_at = self.reactor.seconds()
        command = self._command()
        try:
            process = self.reactor.spawnProcess(
                protocol, command[0], command, env=dict(os.environ), path=self.cwd,
                childFDs=child_fds,
            )
        except OSError as error:
            log.error("cannot start smtp worker {index}: {error}", index=index, error=error)
            self._ended(protocol, 1)
            return
        protocol.pid = process.pid
        self.workers[index] = protocol
        log.info("smtp worker {index} started (pid {pid})", index=index, pid=protocol.pid)

    # --- ends and restarts ----------------------------------------------------------------

    def _ended(self, protocol: WorkerProcess, status: int) -> None:
        index = protocol.index
        if self.workers.get(index) is protocol:
            del self.workers[index]
        if not self.running:
            log.info("smtp worker {index} stopped (status {status})", index=index, status=status)
            return
        lived = self.reactor.seconds() - protocol.started_at
        failures = 0 if lived >= HEALTHY_AFTER else self.failures.get(index, 0)
        delay = min(FIRST_RESTART * (2**failures), MAX_RESTART)
        self.failures[index] = failures + 1
        log.error(
            "smtp worker {index} (pid {pid}) ended with status {status} after {lived:.1f}s; "
            "restarting in {delay}s",
            index=index, pid=protocol.pid, status=status, lived=lived, delay=delay,
        )
        self._pending[index] = self.reactor.callLater(delay, self._spawn, index)

    def pids(self) -> list[int]:
        """The process ids of the running workers."""
        return [p.pid for p in self.workers.values() if p.pid is not None]

    # --- stopping -------------------------------------------------------------------------

    def stopService(self) -> Deferred[Any]:
        """SIGTERM every worker; fires when all have ended (SIGKILL after the grace)."""
        super().stopService()
        if self._waiting is not None and self._waiting.active():
            self._waiting.cancel()
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        workers = list(self.workers.values())
        for worker in workers:
            _signal(worker, "TERM")
        grace = self.config.server.shutdown_timeout + KILL_GRACE
        killer = self.reactor.callLater(grace, self._kill, workers)
        ended: Deferred[Any] = DeferredList([w.ended for w in workers], consumeErrors=True)

        def done(result: object) -> object:
            if killer.active():
                killer.cancel()
            return result

        return ended.addBoth(done)

    def _kill(self, workers: list[WorkerProcess]) -> None:
        for worker in workers:
            if not worker.ended.called:
                log.error("smtp worker {index} did not stop; SIGKILL", index=worker.index)
                _signal(worker, "KILL")


def _signal(worker: WorkerProcess, name: str) -> None:
    transport = worker.transport
    if transport is None:
        return
    try:
        transport.signalProcess(name)
    except (ProcessExitedAlready, OSError):
        pass
