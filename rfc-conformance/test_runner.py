"""Tests for runner.py: parsing dialogs, and playing them against a tiny line server on loopback."""

import datetime
import socketserver
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import runner
from runner import DialogSyntaxError, main, parse_dialog, parse_dialog_text, play


class LineHandler(socketserver.StreamRequestHandler):
    """A scripted line server: greets, then answers one reply per command line."""

    def handle(self):
        if self.server.implicit_tls:
            self._wrap()
        self._send("220 test.example ready")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            verb, _, argument = line.rstrip(b"\r\n").decode().partition(" ")
            if verb == "EHLO":
                self._send("250-test.example", "250-PIPELINING", "250-SIZE 1000", "250 HELP")
            elif verb == "NOOP":
                self._send("250 2.0.0 ok")
            elif verb == "ECHO":
                self._send(argument)
            elif verb == "BARELF":
                self.request.sendall(argument.encode() + b"\n")
            elif verb == "SILENT":
                pass
            elif verb == "TLS?":
                self._send("250 tls" if isinstance(self.request, ssl.SSLSocket) else "250 plain")
            elif verb == "INJECT":
                self._send("220 go ahead", "250 injected")
                self._wrap()
            elif verb == "STARTTLS":
                self._send("220 go ahead")
                self._wrap()
            elif verb == "QUIT":
                self._send("221 bye")
                return
            else:
                self._send("500 unknown command")

    def _send(self, *lines):
        self.request.sendall(b"".join(line.encode() + b"\r\n" for line in lines))

    def _wrap(self):
        self.request = self.server.tls_context.wrap_socket(self.request, server_side=True)
        self.rfile = self.request.makefile("rb")


class LineServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, tls_context=None, implicit_tls=False):
        super().__init__(("127.0.0.1", 0), LineHandler)
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls


def serve(tls_context=None, implicit_tls=False) -> Iterator[tuple[str, int]]:
    """Run a LineServer on an ephemeral loopback port for the duration of a fixture."""
    server = LineServer(tls_context, implicit_tls)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[:2]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory):
    """A server TLS context with a freshly made self-signed certificate."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    (directory / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


@pytest.fixture
def server():
    """The (host, port) of a plain-text LineServer."""
    yield from serve()


@pytest.fixture
def tls_server(tls_context):
    """The (host, port) of a LineServer offering STARTTLS."""
    yield from serve(tls_context)


@pytest.fixture
def implicit_tls_server(tls_context):
    """The (host, port) of a LineServer that starts every connection with a TLS handshake."""
    yield from serve(tls_context, implicit_tls=True)


def write(tmp_path: Path, text: str, name: str = "t.dialog") -> Path:
    """Write a dialog file (with a protocol header) and return its path."""
    path = tmp_path / name
    path.write_text("# protocol: smtp\n# requirements: 5321-4.2-a\n" + text)
    return path


def run(tmp_path, address, text, **kwargs):
    """Parse the dialog `text` and play it against `address`."""
    return play(parse_dialog(write(tmp_path, text)), *address, **kwargs)


GREETING = "s: 220 test.example ready\n"


def test_passing_dialog(tmp_path, server):
    """A dialog whose every expectation is met passes."""
    result = run(tmp_path, server, GREETING + "c: NOOP\ns: 250 2.0.0 ok\nc: QUIT\ns: 221 bye\n")
    assert result.passed, result.summary()
    assert result.summary() == f"PASS {tmp_path / 't.dialog'}"


def test_failing_exact_expectation_reports_line_expected_and_got(tmp_path, server):
    """An exact expectation that differs fails at its line, with what was expected and got."""
    result = run(tmp_path, server, GREETING + "c: NOOP\n\n# a comment\ns: 250 2.0.0 OK\n")
    assert not result.passed
    assert result.line == 7
    assert (result.expected, result.got) == ("250 2.0.0 OK", "250 2.0.0 ok")
    assert result.summary() == (
        f"FAIL {tmp_path / 't.dialog'}:7: line differs: expected '250 2.0.0 OK', got '250 2.0.0 ok'"
    )


def test_regex_expectation_must_match_the_whole_line(tmp_path, server):
    """An `s~` expectation passes on a full regex match and fails on a partial one."""
    assert run(tmp_path, server, r"s~ 220 \S+ ready" + "\n").passed
    result = run(tmp_path, server, "s~ 220 test\n")
    assert not result.passed
    assert result.reason == "line does not match"
    assert result.got == "220 test.example ready"


def test_skip_passes_over_multiline_reply(tmp_path, server):
    """An `s*` step skips continuation lines until the matching last line of a reply."""
    text = GREETING + "c: EHLO me\ns* 250 .*\nc: NOOP\ns: 250 2.0.0 ok\n"
    result = run(tmp_path, server, text)
    assert result.passed, result.summary()


def test_skip_gives_up_at_its_cap(tmp_path, server, monkeypatch):
    """An `s*` step fails once it has read SKIP_LIMIT lines without a match."""
    monkeypatch.setattr(runner, "SKIP_LIMIT", 2)
    result = run(tmp_path, server, GREETING + "c: EHLO me\ns* 250 HELP\n")
    assert not result.passed
    assert result.line == 5
    assert result.reason == "no matching line within 2 lines"
    assert result.got == "250-PIPELINING"


def test_close_expectation_passes_when_server_closes(tmp_path, server):
    """A `close` step passes when the server closes the connection after QUIT."""
    assert run(tmp_path, server, GREETING + "c: QUIT\ns: 221 bye\nclose\n").passed


def test_close_expectation_fails_when_connection_stays_open(tmp_path, server):
    """A `close` step fails when the server keeps the connection open past the timeout."""
    result = run(tmp_path, server, GREETING + "close\n", timeout=0.2)
    assert not result.passed
    assert result.reason == "connection still open after 0.2s"
    assert result.line == 4


def test_close_expectation_fails_when_server_sends_data(tmp_path, server):
    """A `close` step fails, showing the line, when the server sends data instead of closing."""
    result = run(tmp_path, server, "close\n")
    assert not result.passed
    assert (result.expected, result.got) == ("<connection closed>", "220 test.example ready")


def test_expectation_fails_when_server_closes(tmp_path, server):
    """An expectation fails when the server closes the connection instead of replying."""
    result = run(tmp_path, server, GREETING + "c: QUIT\ns: 221 bye\ns: 250 more\n")
    assert not result.passed
    assert result.got == "<connection closed>"


def test_expectation_times_out(tmp_path, server):
    """An expectation fails after the dialog's header timeout when the server stays silent."""
    result = run(tmp_path, server, "# timeout: 0.2\n" + GREETING + "c: SILENT\ns: 250 ok\n")
    assert not result.passed
    assert result.reason == "no line within 0.2s"
    assert result.got == "<timeout>"


def test_bare_lf_from_server_fails(tmp_path, server):
    """A server line ending in a bare LF fails even when its text matches."""
    result = run(tmp_path, server, GREETING + "c: BARELF hello\ns: hello\n")
    assert not result.passed
    assert result.reason == "server line not terminated by CRLF"


def test_raw_send_decodes_escapes_and_appends_nothing(tmp_path, server):
    """A `c!` step sends its escaped bytes verbatim, so one step may carry several lines."""
    text = GREETING + r"c! ECHO a\r\nECHO b\r\n" + "\ns: a\ns: b\n"
    assert run(tmp_path, server, text).passed


def test_starttls_upgrades_the_connection(tmp_path, tls_server):
    """A `c<: starttls` step performs a TLS handshake on the open connection."""
    text = (
        GREETING + "c: TLS?\ns: 250 plain\nc: STARTTLS\ns: 220 go ahead\nc<: starttls\n"
        "c: TLS?\ns: 250 tls\nc: QUIT\ns: 221 bye\nclose\n"
    )
    result = run(tmp_path, tls_server, text)
    assert result.passed, result.summary()


def test_starttls_fails_on_data_sent_before_handshake(tmp_path, tls_server):
    """A `c<: starttls` step fails when the server sent more than its STARTTLS reply."""
    text = GREETING + "c: INJECT\ns: 220 go ahead\nc<: starttls\n"
    result = run(tmp_path, tls_server, text)
    assert not result.passed
    assert result.line == 6
    assert (result.reason, result.got) == (
        "server sent data before the TLS handshake",
        "250 injected",
    )


def test_implicit_tls_starts_with_handshake(tmp_path, implicit_tls_server):
    """A dialog with `# tls: implicit` talks TLS from the first byte."""
    result = run(
        tmp_path, implicit_tls_server, "# tls: implicit\n" + GREETING + "c: TLS?\ns: 250 tls\n"
    )
    assert result.passed, result.summary()


def test_unreachable_server_fails_without_line(tmp_path):
    """Playing against a closed port fails with a connect error and no line number."""
    with socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler) as closed:
        address = closed.server_address[:2]
    result = run(tmp_path, address, GREETING)
    assert not result.passed
    assert result.line is None
    assert result.reason.startswith(f"cannot connect to 127.0.0.1:{address[1]}")


def test_parse_reads_header_and_steps():
    """Parsing yields the header metadata and one step per non-comment line, with line numbers."""
    dialog = parse_dialog_text(
        "# A free comment: fine.\n# protocol: imap\n# requirements: 3501-6.1.1-a,\n"
        "# requirements: 3501-6.1.1-b\n# tls: implicit\n# timeout: 2.5\n\n"
        "s~ \\* OK .*\nc: a1 CAPABILITY\ns* a1 OK .*\nc<: starttls\nc:\nc! x\\r\\n\nclose\n",
        "x.dialog",
    )
    assert dialog.protocol == "imap"
    assert dialog.requirements == ("3501-6.1.1-a", "3501-6.1.1-b")
    assert (dialog.tls, dialog.timeout) == ("implicit", 2.5)
    assert dialog.metadata_lines["requirements"] == 3
    assert [(step.kind, step.line) for step in dialog.steps] == [
        (runner.EXPECT_MATCH, 8),
        (runner.SEND, 9),
        (runner.SKIP_UNTIL, 10),
        (runner.STARTTLS, 11),
        (runner.SEND, 12),
        (runner.SEND_RAW, 13),
        (runner.CLOSE, 14),
    ]
    assert dialog.steps[5].data == b"x\r\n"
    assert [step.describe() for step in dialog.steps[:2]] == ["s~ \\* OK .*", "c: a1 CAPABILITY"]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("# protocol: smtp\nc: EHLO x\nS: 250 ok\n", 3, "unknown step 'S: 250 ok'"),
        ("# protocol: smtp\ns~ 250 (\n", 2, "bad regular expression"),
        ("# protocol: smtp\nc<: tls\n", 2, "unknown connection action 'tls'"),
        ("# protocol: smtp\nclose\nc: QUIT\n", 3, "no step may follow 'close'"),
        ("# protocol: lmtp\nc: QUIT\n", 1, "protocol must be one of smtp, imap, pop3"),
        ("# protocol: smtp\n# requirement: 5321-4.2-a\nc: QUIT\n", 2, "unknown header key"),
        ("# protocol: smtp\n# timeout: soon\nc: QUIT\n", 2, "timeout must be positive"),
        ("# protocol: imap\n# peers: cyrus\nc: a LOGOUT\n", 2, "peers must name dovecot"),
        ("# protocol: imap\n# peers: none\nc: a LOGOUT\n", 2, "or be 'none (<reason>)'"),
        ("# protocol: imap\n# peers: none ()\nc: a LOGOUT\n", 2, "or be 'none (<reason>)'"),
        ("c: QUIT\n", 1, "missing header line '# protocol"),
        ("# protocol: smtp\n", 1, "dialog has no steps"),
    ],
)
def test_parse_error_names_file_and_line(text, line, message):
    """A malformed dialog raises DialogSyntaxError naming the file and the offending line."""
    with pytest.raises(DialogSyntaxError) as raised:
        parse_dialog_text(text, "bad.dialog")
    assert raised.value.line == line
    assert str(raised.value).startswith(f"bad.dialog:{line}: ")
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("header", "peers", "dovecot"),
    [
        ("", None, True),
        ("# peers: dovecot\n", ("dovecot",), True),
        ("# peers: postfix\n", ("postfix",), False),
        ("# peers: none (our own error texts)\n", (), False),
    ],
)
def test_peers_header_says_which_reference_servers_play_the_dialog(header, peers, dovecot):
    """`peers` is optional: absent, every reference server plays the dialog; `none (...)`
    (with a reason) excludes all of them; otherwise only the servers named."""
    dialog = parse_dialog_text(f"# protocol: imap\n{header}c: a LOGOUT\n", "p.dialog")
    assert dialog.peers == peers
    assert dialog.plays_against("dovecot") is dovecot


def test_transcript_records_every_line_read_including_skipped_ones(tmp_path, server):
    """With `transcript`, every server line the dialog read is kept, CRLF included."""
    transcript: list[bytes] = []
    text = GREETING + "c: EHLO x\ns* 250 HELP\nc: ECHO last\ns: last\n"
    result = run(tmp_path, server, text, transcript=transcript)
    assert result.passed, result.summary()
    assert transcript == [
        b"220 test.example ready\r\n",
        b"250-test.example\r\n",
        b"250-PIPELINING\r\n",
        b"250-SIZE 1000\r\n",
        b"250 HELP\r\n",
        b"last\r\n",
    ]


def test_trace_records_both_directions_by_dialog_line(tmp_path, server):
    """With `trace`, what was sent and each line read is kept with the line of its step."""
    trace: list[tuple[str, int, bytes]] = []
    text = GREETING + "c: EHLO x\ns* 250 HELP\nc! NOOP\\r\\n\ns~ 250 .*\n"
    result = run(tmp_path, server, text, trace=trace)
    assert result.passed, result.summary()
    lines = {
        number: step.line for number, step in enumerate(parse_dialog(tmp_path / "t.dialog").steps)
    }
    greeting, ehlo, skip, noop, reply = (lines[n] for n in range(5))
    assert trace == [
        ("s", greeting, b"220 test.example ready\r\n"),
        ("c", ehlo, b"EHLO x\r\n"),
        ("s", skip, b"250-test.example\r\n"),
        ("s", skip, b"250-PIPELINING\r\n"),
        ("s", skip, b"250-SIZE 1000\r\n"),
        ("s", skip, b"250 HELP\r\n"),
        ("c", noop, b"NOOP\r\n"),
        ("s", reply, b"250 2.0.0 ok\r\n"),
    ]


def test_lenient_play_goes_on_past_unmet_expectations(tmp_path, server):
    """A lenient play reports the first unmet expectation but plays every step: a wrong
    line, a skip that times out, and (with `continuation`) the rest of a multi-line reply
    read by the step whose first line was wrong."""
    text = (
        GREETING
        + "c: EHLO x\ns~ 250 single\n"  # the EHLO reply is 4 lines; the rest goes with it
        + "c: NOOP\ns: 250 2.0.0 different\n"
        + "c: NOOP\ns* 999 .*\n"  # skips the reply, then waits in vain
        + "c: ECHO last\ns: last\n"
    )
    trace: list[tuple[str, int, bytes]] = []
    result = run(
        tmp_path, server, text, timeout=0.5, trace=trace, lenient=True, continuation=r"\d{3}-.*"
    )
    assert not result.passed
    assert result.reason == "line does not match" and result.got == "250-test.example"
    steps = {step.line: step for step in parse_dialog(tmp_path / "t.dialog").steps}
    read = [(steps[line].describe(), data) for kind, line, data in trace if kind == "s"]
    assert read == [
        ("s: 220 test.example ready", b"220 test.example ready\r\n"),
        ("s~ 250 single", b"250-test.example\r\n"),
        ("s~ 250 single", b"250-PIPELINING\r\n"),
        ("s~ 250 single", b"250-SIZE 1000\r\n"),
        ("s~ 250 single", b"250 HELP\r\n"),
        ("s: 250 2.0.0 different", b"250 2.0.0 ok\r\n"),
        ("s* 999 .*", b"250 2.0.0 ok\r\n"),
        ("s: last", b"last\r\n"),
    ]


def test_lenient_play_stops_when_the_server_closes(tmp_path, server):
    """A closed connection still ends a lenient play, and is what it returns."""
    text = GREETING + "c: NOOP\ns: 250 other\nc: QUIT\ns: 221 bye\ns: more\n"
    result = run(tmp_path, server, text, timeout=0.5, lenient=True)
    assert result.reason == "server closed the connection" and result.step.text == "more"


def test_cli_prints_one_line_per_dialog_and_fails_on_any_failure(tmp_path, server, capsys):
    """The CLI prints PASS/FAIL per dialog and exits non-zero if one failed or did not parse."""
    good = write(tmp_path, GREETING, "good.dialog")
    bad = write(tmp_path, "s: 220 other\n", "bad.dialog")
    broken = tmp_path / "broken.dialog"
    broken.write_text("c: QUIT\n")
    port = str(server[1])
    assert main(["--host", "127.0.0.1", "--port", port, str(good)]) == 0
    assert capsys.readouterr().out == f"PASS {good}\n"
    assert main(["--port", port, str(good), str(bad), str(broken)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"PASS {good}",
        f"FAIL {bad}:3: line differs: expected '220 other', got '220 test.example ready'",
        f"FAIL {broken}:1: missing header line '# protocol: smtp|imap|pop3'",
    ]
