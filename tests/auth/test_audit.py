"""The audit log: one JSON line per event, append-only, rotated, readable in time order."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from mailserver.auth import audit
from mailserver.auth.audit import (
    ADMIN_ACTION,
    FAILED,
    LOGIN_FAILED,
    LOGIN_OK,
    OK,
    WHERE_CLI,
    AuditLog,
    AuditRecord,
    Query,
)

MAY_1 = 1714564800.123  # 2024-05-01T12:00:00.123Z


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(MAY_1)
    return clock


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "audit" / "audit.jsonl")


def lines(path: str) -> list[dict]:
    with open(path) as source:
        return [json.loads(line) for line in source]


def test_a_record_is_one_json_line(clock, path):
    """record() appends one JSON object: ts (ISO-8601 UTC) and epoch from the clock, event,
    who, where, outcome and the remaining keywords as details."""
    log = AuditLog(path, clock)
    record = log.record(
        LOGIN_FAILED, who="alice@example.org", where="203.0.113.9", outcome=FAILED,
        service="submission", mechanism="PLAIN",
    )  # fmt: skip
    assert lines(path) == [
        {
            "ts": "2024-05-01T12:00:00.123Z",
            "epoch": MAY_1,
            "event": "login_failed",
            "who": "alice@example.org",
            "where": "203.0.113.9",
            "outcome": "failed",
            "details": {"service": "submission", "mechanism": "PLAIN"},
        }
    ]
    assert record == AuditRecord.from_json(Path(path).read_text())


def test_the_file_is_private_and_only_appended_to(clock, path):
    """The directory is created 0700 and the file 0600; existing lines are kept."""
    os.makedirs(os.path.dirname(path))
    Path(path).write_text('{"old": 1}\n')
    AuditLog(path, clock).record(ADMIN_ACTION, who="root", where=WHERE_CLI, outcome=OK)
    assert Path(path).read_text().startswith('{"old": 1}\n{"ts":')
    other = str(Path(path).parent.parent / "fresh" / "audit.jsonl")
    AuditLog(other, clock).record(ADMIN_ACTION, who=None, where=None, outcome=OK)
    assert stat.S_IMODE(os.stat(other).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(other)).st_mode) == 0o700


def test_no_terminal_control_or_huge_fields_reach_the_file(clock, path):
    """Lines are ASCII (escapes for control and non-ASCII characters) and long strings are
    cut, so a hostile user name neither injects escape sequences nor bloats the log."""
    log = AuditLog(path, clock)
    log.record(LOGIN_FAILED, who="\x1b[2Jmallory\u009b", where="x" * 5000, outcome=FAILED,
               note=["y" * 5000])  # fmt: skip
    raw = Path(path).read_bytes()
    assert raw.isascii() and b"\x1b" not in raw and raw.count(b"\n") == 1
    record = AuditRecord.from_json(raw)
    assert record.who == "\x1b[2Jmallory\u009b"
    assert len(record.where or "") == audit.MAX_FIELD
    assert len(record.details["note"][0]) == audit.MAX_FIELD


@pytest.mark.parametrize("event", ["Login Failed", "", "login\nok"])
def test_malformed_event_names_are_refused(clock, path, event):
    """Event and outcome names are [a-z0-9_.]+; anything else is a ValueError."""
    with pytest.raises(ValueError):
        AuditLog(path, clock).record(event, who=None, where=None, outcome=OK)
    with pytest.raises(ValueError):
        AuditLog(path, clock).record(LOGIN_OK, who=None, where=None, outcome=event)


def fill(log: AuditLog, clock: Clock, count: int, **details) -> None:
    for n in range(count):
        clock.advance(1)
        log.record(LOGIN_OK, who=f"u{n}@example.org", where="192.0.2.1", outcome=OK, n=n,
                   **details)  # fmt: skip


def test_rotation_renames_a_chain_and_keeps_n_files(clock, path):
    """Past max_bytes the file becomes .1, .1 becomes .2 ...; only `keep` rotated files
    stay, each at most max_bytes, and reading them gives the newest records in order."""
    log = AuditLog(path, clock, max_bytes=1000, keep=3)
    fill(log, clock, 60)
    assert audit.log_files(path) == [path + ".3", path + ".2", path + ".1", path]
    assert not os.path.exists(path + ".4")
    for name in audit.log_files(path):
        assert 0 < os.path.getsize(name) <= 1000
    numbers = [record.details["n"] for record in audit.read(path)]
    assert numbers == list(range(60 - len(numbers), 60)) and len(numbers) > 20


def test_a_line_larger_than_max_bytes_still_gets_written(clock, path):
    """A record bigger than max_bytes goes into a file of its own instead of looping."""
    log = AuditLog(path, clock, max_bytes=100, keep=2)
    fill(log, clock, 3)
    assert [r.details["n"] for r in audit.read(path)] == [0, 1, 2]


def test_two_writers_share_the_file_and_its_rotation(clock, path):
    """Two logs on one path (as server and CLI) both append, and when one rotates the other
    notices and follows the new file: no line is lost or torn."""
    first = AuditLog(path, clock, max_bytes=2000, keep=50)
    second = AuditLog(path, clock, max_bytes=2000, keep=50)
    for n in range(100):
        clock.advance(1)
        (first if n % 3 else second).record(LOGIN_OK, who=None, where=None, outcome=OK, n=n)
    assert [r.details["n"] for r in audit.read(path)] == list(range(100))
    assert len(audit.log_files(path)) > 3


def test_threads_append_whole_lines(clock, path):
    """Records from many threads at once each land as one whole line."""
    log = AuditLog(path, clock, max_bytes=5000, keep=100)

    def work(worker: int) -> None:
        for n in range(50):
            log.record(LOGIN_OK, who=f"w{worker}", where=None, outcome=OK, n=n)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bad = []
    records = list(audit.read(path, on_bad=lambda *problem: bad.append(problem)))
    assert bad == [] and len(records) == 400


WRITER = """
import sys
from mailserver.auth.audit import AuditLog
log = AuditLog(sys.argv[1], max_bytes=3000, keep=1000)
for n in range(150):
    log.record("login_ok", who=sys.argv[2], where=None, outcome="ok", n=n)
"""


def test_processes_append_and_rotate_without_losing_lines(path):
    """Three processes appending with rotation (flock) keep every line whole and in order
    per process."""
    os.makedirs(os.path.dirname(path))
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, path, f"p{n}"]) for n in range(3)]
    assert [writer.wait(timeout=30) for writer in writers] == [0, 0, 0]
    bad = []
    records = list(audit.read(path, on_bad=lambda *problem: bad.append(problem)))
    assert bad == []
    for name in ("p0", "p1", "p2"):
        assert [r.details["n"] for r in records if r.who == name] == list(range(150))


def test_read_skips_and_reports_malformed_lines(clock, path):
    """A torn or foreign line is skipped and reported with its file and line number."""
    log = AuditLog(path, clock)
    fill(log, clock, 1)
    with open(path, "a") as out:
        out.write('{"ts": "cut off\n[1, 2]\n\n{"ts": "x", "epoch": 1}\n')
    fill(log, clock, 1)
    bad: list[tuple] = []
    assert len(list(audit.read(path, on_bad=lambda *p: bad.append(p)))) == 2
    assert [(name, number) for name, number, _ in bad] == [(path, 2), (path, 3), (path, 5)]


def test_tail_spans_rotated_files(clock, path):
    """tail(n) returns the last n records across files, oldest first."""
    log = AuditLog(path, clock, max_bytes=600, keep=10)
    fill(log, clock, 30)
    assert [r.details["n"] for r in audit.tail(path, 7)] == list(range(23, 30))
    assert len(audit.tail(path, 1000)) == 30
    assert audit.tail(path, 0) == []
    assert audit.tail(str(Path(path).parent / "missing.jsonl"), 5) == []


def test_query_filters(clock, path):
    """A Query matches who and events (case-insensitive, patterns), where (an address or a
    network, IPv4-mapped addresses included), outcome and a time window."""
    log = AuditLog(path, clock)
    log.record(LOGIN_OK, who="alice@example.org", where="192.0.2.7", outcome=OK)
    clock.advance(60)
    log.record(LOGIN_FAILED, who="bob@example.net", where="::ffff:192.0.2.8", outcome=FAILED)
    clock.advance(60)
    log.record(LOGIN_FAILED, who="alice@example.org", where="2001:db8::1", outcome=FAILED)
    log.record(ADMIN_ACTION, who="root", where=WHERE_CLI, outcome=OK, action="user add")

    def found(**criteria) -> list[int]:
        records = list(audit.read(path))
        return [records.index(r) for r in audit.search(path, Query(**criteria))]

    assert found() == [0, 1, 2, 3]
    assert found(who="ALICE@example.org") == [0, 2]
    assert found(who="*@example.*") == [0, 1, 2]
    assert found(events=("login_*",), outcome="failed") == [1, 2]
    assert found(events=("ADMIN_ACTION", "login_ok")) == [0, 3]
    assert found(where="192.0.2.0/24") == [0, 1]
    assert found(where="192.0.2.8") == [1]
    assert found(where="2001:db8::/32") == [2]
    assert found(where="cli") == [3]
    assert found(since=MAY_1 + 60) == [1, 2, 3]
    assert found(since=MAY_1 + 1, until=MAY_1 + 61) == [1]
    with pytest.raises(ValueError):
        Query(where="10.0.0.0/99")


def test_follow_yields_new_records_across_a_rotation(clock, path):
    """follow() starts at the end, yields records as they are appended and carries on in
    the new file after a rotation."""
    log = AuditLog(path, clock, max_bytes=400, keep=5)
    fill(log, clock, 2, old=True)
    steps = iter(range(1000))

    def sleep(seconds: float) -> None:
        step = next(steps)
        if step == 0:
            fill(log, clock, 2)
        elif step == 1:
            fill(log, clock, 6)  # rotates at least once
        elif step > 5:
            raise StopIteration

    seen = []
    with pytest.raises(RuntimeError):  # StopIteration inside a generator
        for record in audit.follow(path, sleep=sleep, interval=0):
            seen.append(record)
    assert [r.details["n"] for r in seen] == [0, 1, 0, 1, 2, 3, 4, 5]
    assert not any(r.details.get("old") for r in seen)


def test_follow_waits_for_the_log_to_appear(clock, path):
    """Following a log that does not exist yet yields its records from the start."""
    log = AuditLog(path, clock)
    calls = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 2:
            fill(log, clock, 2)

    records = audit.follow(path, sleep=sleep, interval=0.25)
    assert [next(records).details["n"], next(records).details["n"]] == [0, 1]
    assert calls == [0.25, 0.25]


def test_from_json_rejects_foreign_objects():
    """Only objects with the record fields of the right types parse."""
    for line in ('[1]', '{"ts": 1, "epoch": 1, "event": "x", "outcome": "ok"}',
                 '{"ts": "t", "epoch": 1, "event": "x", "outcome": "ok", "details": [1]}',
                 '{"ts": "t", "epoch": "soon", "event": "x", "outcome": "ok"}'):  # fmt: skip
        with pytest.raises(ValueError):
            AuditRecord.from_json(line)


def test_submit_without_fsync_writes_at_once(clock, path):
    """submit() on the reactor thread writes before returning and gives the record."""
    log = AuditLog(path, clock)
    done = []
    log.submit(LOGIN_OK, who="alice@example.org", where="192.0.2.1", outcome=OK).addCallback(
        done.append
    )
    assert done[0].who == "alice@example.org" and len(lines(path)) == 1


def test_submit_never_fails_but_logs(clock, tmp_path):
    """A log that cannot be written gives None and a logged error, not a failed login."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    log = AuditLog(str(blocker / "audit.jsonl"), clock)
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        done = []
        log.submit(LOGIN_OK, who=None, where=None, outcome=OK).addCallback(done.append)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert done == [None]
    assert any("cannot write the audit log" in e.get("log_format", "") for e in events)
    with pytest.raises(OSError):
        log.record(LOGIN_OK, who=None, where=None, outcome=OK)


@pytest_twisted.ensureDeferred
async def test_submit_with_fsync_runs_in_the_thread_pool(path):
    """With fsync on, submit() writes and flushes in the reactor's thread pool."""
    log = AuditLog(path, reactor, fsync=True)
    caller = threading.get_ident()
    writers = []
    original = log.record

    def record(*args, **kwargs):
        writers.append(threading.get_ident())
        return original(*args, **kwargs)

    log.record = record  # type: ignore[method-assign]
    result = await log.submit(LOGIN_OK, who="alice@example.org", where=None, outcome=OK)
    assert result is not None and result.who == "alice@example.org"
    assert writers and writers[0] != caller
    assert len(lines(path)) == 1
    log.close()
