"""bench/pop3_bench.py still runs end to end (``--quick``): every line is measured on both
servers and both gave the right answers. No timing thresholds: the numbers are for people,
not for pass/fail."""

from __future__ import annotations

import pytest

from tests.bench.quick import run_quick
from tests.peers.dovecot import unavailable_reason

REASON = unavailable_reason(pop3=True)
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

LINES = ("login_stat", "uidl", "list", "retr", "retr_concurrent")
MESSAGES, LOGINS, LISTINGS = 100, 3, 2  # --quick


def test_quick_bench_reports_every_line_for_both_servers(tmp_path):
    """A quick run exits 0, prints a table row per line, and writes a JSON document in which
    both servers gave the right answers in the first pass (STAT, LIST sizes, distinct UIDLs,
    every message RETR'd byte for byte), every line has one positive time, a rate and a
    ratio per server, every message was retrieved in both RETR lines, and no temporary
    directory is left behind."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    result, document = run_quick("pop3_bench.py", tmp_path, workdir=workdir)
    assert document["machine"]["dovecot"]
    assert document["config"]["messages"] == MESSAGES
    assert document["checks"] == [], document["checks"]
    for name in ("ours", "dovecot"):
        first = document["first_pass"][name]
        assert first["list"]["sizes_match"] and first["uidl"]["ids_distinct"], name
        assert first["retr"]["retr_wrong"] == first["retr_concurrent"]["retr_wrong"] == 0

    rows = {row["key"]: row for row in document["results"]}
    assert tuple(rows) == LINES
    expected = {
        "login_stat": LOGINS,
        "uidl": MESSAGES * LISTINGS,
        "list": MESSAGES * LISTINGS,
        "retr": MESSAGES,
        "retr_concurrent": MESSAGES,
    }
    for key, row in rows.items():
        for name in ("ours", "dovecot"):
            measured = row[name]
            assert len(measured["runs"]) == 1
            assert measured["seconds"] > 0, (key, name)
            assert measured["per_second"] > 0, (key, name)
            assert measured["count"] == expected[key], (key, name)
        assert row["ratio"] > 0, key
        assert row["label"] in result.stdout
    total = document["config"]["bytes"]
    for key in ("retr", "retr_concurrent"):
        for name in ("ours", "dovecot"):
            assert rows[key][name]["bytes"] >= total, (key, name)  # dot-stuffing adds a few
    assert "MB/s" in result.stdout
    assert not list(workdir.iterdir())
