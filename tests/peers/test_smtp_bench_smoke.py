"""bench/smtp_bench.py still runs end to end (``--quick``): no timing thresholds, only that
every figure is there and positive."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.peers.postfix import unavailable_reason, which

REASON = unavailable_reason() or (None if which("smtp-source") else "smtp-source missing")
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "smtp_bench.py"
FIGURES = ("accept_seconds", "stored_seconds", "msgs_per_sec", "cpu_ms_per_msg")


def test_quick_bench_reports_both_mtas(tmp_path):
    """Every row of ours (the peer's work with one and two processes, our full defaults with
    two) and Postfix have all their figures, and each row of ours says its configuration."""
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(out.read_text())
    assert {"machine", "config", "results"} <= document.keys()
    assert [row["size"] for row in document["results"]] == [4096, 102400]
    rows = document["config"]["rows"]
    assert list(rows) == ["ours w1", "ours w2", "full w2"]
    assert document["config"]["judged"] == "ours w2"
    for name in ("ours w1", "ours w2"):
        assert rows[name]["settings"]["filter.enabled"] is False
        assert rows[name]["settings"]["msgauth.enabled"] is False
    assert "filter.enabled" not in rows["full w2"]["settings"]
    assert [rows[name]["workers"] for name in rows] == [1, 2, 2]
    for row in document["results"]:
        for mta in (*rows, "postfix"):
            for key in FIGURES:
                assert row[mta][key] > 0, (mta, key, row[mta])
            assert row[mta]["messages"] == 10
        for name in rows:
            assert row[name]["configuration"]["workers"] == rows[name]["workers"]
        assert row["judged"] == "ours w2"
        assert row["ratio"] == row["ratios"]["ours w2"]["ratio"] > 0
        assert isinstance(row["target_met"], bool)
    assert "ratio ours w2/postfix" in result.stdout
    assert "ratio full w2/postfix" in result.stdout
