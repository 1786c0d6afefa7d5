"""Our server as the benchmarks run it: the ``twistd -n mailserver`` process with one
listener on, its config, the offline provisioning of its data directory, and Twisted's
reactor for that provisioning; shared by the scripts in ``bench/``.

Design rules:

- A bench builds the sections it cares about (hostname, data directory, limits, the one
  listener it measures) and :func:`server_config` turns every other listener off (read
  from :class:`mailserver.config.Config`, so listeners added later are off too) and lays
  ``--set`` overrides on top; :class:`TwistdServer` writes it as TOML and runs twistd.
- Nothing of ``mailserver`` is imported at module level: a bench that only needs the
  process wrapper does not pay for (or depend on) the store and the reactor.
- The reactor runs either once, in the calling thread (:func:`run_on_reactor`), or in a
  daemon thread for several jobs (:class:`ReactorThread`); never both in one process.

Imported like :mod:`bench.machine` (``from bench import machine, servers``, the checkout
on ``sys.path``) and used as ``servers.TwistdServer``, ``servers.report``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tests.peers.postfix import free_port, process_cpu_seconds

__all__ = [
    "ImplicitTLSServer",
    "ReactorThread",
    "TwistdServer",
    "add_config_options",
    "add_run_options",
    "client_context",
    "listener_keys",
    "parse_overrides",
    "parse_settings",
    "provisioned",
    "report",
    "run_on_reactor",
    "server_config",
    "temporary_workdir",
]

#: Our config as the benches hold it: section -> key -> value.
Config = dict[str, dict[str, Any]]


def listener_keys() -> list[str]:
    """Every listener key of our config (``section.listen`` / ``section.*_listen``), read from
    :class:`mailserver.config.Config`, so listeners added later are turned off too."""
    from mailserver.config import Config as ServerConfig

    defaults = ServerConfig()
    found = []
    for section in dataclasses.fields(ServerConfig):
        value = getattr(defaults, section.name)
        if dataclasses.is_dataclass(value):
            for key in dataclasses.fields(value):
                if key.name == "listen" or key.name.endswith("_listen"):
                    found.append(f"{section.name}.{key.name}")
    return found


def server_config(base: Config, overrides: Mapping[str, Any] | None = None) -> Config:
    """``base`` with every listener it does not set turned off (``[]``), then ``overrides``
    (``"section.key" -> value``, as :func:`parse_overrides` gives them) on top."""
    config = {section: dict(body) for section, body in base.items()}
    for dotted in listener_keys():
        section, key = dotted.split(".", 1)
        if key not in config.get(section, {}):
            config.setdefault(section, {})[key] = []
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".", 1)
        config.setdefault(section, {})[key] = value
    return config


def toml_text(config: Config) -> str:
    """``config`` as TOML (str, bool, int and list values: JSON's syntax is TOML's there)."""
    lines = []
    for section, body in config.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in body.items()]
        lines.append("")
    return "\n".join(lines)


#: The line the server logs once its start-up work (store recovery, then the consistency
#: check of every folder in the thread pool) is over: measuring before it would count that
#: work, which a peer does not do, against the first command.
SETTLED = b"start-up check done"


class TwistdServer:
    """``twistd -n --pidfile= mailserver --config`` in ``directory``, serving ``config``
    (written to ``directory/mailserver.toml``); ready when ``host:port`` accepts and the
    start-up work is over (:data:`SETTLED` in the log since this start)."""

    def __init__(self, directory: Path, config: Config, *, host: str, port: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.config = config
        self.host = host
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.config_path = directory / "mailserver.toml"
        self.config_path.write_text(toml_text(config))
        self.log_path = directory / "twistd.log"
        self.log_start = 0  # the log's size when this start began

    def spawn(self) -> None:
        """Start twistd (returns at once)."""
        twistd = str(Path(sys.executable).parent / "twistd")
        command = [twistd, "-n", "--pidfile=", "mailserver", "--config", str(self.config_path)]
        self.log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                command,
                cwd=self.directory,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the port accepts connections and the log says the start-up work is over
        (:data:`SETTLED`); RuntimeError (with the log's tail) when twistd exits first or
        ``timeout`` passes."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        accepting = False
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"mailserver exited during start-up:\n{self.log_tail()}")
            if not accepting:
                try:
                    socket.create_connection((self.host, self.port), 1.0).close()
                    accepting = True
                except OSError:
                    pass
            if accepting and self._settled():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"mailserver not ready after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.02)

    def _settled(self) -> bool:
        """Whether :data:`SETTLED` is in the log since this start (or the config logs
        nothing below warnings, so it never will be)."""
        if self.config.get("log", {}).get("level") in ("warn", "error"):
            return True
        with open(self.log_path, "rb") as log:
            log.seek(self.log_start)
            return SETTLED in log.read()

    def start(self, timeout: float = 30.0) -> None:
        """:meth:`spawn`, then :meth:`wait_ready`; a server that never gets ready is
        stopped before the error propagates (no twistd left behind)."""
        self.spawn()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait (SIGKILL after ``timeout``)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def alive(self) -> bool:
        """True while twistd runs."""
        return self.process is not None and self.process.poll() is None

    def cpu_seconds(self) -> float:
        """On-CPU seconds of every twistd thread so far (0 before it started)."""
        return process_cpu_seconds(self.process.pid) if self.process else 0.0

    def log(self) -> str:
        """What twistd wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self) -> str:
        """The last 4,000 characters of :meth:`log`."""
        return self.log()[-4000:]


class ImplicitTLSServer(TwistdServer):
    """Our server (``mail.example.org``, bcrypt cost 4, its data in ``directory/var``) with
    one listener on: ``protocol.tls_listen`` (implicit TLS, RFC 8314) on a free port of
    ``host``; ``limits`` are further keys of the ``protocol`` section."""

    def __init__(
        self,
        directory: Path,
        protocol: str,
        limits: Mapping[str, Any],
        overrides: Mapping[str, Any] | None,
        host: str = "127.0.0.1",
    ) -> None:
        self.data_dir = directory / "var"
        port = free_port(host)
        base: Config = {
            "server": {"hostname": "mail.example.org", "data_dir": str(self.data_dir)},
            "auth": {"bcrypt_cost": 4},
            protocol: {**limits, "tls_listen": [f"tcp:{port}:interface={host}"]},
        }
        super().__init__(directory, server_config(base, overrides), host=host, port=port)

    def start(self, timeout: float = 60.0) -> None:
        """Start twistd and wait (up to a minute) until the TLS port accepts connections."""
        super().start(timeout)


def client_context() -> ssl.SSLContext:
    """TLS for the bench's own client: our server's (and the peers') self-signed
    certificates are accepted unchecked."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# --- the data directory, before the server starts ---------------------------------------------


@contextlib.asynccontextmanager
async def provisioned(
    data_dir: Path,
    domain: str,
    users: Mapping[str, str],
    *,
    map_size: int = 1024 << 20,
    durable: bool = True,
) -> AsyncIterator[Any]:
    """Our index and store in ``data_dir`` with ``domain`` and ``users`` (address ->
    password, bcrypt cost 4) and their store accounts; yields the
    :class:`~mailserver.store.maildir_store.MaildirStore` for filling, closes both after.
    ``durable`` False turns index sync and store fsync off (a fill the server then serves
    with them on). Runs on the reactor."""
    from twisted.internet import reactor

    from mailserver.auth.directory import LmdbDirectory
    from mailserver.db import Database
    from mailserver.store.maildir_store import MaildirStore

    db = Database.open(str(data_dir / "index"), map_size=map_size, reactor=reactor, sync=durable)
    store = MaildirStore(db, str(data_dir / "mail"), reactor=reactor, fsync=durable)
    try:
        directory = LmdbDirectory(db, reactor=reactor, bcrypt_cost=4)
        await directory.add_domain(domain)
        for user, password in users.items():
            await directory.add_user(user, password)
            await store.create_account(user)
        yield store
    finally:
        await store.close()
        await db.close()


def run_on_reactor(work: Callable[[], Any]) -> Any:
    """Run the coroutine ``work()`` on Twisted's reactor in this thread; its result. Once
    per process (a reactor cannot be restarted)."""
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred
    from twisted.python.failure import Failure

    outcome: list[Any] = []

    def go() -> None:
        done = ensureDeferred(work())
        done.addBoth(outcome.append)
        done.addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]

    reactor.callWhenRunning(go)  # type: ignore[attr-defined]
    reactor.run(installSignalHandlers=False)  # type: ignore[attr-defined]
    if outcome and isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0] if outcome else None


class ReactorThread:
    """Twisted's reactor running in a daemon thread, for a bench's several Twisted jobs."""

    def __init__(self) -> None:
        from twisted.internet import reactor

        self.reactor: Any = reactor
        self.thread = threading.Thread(
            target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True
        )
        self.thread.start()

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` on the reactor thread; waits for its (Deferred) result."""
        from twisted.internet.threads import blockingCallFromThread

        return blockingCallFromThread(self.reactor, function, *args)

    def run(self, work: Callable[[], Any]) -> Any:
        """Run the coroutine ``work()`` on the reactor; its result."""
        from twisted.internet.defer import ensureDeferred

        return self.call(lambda: ensureDeferred(work()))

    def stop(self) -> None:
        if self.reactor.running:
            self.reactor.callFromThread(self.reactor.stop)
        self.thread.join(10)


# --- the command line and the output ----------------------------------------------------------


def add_run_options(
    parser: argparse.ArgumentParser,
    quick: str,
    json_help: str = "also write every figure and run here",
) -> None:
    """``--json PATH``, ``--quick`` (``quick`` says what it shrinks), ``--workdir DIR`` and
    ``--keep``, the options every server bench has (see :func:`temporary_workdir` and
    :func:`report`)."""
    parser.add_argument("--json", type=Path, help=json_help)
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--workdir", type=Path, help="parent of the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")


def add_config_options(parser: argparse.ArgumentParser, peer_option: str, peer_help: str) -> None:
    """``--set SECTION.KEY=VALUE`` for our config and the peer's ``peer_option KEY=VALUE``
    (see :func:`parse_overrides` and :func:`parse_settings`), both repeatable."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override our config (VALUE as JSON if it parses), e.g. --set log.level=warn",
    )
    parser.add_argument(
        peer_option, action="append", default=[], metavar="KEY=VALUE", help=peer_help
    )


def parse_overrides(items: list[str], parser: argparse.ArgumentParser) -> dict[str, Any]:
    """``--set SECTION.KEY=VALUE`` items as ``"section.key" -> value`` (VALUE as JSON when
    it parses, else the string); a malformed item is a usage error."""
    overrides: dict[str, Any] = {}
    for item in items:
        dotted, sep, raw = item.partition("=")
        if "." not in dotted or not sep:
            parser.error(f"--set wants SECTION.KEY=VALUE, got {item!r}")
        try:
            overrides[dotted] = json.loads(raw)
        except ValueError:
            overrides[dotted] = raw
    return overrides


def parse_settings(
    items: list[str], parser: argparse.ArgumentParser, option: str
) -> dict[str, str]:
    """A peer's ``KEY=VALUE`` settings (``option`` names the flag in the usage error),
    stripped, as strings."""
    settings: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"{option} wants KEY=VALUE, got {item!r}")
        settings[key.strip()] = value.strip()
    return settings


@contextlib.contextmanager
def temporary_workdir(prefix: str, parent: Path | None, keep: bool) -> Iterator[Path]:
    """A new directory ``prefix...`` in ``parent`` (the system's temporary directory when
    None), mode 0755 (the peers' daemons, Dovecot's mail processes and Postfix's virtual
    agent walk into it); removed afterwards unless ``keep``."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(workdir, 0o755)
    try:
        yield workdir
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def report(
    document: dict[str, Any], render: Callable[[dict[str, Any]], str], json_path: Path | None
) -> None:
    """The table on stdout and, with ``json_path``, every figure there (indented JSON; any
    bytes in the document decoded, undecodable bytes replaced)."""
    print(render(document))
    if json_path:
        json_path.write_text(json.dumps(document, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    raise TypeError(type(value).__name__)
