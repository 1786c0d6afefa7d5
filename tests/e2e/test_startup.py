"""Start-up and shut-down of the real ``twistd -n mailserver`` process."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat

import pytest

pytestmark = pytest.mark.e2e


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_defaults_without_config(server_process):
    """With no config file the server makes ./var and a self-signed certificate, serves
    /healthz on 127.0.0.1:8080, reuses the certificate on the next start and stops cleanly
    on SIGTERM."""
    if not port_is_free(8080):
        pytest.skip("127.0.0.1:8080 is in use on this machine; the embedded default needs it")
    server = server_process(use_config=False).start()
    status, body = server.get("/healthz")
    assert status == 200
    document = json.loads(body)
    assert document["status"] == "ok"
    assert set(document) == {"status", "version", "schema_version"}
    assert isinstance(document["schema_version"], int)
    cert = server.directory / "var" / "tls" / "cert.pem"
    key = server.directory / "var" / "tls" / "key.pem"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    first = (cert.read_bytes(), key.read_bytes())

    assert server.restart() == 0
    assert (cert.read_bytes(), key.read_bytes()) == first
    assert server.get("/healthz")[0] == 200
    assert server.stop() == 0
    assert "Traceback" not in server.output()


def test_sigterm_exits_cleanly_within_timeout(server_process):
    """SIGTERM stops listening, closes storage, logs a clean shutdown and exits 0 in time
    ("stopped cleanly" is logged only when everything closed within shutdown_timeout)."""
    server = server_process({"server": {"shutdown_timeout": 5.0}}).start()
    assert server.stop(signal.SIGTERM) == 0
    log = server.stdout()
    assert log.index("shutting down") < log.index("mailserver stopped cleanly")
    assert "Traceback" not in server.output()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.ports["http.listen"]), timeout=1).close()


def test_restart_after_sigkill(server_process):
    """After kill -9 the server starts again on the same data directory and ports."""
    server = server_process().start()
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    server.start()
    assert server.get("/healthz")[0] == 200
    assert server.stop() == 0


def test_bad_config_one_line_no_traceback(server_process):
    """An unknown key ends start-up non-zero with exactly one error line naming the key."""
    server = server_process({"server": {"hostnme": "x"}}).start(wait=False)
    assert server.wait_exit() != 0
    lines = [line for line in server.stderr().splitlines() if line.strip()]
    assert lines == ["config error: server.hostnme: unknown key (did you mean 'server.hostname'?)"]
    assert "Traceback" not in server.output()


def test_port_in_use_one_line(server_process):
    """A listener address already in use ends start-up with one line naming http.listen."""
    server = server_process()
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", server.ports["http.listen"]))
        holder.listen()
        server.start(wait=False)
        assert server.wait_exit() == 2
    lines = [line for line in server.stderr().splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("config error: http.listen: cannot listen on")
    assert "Traceback" not in server.output()


def test_json_log_format(server_process):
    """With [log] format = "json" every log record on stdout is a JSON object."""
    server = server_process({"log": {"format": "json", "level": "warn"}}).start()
    assert server.stop() == 0
    records = [r for r in server.stdout().split("\x1e") if r.strip()]
    events = [json.loads(r) for r in records]
    assert all(isinstance(e, dict) for e in events)
    # level = "warn" filters out the info-level start-up and shut-down lines
    assert not any(e.get("log_namespace") == "mailserver.service" for e in events)
