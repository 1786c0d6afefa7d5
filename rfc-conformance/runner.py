"""Parse and play plain-text protocol dialogs against a live server.

A dialog is a client/server script (see README.md in this directory for the format). This
module parses dialogs into `Dialog` objects and plays them over a blocking TCP socket, with
optional TLS, using only the standard library, so the same files can be run against our
server or against Postfix/Dovecot as a reference.

Run as a script::

    python rfc-conformance/runner.py --host 127.0.0.1 --port 2525 dialogs/smtp/*.dialog

It prints one PASS/FAIL line per dialog and exits with status 1 if any dialog failed.
"""

from __future__ import annotations

import argparse
import codecs
import ipaddress
import re
import socket
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_TIMEOUT = 5.0
"""Seconds an expectation waits for a server line (or for the close) before it fails."""

SKIP_LIMIT = 1000
"""Most lines an `s*` step skips before it gives up."""

MAX_LINE = 1024 * 1024
"""Longest server line, in bytes, the runner buffers before it reports a failure."""

PROTOCOLS = ("smtp", "imap", "pop3")
TLS_MODES = ("implicit",)
HEADER_KEYS = ("requirements", "protocol", "tls", "timeout", "description", "peers")
PEERS = ("dovecot", "postfix")
"""Reference servers a differential test may play a dialog against (see the `peers` key)."""

MISMATCHES = (
    "line differs",
    "line does not match",
    "no line within",
    "no matching line within",
    "server line not terminated",
)
"""How the reasons of an unmet expectation start (the other failures end a play)."""

SEND = "send"
SEND_RAW = "send-raw"
EXPECT = "expect"
EXPECT_MATCH = "expect-match"
SKIP_UNTIL = "skip-until"
STARTTLS = "starttls"
CLOSE = "close"

_HEADER_LINE = re.compile(r"#\s*([A-Za-z][A-Za-z0-9_-]*)\s*:(.*)")
_NO_PEERS = re.compile(r"none\s*\((.*\S.*)\)")


class DialogSyntaxError(ValueError):
    """A dialog file does not follow the format; the message names the file and line."""

    def __init__(self, path: Path | str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = Path(path)
        self.line = line
        self.message = message


@dataclass(frozen=True)
class Step:
    """One dialog line: what to send, what to expect, or a connection action.

    `kind` is one of SEND, SEND_RAW, EXPECT, EXPECT_MATCH, SKIP_UNTIL, STARTTLS, CLOSE.
    `text` is the line to send, the exact line or the regular expression to expect (empty for
    STARTTLS and CLOSE); `data` holds the bytes of a SEND_RAW step. `line` is the 1-based line
    number in the dialog file.
    """

    kind: str
    text: str
    line: int
    data: bytes = b""

    def describe(self) -> str:
        """Return the step as it is written in the dialog file."""
        prefix = {
            SEND: "c: ",
            SEND_RAW: "c! ",
            EXPECT: "s: ",
            EXPECT_MATCH: "s~ ",
            SKIP_UNTIL: "s* ",
            STARTTLS: "c<: starttls",
            CLOSE: "close",
        }[self.kind]
        return prefix + self.text


@dataclass(frozen=True)
class Dialog:
    """A parsed dialog: its header metadata and its steps in order.

    `metadata` maps each header key to its value (repeated `requirements` lines are joined
    with a space); `metadata_lines` maps each key to the line where it first appears.
    """

    path: Path
    steps: tuple[Step, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    metadata_lines: dict[str, int] = field(default_factory=dict)

    @property
    def protocol(self) -> str:
        """Return the protocol the dialog speaks: smtp, imap or pop3."""
        return self.metadata["protocol"]

    @property
    def requirements(self) -> tuple[str, ...]:
        """Return the requirement ids the dialog proves, in the order written."""
        return tuple(self.metadata.get("requirements", "").replace(",", " ").split())

    @property
    def tls(self) -> str | None:
        """Return "implicit" if the connection starts with a TLS handshake, else None."""
        return self.metadata.get("tls")

    @property
    def peers(self) -> tuple[str, ...] | None:
        """Return the reference servers named in the `peers` header (empty for `none`), or
        None when the header does not restrict them."""
        value = self.metadata.get("peers")
        if value is None:
            return None
        if _NO_PEERS.fullmatch(value):
            return ()
        return tuple(value.replace(",", " ").split())

    def plays_against(self, peer: str) -> bool:
        """Return True if a differential test should play this dialog against `peer`."""
        return self.peers is None or peer in self.peers

    @property
    def timeout(self) -> float | None:
        """Return the per-expectation timeout set in the header, or None for the default."""
        value = self.metadata.get("timeout")
        return float(value) if value is not None else None


@dataclass(frozen=True)
class Result:
    """The outcome of playing one dialog.

    On failure, `step` is the step that failed (None when the connection could not be
    opened), `reason` says what went wrong, and `expected`/`got` hold the expectation and
    what the server sent instead, when those apply.
    """

    dialog: Dialog
    passed: bool
    step: Step | None = None
    reason: str = ""
    expected: str | None = None
    got: str | None = None

    @property
    def line(self) -> int | None:
        """Return the dialog line number of the failing step, or None."""
        return self.step.line if self.step is not None else None

    def summary(self) -> str:
        """Return one human-readable line: PASS or FAIL with the location and the reason."""
        if self.passed:
            return f"PASS {self.dialog.path}"
        where = str(self.dialog.path)
        if self.line is not None:
            where += f":{self.line}"
        detail = self.reason
        if self.expected is not None or self.got is not None:
            detail += f": expected {self.expected!r}, got {self.got!r}"
        return f"FAIL {where}: {detail}"


def parse_dialog(path: Path | str) -> Dialog:
    """Read and parse the dialog file at `path`; raise DialogSyntaxError if it is malformed."""
    path = Path(path)
    return parse_dialog_text(path.read_text(encoding="utf-8"), path)


def parse_dialog_text(text: str, path: Path | str = "<dialog>") -> Dialog:
    """Parse dialog source `text`, naming `path` in errors; raise DialogSyntaxError if malformed.

    Header lines (`# key: value`) are recognised only before the first step; later `#` lines
    and blank lines are comments. The header must name a protocol, and `close` may only be
    the last step.
    """
    path = Path(path)
    metadata: dict[str, str] = {}
    metadata_lines: dict[str, int] = {}
    steps: list[Step] = []
    for number, raw in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        if not raw.strip():
            continue
        if raw.startswith("#"):
            if not steps:
                _parse_header_line(raw, number, path, metadata, metadata_lines)
            continue
        if steps and steps[-1].kind == CLOSE:
            raise DialogSyntaxError(path, number, "no step may follow 'close'")
        steps.append(_parse_step(raw, number, path))
    if "protocol" not in metadata:
        raise DialogSyntaxError(path, 1, "missing header line '# protocol: smtp|imap|pop3'")
    if not steps:
        raise DialogSyntaxError(path, 1, "dialog has no steps")
    return Dialog(path, tuple(steps), metadata, metadata_lines)


def _parse_header_line(
    raw: str, number: int, path: Path, metadata: dict[str, str], lines: dict[str, int]
) -> None:
    """Record a `# key: value` header line in `metadata`; leave free-text comments alone."""
    match = _HEADER_LINE.fullmatch(raw)
    if match is None:
        return
    key, value = match.group(1).lower(), match.group(2).strip()
    if key not in HEADER_KEYS:
        raise DialogSyntaxError(
            path, number, f"unknown header key {key!r} (known: {', '.join(HEADER_KEYS)})"
        )
    if key in metadata and key != "requirements":
        raise DialogSyntaxError(path, number, f"header key {key!r} given twice")
    if key == "protocol" and value not in PROTOCOLS:
        raise DialogSyntaxError(
            path, number, f"protocol must be one of {', '.join(PROTOCOLS)}, not {value!r}"
        )
    if key == "tls" and value not in TLS_MODES:
        raise DialogSyntaxError(path, number, f"tls must be 'implicit', not {value!r}")
    if key == "peers" and not _NO_PEERS.fullmatch(value):
        names = value.replace(",", " ").split()
        if not names or any(name not in PEERS for name in names):
            raise DialogSyntaxError(
                path, number, f"peers must name {', '.join(PEERS)} or be 'none (<reason>)'"
            )
    if key == "timeout":
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not seconds > 0:
            raise DialogSyntaxError(path, number, f"timeout must be positive seconds: {value!r}")
    if key in metadata:
        metadata[key] = f"{metadata[key]} {value}"
    else:
        metadata[key] = value
        lines[key] = number


def _parse_step(raw: str, number: int, path: Path) -> Step:
    """Parse one non-comment dialog line into a Step."""
    if raw in ("c:", "s:"):
        return Step(SEND if raw == "c:" else EXPECT, "", number)
    marker, _, rest = raw.partition(" ")
    if marker == "c:":
        return Step(SEND, rest, number)
    if marker == "s:":
        return Step(EXPECT, rest, number)
    if marker == "c!":
        try:
            data = codecs.escape_decode(rest.encode("utf-8"))[0]
        except ValueError as error:
            raise DialogSyntaxError(path, number, f"bad escape in raw send: {error}") from None
        return Step(SEND_RAW, rest, number, data)
    if marker in ("s~", "s*"):
        if not rest:
            raise DialogSyntaxError(path, number, f"{marker} needs a regular expression")
        try:
            re.compile(rest)
        except re.error as error:
            raise DialogSyntaxError(path, number, f"bad regular expression: {error}") from None
        return Step(EXPECT_MATCH if marker == "s~" else SKIP_UNTIL, rest, number)
    if marker == "c<:":
        if rest.strip().lower() != "starttls":
            raise DialogSyntaxError(path, number, f"unknown connection action {rest!r}")
        return Step(STARTTLS, "", number)
    if raw.strip() == "close":
        return Step(CLOSE, "", number)
    raise DialogSyntaxError(path, number, f"unknown step {raw!r}")


class _Closed(Exception):
    """The server closed the connection while the runner was reading."""


class _Connection:
    """A blocking socket with a line buffer; every read has its own deadline."""

    def __init__(
        self,
        sock: socket.socket,
        transcript: list[bytes] | None = None,
        trace: list[tuple[str, int, bytes]] | None = None,
    ) -> None:
        self.sock = sock
        self.buffer = b""
        self.transcript = transcript
        self.trace = trace
        self.step_line = 0

    def send(self, data: bytes) -> None:
        """Send all of `data`."""
        if self.trace is not None:
            self.trace.append(("c", self.step_line, data))
        self.sock.sendall(data)

    def read_line(self, timeout: float) -> bytes:
        """Return the next line (see `_read_line`) and append it to the transcript, if any."""
        line = self._read_line(timeout)
        if self.transcript is not None:
            self.transcript.append(line)
        if self.trace is not None:
            self.trace.append(("s", self.step_line, line))
        return line

    def _read_line(self, timeout: float) -> bytes:
        """Return the next line including its terminator (or a final unterminated fragment).

        Raise TimeoutError if no full line arrives within `timeout` seconds and _Closed if
        the server closed the connection with nothing left to read.
        """
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE:
                line, self.buffer = self.buffer, b""
                return line
            chunk = self._recv(deadline)
            if not chunk:
                if self.buffer:
                    line, self.buffer = self.buffer, b""
                    return line
                raise _Closed()
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"

    def wait_closed(self, timeout: float) -> bytes:
        """Wait for the server to close; return b"" if it did, else the first data it sent."""
        if self.buffer:
            return self.buffer
        return self._recv(time.monotonic() + timeout)

    def _recv(self, deadline: float) -> bytes:
        """Receive some bytes before `deadline` (b"" once the server has closed or reset).

        Raise TimeoutError once the deadline has passed.
        """
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError()
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError):
            return b""

    def start_tls(self, server_name: str | None, timeout: float) -> None:
        """Wrap the socket in TLS without verifying the server's certificate."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.sock.settimeout(timeout)
        self.sock = context.wrap_socket(self.sock, server_hostname=server_name)

    def close(self) -> None:
        """Close the socket, ignoring errors."""
        try:
            self.sock.close()
        except OSError:
            pass


def _server_name(host: str) -> str | None:
    """Return `host` for use as the TLS server name, or None if it is an IP address."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None


def _show(line: bytes) -> str:
    """Return a server line without its CRLF, decoded for matching and display."""
    return line.removesuffix(b"\r\n").decode("utf-8", "backslashreplace")


def play(
    dialog: Dialog,
    host: str,
    port: int,
    timeout: float = DEFAULT_TIMEOUT,
    server_name: str | None = None,
    transcript: list[bytes] | None = None,
    trace: list[tuple[str, int, bytes]] | None = None,
    lenient: bool = False,
    continuation: str | None = None,
) -> Result:
    """Play `dialog` against host:port and return the Result; never raise for server faults.

    `timeout` is the per-expectation timeout unless the dialog's header sets one.
    `server_name` is sent as TLS SNI (default: `host` unless it is an IP address).
    Every server line must end with CRLF; a bare LF is a failure. If `transcript` is given,
    every server line the dialog reads (skipped ones too) is appended to it as received,
    terminator included, for a differential test to compare. If `trace` is given, it gets
    `("c", line, bytes)` for everything sent and `("s", line, bytes)` for every server line
    read, `line` being the dialog line of the step that sent or read it.

    `lenient` is for playing a dialog against a reference server in a differential test: an
    expectation that is not met (a line that differs, or no matching line before the timeout)
    no longer ends the play; the next step runs. The Result is then the first unmet
    expectation (its reason starts with one of MISMATCHES), unless something ended the play
    (the connection closed, a TLS handshake failed): that is returned instead. With
    `continuation` (a regex, e.g. `\\d{3}-.*` for SMTP), the lines that continue a response
    whose first line did not meet an `s:` or `s~` expectation are read by that step too, so
    that the next step starts at the next response.
    """
    timeout = dialog.timeout or timeout
    tls_name = server_name if server_name is not None else _server_name(host)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as error:
        return Result(dialog, False, None, f"cannot connect to {host}:{port}: {error}")
    connection = _Connection(sock, transcript, trace)
    try:
        if dialog.tls == "implicit":
            try:
                connection.start_tls(tls_name, timeout)
            except (OSError, ssl.SSLError) as error:
                return Result(dialog, False, dialog.steps[0], f"TLS handshake failed: {error}")
        unmet: Result | None = None
        for step in dialog.steps:
            connection.step_line = step.line
            failure = _run_step(connection, dialog, step, timeout, tls_name)
            if failure is not None:
                if lenient and failure.reason.startswith(MISMATCHES):
                    unmet = unmet or failure
                    if continuation is not None and step.kind in (EXPECT, EXPECT_MATCH):
                        _finish_response(connection, failure.got, re.compile(continuation), timeout)
                    continue
                return failure
        return unmet or Result(dialog, True)
    finally:
        connection.close()


def _finish_response(
    connection: _Connection, got: str | None, continuation: re.Pattern[str], timeout: float
) -> None:
    """Read the rest of a response whose last line read (`got`) continues it."""
    while got is not None and continuation.fullmatch(got):
        try:
            got = _show(connection.read_line(timeout))
        except (TimeoutError, _Closed, OSError):
            return


def _run_step(
    connection: _Connection, dialog: Dialog, step: Step, timeout: float, tls_name: str | None
) -> Result | None:
    """Perform one step; return a failing Result, or None if the step succeeded."""
    if step.kind in (SEND, SEND_RAW):
        data = step.data if step.kind == SEND_RAW else step.text.encode("utf-8") + b"\r\n"
        try:
            connection.send(data)
        except OSError as error:
            return Result(dialog, False, step, f"send failed: {error}")
        return None
    if step.kind == STARTTLS:
        if connection.buffer:
            return Result(
                dialog,
                False,
                step,
                "server sent data before the TLS handshake",
                expected="<nothing>",
                got=_show(connection.buffer),
            )
        try:
            connection.start_tls(tls_name, timeout)
        except (OSError, ssl.SSLError) as error:
            return Result(dialog, False, step, f"TLS handshake failed: {error}")
        return None
    if step.kind == CLOSE:
        try:
            data = connection.wait_closed(timeout)
        except TimeoutError:
            return Result(
                dialog,
                False,
                step,
                f"connection still open after {timeout:g}s",
                expected="<connection closed>",
                got="<timeout>",
            )
        except OSError as error:
            return Result(dialog, False, step, f"read failed: {error}")
        if data:
            return Result(
                dialog,
                False,
                step,
                "server sent data instead of closing",
                expected="<connection closed>",
                got=_show(data.split(b"\n", 1)[0] + b"\n"),
            )
        return None
    return _expect(connection, dialog, step, timeout)


def _expect(connection: _Connection, dialog: Dialog, step: Step, timeout: float) -> Result | None:
    """Read server lines for an EXPECT, EXPECT_MATCH or SKIP_UNTIL step and judge them."""
    pattern = re.compile(step.text) if step.kind != EXPECT else None
    limit = SKIP_LIMIT if step.kind == SKIP_UNTIL else 1
    got: str | None = None
    for _ in range(limit):
        try:
            raw = connection.read_line(timeout)
        except TimeoutError:
            return Result(
                dialog,
                False,
                step,
                f"no line within {timeout:g}s",
                expected=step.text,
                got=got if got is not None else "<timeout>",
            )
        except _Closed:
            return Result(
                dialog,
                False,
                step,
                "server closed the connection",
                expected=step.text,
                got="<connection closed>",
            )
        except OSError as error:
            return Result(dialog, False, step, f"read failed: {error}", expected=step.text)
        got = _show(raw)
        if not raw.endswith(b"\r\n"):
            return Result(
                dialog,
                False,
                step,
                "server line not terminated by CRLF",
                expected=step.text,
                got=raw.decode("utf-8", "backslashreplace"),
            )
        if pattern is None:
            if got == step.text:
                return None
        elif pattern.fullmatch(got):
            return None
        if step.kind != SKIP_UNTIL:
            reason = "line differs" if step.kind == EXPECT else "line does not match"
            return Result(dialog, False, step, reason, expected=step.text, got=got)
    return Result(
        dialog,
        False,
        step,
        f"no matching line within {SKIP_LIMIT} lines",
        expected=step.text,
        got=got,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI: play each dialog, print one PASS/FAIL line each; return 1 on any failure."""
    parser = argparse.ArgumentParser(description="Play protocol dialogs against a live server.")
    parser.add_argument("dialogs", nargs="+", type=Path, help="dialog files to play")
    parser.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="plain-text port")
    parser.add_argument(
        "--tls-port", type=int, help="port for dialogs with '# tls: implicit' (default: --port)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds per expectation unless the dialog sets one (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument("--server-name", help="TLS SNI name (default: --host unless an address)")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.dialogs:
        try:
            dialog = parse_dialog(path)
        except (OSError, DialogSyntaxError) as error:
            print(f"FAIL {error}")
            failed += 1
            continue
        port = args.tls_port if dialog.tls == "implicit" and args.tls_port else args.port
        result = play(dialog, args.host, port, args.timeout, args.server_name)
        print(result.summary())
        failed += not result.passed
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
