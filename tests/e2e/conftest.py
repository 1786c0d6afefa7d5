"""End-to-end harness: the real ``twistd -n --pidfile= mailserver`` as a child process.

Use the ``server_process`` fixture (a factory) in tests marked ``@pytest.mark.e2e``::

    @pytest.mark.e2e
    def test_something(server_process):
        server = server_process({"store": {"fsync": True}}).start()
        status, body = server.get("/healthz")
        server.stop(signal.SIGKILL)     # crash it ...
        server.start()                  # ... and start again on the same data and ports

API of :class:`ServerProcess`:

- ``ServerProcess(directory, extra_config=None, *, listen_keys=("http.listen",),
  use_config=True)``: ``directory`` is the server's cwd; the config is written to
  ``directory/mailserver.toml`` from the harness defaults (data in ``directory/var``,
  ``auth.bcrypt_cost = 4``) deep-merged with ``extra_config`` (section -> key -> value; a
  value of ``None`` removes the key). Each dotted key in ``listen_keys`` gets one free port
  on 127.0.0.1 (kept across restarts); the other listeners of :data:`LISTENERS` are off.
  ``use_config=False`` passes no ``--config`` at all: the server runs on embedded defaults
  (``ports == {"http.listen": 8080}``).
- Attributes: ``directory``, ``config_path`` (None without a config), ``data_dir``,
  ``ports`` (dotted listen key -> port), ``process`` (the Popen or None).
- ``start(wait=True, timeout=20)``: spawn; with ``wait`` block until ready (``/healthz``
  answers 200 when HTTP is configured, else every port accepts); fails the test with the
  server's output if it exits or times out. Returns self.
- ``stop(sig=signal.SIGTERM, timeout=15) -> int``: signal and wait; the exit status
  (negative signal number when killed by a signal). ``restart(sig=SIGTERM)`` = stop + start.
- ``wait_exit(timeout=15) -> int``: wait for a process that ends on its own (bad config).
- ``stdout()``, ``stderr()``, ``output()``: everything the process(es) wrote so far (the
  files accumulate over restarts). ``url(path, key="http.listen")``, ``get(path)``.
- ``running``: True while the child is alive.

Children still alive at the end of a test are killed with SIGKILL. For type hints or direct
use: ``from tests.e2e.conftest import ServerProcess``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

TWISTD = str(Path(sys.executable).parent / "twistd")
READY_TIMEOUT = 20.0
#: Every listener key of the config; those not in ``listen_keys`` are disabled.
LISTENERS = (
    "http.listen",
    "smtp.listen",
    "submission.listen",
    "submission.tls_listen",
    "imap.listen",
    "imap.tls_listen",
    "pop3.listen",
    "pop3.tls_listen",
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, then close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago: the probes stay
    bound until all are picked, so the kernel cannot hand out one port twice (with one probe
    at a time it may, and then two listeners of one server collide)."""
    probes = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when ``host:port`` can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def toml_text(document: Mapping[str, Mapping[str, Any]]) -> str:
    """Render ``section -> key -> value`` (str, bool, int, float, list) as TOML."""
    lines = []
    for section, body in document.items():
        lines.append(f"[{section}]")
        for key, value in body.items():
            lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
        lines.append("")
    return "\n".join(lines)


def merge(base: dict[str, dict[str, Any]], extra: Mapping[str, Mapping[str, Any]] | None):
    """``base`` updated section by section with ``extra``; ``None`` values remove keys."""
    result = {section: dict(body) for section, body in base.items()}
    for section, body in (extra or {}).items():
        target = result.setdefault(section, {})
        for key, value in body.items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
    return result


class ServerProcess:
    """One mailserver under twistd in its own directory (see the module docstring)."""

    def __init__(
        self,
        directory: Path,
        extra_config: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        listen_keys: tuple[str, ...] = ("http.listen",),
        use_config: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self._stdout = self.directory / "twistd.stdout"
        self._stderr = self.directory / "twistd.stderr"
        if not use_config:
            self.config_path: Path | None = None
            self.data_dir = self.directory / "var"
            self.ports = {"http.listen": 8080}
            return
        self.ports = dict(zip(listen_keys, free_ports(len(listen_keys))))
        base: dict[str, dict[str, Any]] = {
            "server": {"hostname": "localhost", "data_dir": str(self.directory / "var")},
            "auth": {"bcrypt_cost": 4},
            # Port-25 SPF/DKIM/DMARC would ask the machine's DNS about example.* senders
            # (whose real records say p=reject); tests/e2e/test_msgauth.py turns it on with
            # a test DNS server.
            "msgauth": {"enabled": False},
            # The filter adds X-Spam-Status to every message; tests that compare stored bytes
            # do without it, and tests/e2e/test_filter.py turns it on.
            "filter": {"enabled": False},
        }
        for key in LISTENERS:  # listeners not asked for are off, so tests never collide
            section, name = key.split(".", 1)
            port = self.ports.get(key)
            endpoints = [] if port is None else [f"tcp:{port}:interface=127.0.0.1"]
            base.setdefault(section, {})[name] = endpoints
        document = merge(base, extra_config)
        self.data_dir = Path(document["server"].get("data_dir", self.directory / "var"))
        self.config_path = self.directory / "mailserver.toml"
        self.config_path.write_text(toml_text(document))

    # --- process control -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self, wait: bool = True, timeout: float = READY_TIMEOUT) -> ServerProcess:
        """Spawn the server (cwd = directory); with ``wait``, block until it is ready."""
        assert not self.running, "server already running"
        command = [TWISTD, "-n", "--pidfile=", "mailserver"]
        if self.config_path is not None:
            command += ["--config", str(self.config_path)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self._stdout, "ab") as out, open(self._stderr, "ab") as err:
            self.process = subprocess.Popen(
                command, cwd=self.directory, stdout=out, stderr=err, env=env
            )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Block until /healthz says ok (or, without HTTP, every port accepts)."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                code = self.process.returncode if self.process else None
                pytest.fail(f"mailserver exited with {code} during start-up:\n{self.output()}")
            if self._ready():
                return
            if time.monotonic() > deadline:
                pytest.fail(f"mailserver not ready after {timeout}s:\n{self.output()}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        """One readiness probe."""
        if "http.listen" in self.ports:
            try:
                return self.get("/healthz", timeout=1.0)[0] == 200
            except OSError:
                return False
        for port in self.ports.values():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            except OSError:
                return False
        return True

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig`` and wait for the exit; the exit status (-N if killed by signal N)."""
        assert self.process is not None, "server never started"
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.wait_exit(timeout)

    def wait_exit(self, timeout: float = 15.0) -> int:
        """Wait for the child to end; fails the test (after SIGKILL) on timeout."""
        assert self.process is not None, "server never started"
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"mailserver did not exit within {timeout}s:\n{self.output()}")

    def restart(self, sig: int = signal.SIGTERM, timeout: float = READY_TIMEOUT) -> int:
        """Stop with ``sig``, then start again on the same config, data and ports; the exit
        status of the stop."""
        code = self.stop(sig)
        self.start(timeout=timeout)
        return code

    def __enter__(self) -> ServerProcess:
        """``with ServerProcess(...) as server:`` stops the server at the end if it runs."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.running:
            self.stop()

    # --- what it said and serves -----------------------------------------------------------

    def stdout(self) -> str:
        """Everything written to stdout so far (the log, with ``twistd -n``)."""
        return self._stdout.read_text(errors="replace") if self._stdout.exists() else ""

    def stderr(self) -> str:
        """Everything written to stderr so far (start-up errors)."""
        return self._stderr.read_text(errors="replace") if self._stderr.exists() else ""

    def output(self) -> str:
        """stdout and stderr, labelled, for failure messages."""
        return f"--- stdout ---\n{self.stdout()}--- stderr ---\n{self.stderr()}"

    def url(self, path: str, key: str = "http.listen") -> str:
        """``http://127.0.0.1:<port><path>`` for the listener ``key``."""
        return f"http://127.0.0.1:{self.ports[key]}{path}"

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET ``path`` over HTTP; (status, body), also for 4xx/5xx answers."""
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Any]:
    """A factory ``(extra_config=None, **kwargs) -> ServerProcess``; the first server lives in
    ``tmp_path``, later ones in ``tmp_path/server-N``. Leftover children are killed."""
    made: list[ServerProcess] = []

    def make(extra_config: Mapping[str, Mapping[str, Any]] | None = None, **kwargs: Any):
        directory = tmp_path if not made else tmp_path / f"server-{len(made)}"
        server = ServerProcess(directory, extra_config, **kwargs)
        made.append(server)
        return server

    yield make
    for server in made:
        if server.running:
            server.stop(signal.SIGKILL)
