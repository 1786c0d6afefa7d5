"""bench/dkim_bench.py still runs (``--quick``): a row per operation and algorithm with
positive rates for ours and dkimpy. No timing thresholds: the numbers are for people."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "dkim_bench.py"


def test_quick_bench_reports_every_row(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(out.read_text())
    assert document["machine"]["cpus"] > 0
    assert [(r["operation"], r["algorithm"]) for r in document["rows"]] == [
        ("sign", "rsa-sha256"), ("verify", "rsa-sha256"),
        ("sign", "ed25519-sha256"), ("verify", "ed25519-sha256"),
    ]
    for row in document["rows"]:
        assert row["ours_per_sec"] > 0 and row["dkimpy_per_sec"] > 0 and row["ratio"] > 0
    assert "ratio" in result.stdout
