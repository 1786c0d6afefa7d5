"""``mailserver audit tail|search``: readable lines, filters, one-line errors, --follow."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from mailserver.auth.audit import (
    ADMIN_ACTION,
    FAILED,
    LOGIN_FAILED,
    LOGIN_OK,
    OK,
    WHERE_CLI,
    AuditLog,
)
from mailserver.cli.audit import format_record, parse_when
from mailserver.cli.main import main
from mailserver.cli.storage import CommandError
from tests.cli.conftest import mailserver_script


class Setup:
    """A config whose data directory holds an audit log written on a clock near now."""

    def __init__(self, root: Path, audit_log: str = "") -> None:
        self.config = root / "mailserver.toml"
        text = f"[server]\ndata_dir = {json.dumps(str(root / 'var'))}\n"
        if audit_log:
            text += f"[security]\naudit_log = {json.dumps(audit_log)}\n"
        self.config.write_text(text)
        self.path = audit_log or str(root / "var" / "audit" / "audit.jsonl")
        self.clock = Clock()
        self.clock.advance(time.time() - 7200)
        self.log = AuditLog(self.path, self.clock)

    def run(self, capsys, *args: str) -> tuple[int, str, str]:
        status = main(["--config", str(self.config), "audit", *args])
        out, err = capsys.readouterr()
        return status, out, err

    def history(self) -> None:
        """Two hours ago alice logged in; an hour later bob failed twice; now root acted."""
        self.log.record(LOGIN_OK, who="alice@example.org", where="192.0.2.7", outcome=OK,
                        service="imap")  # fmt: skip
        self.clock.advance(3600)
        for _ in range(2):
            self.log.record(LOGIN_FAILED, who="bob@example.org", where="2001:db8::5",
                            outcome=FAILED, service="submission", mechanism="PLAIN")  # fmt: skip
        self.clock.advance(3590)
        self.log.record(ADMIN_ACTION, who="root", where=WHERE_CLI, outcome=OK,
                        action="user add", target="carol@example.org")  # fmt: skip


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    setup = Setup(tmp_path)
    setup.history()
    return setup


def test_tail_prints_the_latest_records_readably(setup, capsys):
    """tail -n 2 prints the last two records, oldest first: time, event, who, where, outcome,
    details."""
    status, out, err = setup.run(capsys, "tail", "-n", "2")
    assert (status, err) == (0, "")
    first, second = out.splitlines()
    assert first.split()[2:] == [
        "login_failed", "bob@example.org", "2001:db8::5", "failed",
        "service=submission", "mechanism=PLAIN",
    ]  # fmt: skip
    assert first.split()[1].endswith("Z")
    assert second.split()[2:6] == ["admin_action", "root", "cli", "ok"]
    assert second.endswith('action="user add" target=carol@example.org')


def test_tail_json_prints_the_stored_lines(setup, capsys):
    """--json prints the stored JSON objects."""
    status, out, _ = setup.run(capsys, "tail", "--json")
    assert status == 0
    assert [json.loads(line)["event"] for line in out.splitlines()] == [
        "login_ok", "login_failed", "login_failed", "admin_action",
    ]  # fmt: skip


def test_missing_log_is_one_line_naming_the_path(tmp_path, capsys):
    """Without an audit log yet, tail and search fail in one line naming the path and the
    [security] audit_log key."""
    setup = Setup(tmp_path)
    for verb in ("tail", "search"):
        status, out, err = setup.run(capsys, verb)
        assert (status, out) == (1, "")
        assert err.count("\n") == 1
        assert setup.path in err and "[security] audit_log" in err


@pytest.mark.parametrize(
    ("options", "events"),
    [
        ((), ["login_ok", "login_failed", "login_failed", "admin_action"]),
        (("--who", "BOB@example.org"), ["login_failed", "login_failed"]),
        (("--event", "login_*", "--outcome", "ok"), ["login_ok"]),
        (("--event", "admin_action", "--event", "LOGIN_OK"), ["login_ok", "admin_action"]),
        (("--where", "2001:db8::/32"), ["login_failed", "login_failed"]),
        (("--where", "192.0.2.7"), ["login_ok"]),
        (("--where", "cli"), ["admin_action"]),
        (("--since", "90m"), ["login_failed", "login_failed", "admin_action"]),
        (("--since", "3h", "--until", "30m"), ["login_ok", "login_failed", "login_failed"]),
        (("--since", "1m", "--outcome", "failed"), []),
    ],
)
def test_search_filters(setup, capsys, options, events):
    """search prints the records matching every filter given, oldest first."""
    status, out, _ = setup.run(capsys, "search", "--json", *options)
    assert status == 0
    assert [json.loads(line)["event"] for line in out.splitlines()] == events


def test_search_since_an_iso_time(setup, capsys):
    """--since also takes an ISO-8601 time (UTC when it has no zone)."""
    recent = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 300))
    status, out, _ = setup.run(capsys, "search", "--since", recent)
    assert status == 0 and len(out.splitlines()) == 1 and "admin_action" in out
    assert parse_when("2024-05-01T12:00:00Z", 0, "--since") == 1714564800
    assert parse_when("2024-05-01", 0, "--since") == 1714521600


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (("--since", "yesterday"), "--since 'yesterday' is not a duration (30m, 2h, 7d)"),
        (("--where", "10.0.0.0/99"), "--where '10.0.0.0/99' is not a network"),
        (("--outcome", "maybe"), "--outcome 'maybe' is unknown; use one of ok, failed"),
    ],
)
def test_bad_filters_fail_in_one_line(setup, capsys, options, expected):
    """A filter that cannot be understood is one error line saying what to write."""
    status, out, err = setup.run(capsys, "search", *options)
    assert (status, out) == (1, "")
    assert err.count("\n") == 1 and err.startswith(f"error: {expected}")


def test_configured_path_is_used(tmp_path, capsys):
    """[security] audit_log moves the log."""
    setup = Setup(tmp_path, audit_log=str(tmp_path / "elsewhere" / "log.jsonl"))
    setup.log.record(LOGIN_OK, who="alice@example.org", where="192.0.2.1", outcome=OK)
    status, out, _ = setup.run(capsys, "tail")
    assert status == 0 and "alice@example.org" in out


def test_malformed_lines_give_one_note(setup, capsys):
    """Malformed lines are skipped with one note on stderr naming the first one."""
    with open(setup.path, "a") as out:
        out.write("garbage\nmore garbage\n")
    status, out, err = setup.run(capsys, "search")
    assert status == 0 and len(out.splitlines()) == 4
    assert err == f"note: skipped 2 malformed line(s), first at {setup.path}:5; " + (
        "the log may have been edited or cut by a crash\n"
    )


def test_readable_lines_escape_terminal_control(setup):
    """A hostile name cannot put escape sequences on the admin's terminal."""
    record = setup.log.record(LOGIN_FAILED, who="\x1b[2Jevil\u009b", where="192.0.2.1",
                              outcome=FAILED, note="a\nb")  # fmt: skip
    line = format_record(record)
    assert line.isprintable()
    assert "\\x1b[2Jevil\\x9b" in line and 'note="a\\nb"' in line


def test_negative_count_is_refused(setup, capsys):
    """tail -n -1 is one error line."""
    status, _, err = setup.run(capsys, "tail", "-n", "-1")
    assert status == 1 and "give a count" in err


def test_parse_when_rejects_nonsense():
    """parse_when raises CommandError for text that is neither a duration nor a time."""
    with pytest.raises(CommandError):
        parse_when("5 parsecs", 0, "--since")
    assert parse_when("1.5h", 10_000, "--since") == 10_000 - 5400


def test_follow_prints_new_records(setup):
    """tail --follow prints the latest records, then each new one as it is written."""
    follower = subprocess.Popen(
        [mailserver_script(), "--config", str(setup.config), "audit", "tail", "-n", "1",
         "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert "admin_action" in follower.stdout.readline()
        setup.log.record(LOGIN_OK, who="dave@example.org", where="192.0.2.9", outcome=OK)
        assert "dave@example.org" in follower.stdout.readline()
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        follower.stdout.close()
        follower.stderr.close()
