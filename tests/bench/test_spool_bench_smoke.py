"""bench/spool_bench.py still runs end to end (``--quick``): every figure is there and
positive. No timing thresholds: the numbers are for people, not for pass/fail."""

from __future__ import annotations

import pytest

from tests.bench.quick import run_quick
from tests.peers.postfix import unavailable_reason, which


def _reason() -> str | None:
    """Why the bench cannot run here (it needs a private Postfix, smtp-source, smtp-sink)."""
    reason = unavailable_reason()
    if reason is None:
        for tool in ("smtp-source", "smtp-sink"):
            if which(tool) is None:
                return f"{tool} is not installed (Debian package postfix)"
    return reason


REASON = _reason()
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

ROWS = ("ours", "postfix", "postfix/smtp-source")
THROUGHPUT = (
    "submit_seconds",
    "submitted_per_sec",
    "delivered_seconds",
    "delivered_per_sec",
    "cpu_ms_per_msg",
    "client_cpu_ms_per_msg",
)
DRAIN = (
    "fill_seconds",
    "drain_seconds",
    "msgs_per_sec",
    "first_delivery_seconds",
    "span_seconds",
    "span_msgs_per_sec",
    "cpu_ms_per_msg",
)


def test_quick_bench_reports_throughput_and_drain(tmp_path):
    """A quick run (40 relayed messages, 100 drained) exits 0, prints both tables and writes
    a JSON document in which every MTA relayed exactly what was sent, with positive figures
    and ratios, and leaves no temporary directory behind."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    result, document = run_quick("spool_bench.py", tmp_path, workdir=workdir, timeout=180)
    assert {"machine", "config", "throughput", "drain"} <= document.keys()
    assert document["machine"]["cpus"] > 0
    assert document["machine"]["postfix"]

    throughput = document["throughput"]
    assert throughput["messages"] == 40
    for name in ROWS:
        row = throughput[name]
        assert len(row["runs"]) == 1
        for key in THROUGHPUT:
            assert row[key] > 0, (name, key, row)
        assert row["sink_extra"] == 0, (name, row)  # nothing lost, nothing twice
    assert throughput["ours"]["reactor_cpu_ms_per_msg"] > 0
    for key in ("ratio_submitted", "ratio_delivered", "ratio_delivered_vs_smtp_source"):
        assert throughput[key] > 0, key
    assert throughput["cpu_ratio"] > 0

    drain = document["drain"]
    assert drain["messages"] == 100
    for name in ("ours", "postfix"):
        row = drain[name]
        assert row["messages"] == 100
        for key in DRAIN:
            assert row[key] > 0, (name, key, row)
        assert row["sink_extra"] == 0, (name, row)
    for key in ("ratio", "span_ratio", "cpu_ratio"):
        assert drain[key] > 0, key

    assert "ours/postfix (same client)" in result.stdout
    assert "drain: 100 queued messages" in result.stdout
    assert not list(workdir.iterdir())
