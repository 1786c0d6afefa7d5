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
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(out.read_text())
    assert {"machine", "config", "results"} <= document.keys()
    assert [row["size"] for row in document["results"]] == [4096, 102400]
    for row in document["results"]:
        for mta in ("ours", "postfix"):
            for key in FIGURES:
                assert row[mta][key] > 0, (mta, key, row[mta])
            assert row[mta]["messages"] == 10
        assert row["ratio"] > 0
        assert isinstance(row["target_met"], bool)
    assert "ratio ours/postfix" in result.stdout
