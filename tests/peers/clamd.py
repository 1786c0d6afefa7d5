"""A private, throwaway ClamAV ``clamd`` on the test signature database.

Debian's ``clamav-daemon`` must be installed; it ships no signatures and ``freshclam`` cannot
reach its mirrors here or in CI, so the instance loads ``../shared/clamav-test-db`` (beside the
checkout; see ``shared/corpus/CLAMAV.md``): EICAR by MD5/SHA-256 and a marker string, all
reported as ``Mailserver.Test.*.UNOFFICIAL``. Nothing of the system's clamd is touched::

    with ClamdInstance(database) as clamd:
        clamd.unix_address   # "unix:/tmp/clamd-peer-XXXX/clamd.sock"
        clamd.tcp_address    # "tcp:127.0.0.1:<free port>"

How it is run:

- One fresh directory (in the system temp directory, so the socket path stays well under
  the 108-byte ``sun_path`` limit) holds ``clamd.conf``, the socket, pid file, log and
  ``TemporaryDirectory``. No ``User`` line: clamd keeps the invoking uid (root in CI) and can
  read the database and write the directory.
- ``clamd -c CONF`` runs in the foreground as our child (``Foreground yes``); it is ready when
  ``PING`` answers ``PONG`` on the socket (polled for at most ``timeout`` seconds; on this
  database loading takes well under a second).
- :meth:`ClamdInstance.stop` sends our child SIGTERM, waits, SIGKILLs it if it lingers, and
  removes the directory. clamd processes are never looked up by name.

``stream_max_length`` is clamd's ``StreamMaxLength`` (small by default here, so a test can
cross it cheaply). The :func:`clamd_peer` fixture (session-scoped; registered for
``tests/filter`` by its ``conftest.py``) runs one instance for the whole run and skips, with
the reason, when clamd or the test database is absent.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

from tests.conftest import shared_dir
from tests.peers.postfix import SEARCH_PATH, free_port

#: The two halves of the 68-byte EICAR test file (joined at run time, never stored whole).
EICAR_HALVES = ("X5O!P%@AP[4\\PZX54(P^)7CC)7}$", "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")
#: A string the test database's body signature matches anywhere (Mailserver.Test.Marker).
MARKER = b"MAILSERVER-CLAMAV-TEST-MARKER-8d1f4c2a"
#: Every name the test database reports starts with this.
NAME_PREFIX = "Mailserver.Test."


def eicar() -> bytes:
    """The EICAR test file (68 bytes)."""
    data = "".join(EICAR_HALVES).encode("ascii")
    assert len(data) == 68
    return data


class ClamdUnavailable(RuntimeError):
    """clamd cannot be run here (not installed, no test database, or it failed to start)."""


def which(command: str) -> str | None:
    """``command`` on PATH or in the usual sbin directories."""
    return shutil.which(command, path=SEARCH_PATH)


def unavailable_reason(database: Path | None) -> str | None:
    """Why a private clamd cannot run here, or ``None`` when it can."""
    if which("clamd") is None:
        return "clamd is not installed (apt-get install clamav-daemon)"
    if database is None or not database.is_dir():
        return "the ClamAV test database ../shared/clamav-test-db is absent"
    if not any(database.glob("*.[hn]db")) and not any(database.glob("*.hsb")):
        return f"no signature files in {database}"
    return None


class ClamdInstance:
    """One private clamd (see the module docstring): a context manager, or :meth:`start`
    and (always) :meth:`stop`. Listens on a unix socket and on ``host`` (TCP, free port)."""

    def __init__(
        self,
        database: Path,
        *,
        host: str = "127.0.0.1",
        stream_max_length: str = "1M",
    ) -> None:
        reason = unavailable_reason(database)
        if reason:
            raise ClamdUnavailable(reason)
        self.database = database.resolve()
        self.root = Path(tempfile.mkdtemp(prefix="clamd-peer-"))
        self.host = host
        self.port = free_port(host)
        self.stream_max_length = stream_max_length
        self.config_path = self.root / "clamd.conf"
        self.socket_path = self.root / "clamd.sock"
        self.log_path = self.root / "clamd.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._final_log = ""

    @property
    def unix_address(self) -> str:
        return f"unix:{self.socket_path}"

    @property
    def tcp_address(self) -> str:
        return f"tcp:{self.host}:{self.port}"

    def config_text(self) -> str:
        return "\n".join(
            [
                "# A private test instance: tests/peers/clamd.py",
                "Foreground yes",
                f"DatabaseDirectory {self.database}",
                f"LocalSocket {self.socket_path}",
                "LocalSocketMode 660",
                f"TCPSocket {self.port}",
                f"TCPAddr {self.host}",
                f"PidFile {self.root / 'clamd.pid'}",
                f"LogFile {self.log_path}",
                "LogTime yes",
                f"TemporaryDirectory {self.root / 'tmp'}",
                "ScanMail yes",
                f"StreamMaxLength {self.stream_max_length}",
                "SelfCheck 0",
                "",
            ]
        )

    def start(self, timeout: float = 60.0) -> ClamdInstance:
        """Write the config, start clamd and wait until it answers PING."""
        try:
            (self.root / "tmp").mkdir()
            self.config_path.write_text(self.config_text())
            self.process = subprocess.Popen(
                [which("clamd") or "clamd", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + timeout
            while not self.ping():
                if self.process.poll() is not None:
                    raise ClamdUnavailable(
                        f"clamd exited with {self.process.returncode}:\n{self.log_text()}"
                    )
                if time.monotonic() > deadline:
                    raise ClamdUnavailable(
                        f"clamd did not answer PING within {timeout}s:\n{self.log_text()}"
                    )
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def ping(self) -> bool:
        """True when clamd answers ``PING`` on the unix socket (a blocking probe, 1 s)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(1.0)
                probe.connect(str(self.socket_path))
                probe.sendall(b"zPING\0")
                return probe.recv(16) == b"PONG\0"
        except OSError:
            return False

    def stop(self, timeout: float = 20.0) -> None:
        """Stop our clamd child (SIGTERM, then SIGKILL) and remove the directory. Idempotent."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self.root.exists():
            self._final_log = self.log_text()
            shutil.rmtree(self.root, ignore_errors=True)

    def log_text(self) -> str:
        """Everything clamd logged so far (kept in memory after :meth:`stop`)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return self._final_log

    def __enter__(self) -> ClamdInstance:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def signature_database() -> Path | None:
    """``../shared/clamav-test-db`` beside the checkout, when present."""
    shared = shared_dir()
    return shared / "clamav-test-db" if shared is not None else None


@pytest.fixture(scope="session")
def clamd_peer() -> Iterator[ClamdInstance]:
    """One running private clamd for the session (unix socket and TCP on 127.0.0.1,
    ``StreamMaxLength 1M``); skips when clamd or the test database is absent."""
    database = signature_database()
    reason = unavailable_reason(database)
    if reason or database is None:
        pytest.skip(reason or "no test database")
    with ClamdInstance(database) as instance:
        yield instance
