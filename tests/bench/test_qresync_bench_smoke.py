"""bench/qresync_bench.py still runs end to end (``--quick``): every line is measured on both
servers and both told the client the same changes. No timing thresholds: the numbers are
for people, not for pass/fail."""

from __future__ import annotations

import pytest

from tests.bench.quick import run_quick
from tests.peers.dovecot import unavailable_reason

REASON = unavailable_reason()
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(REASON is not None, reason=REASON or "")]



def test_quick_bench_reports_every_line_for_both_servers(tmp_path):
    """A quick run exits 0, prints every line, and writes a JSON document in which both
    servers reported exactly the expunges as VANISHED (EARLIER) and a FETCH per flagged
    message (no check notes), with positive times and ratios; no temporary directory is
    left behind."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    result, document = run_quick("qresync_bench.py", tmp_path, workdir=workdir)
    assert document["checks"] == [], document["checks"]
    rows = {row["key"]: row for row in document["results"]}
    assert tuple(rows) == ("select_qresync", "fetch_vanished", "fetch_all_flags")
    changes, messages = document["config"]["changes"], document["config"]["messages"]
    for key, row in rows.items():
        assert row["label"] in result.stdout
        assert row["ratio"] > 0, key
        for name in ("ours", "dovecot"):
            assert row[name]["seconds"] > 0, (key, name)
            wanted = messages - changes if key == "fetch_all_flags" else changes
            assert row[name]["fetches"] >= wanted, (key, name)
    assert not list(workdir.iterdir())
