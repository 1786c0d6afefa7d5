"""bench/msgauth_bench.py still runs end to end (``--quick``): every figure is there and
positive. No timing thresholds: the numbers are for people, not for pass/fail."""

from __future__ import annotations

from tests.bench.quick import run_quick


def test_quick_bench_reports_every_variant(tmp_path):
    """A quick run exits 0, prints the table and writes JSON with the machine, the config and
    a row per variant (the pyspf/dkimpy peer when pyspf is installed) with positive rates."""
    result, document = run_quick("msgauth_bench.py", tmp_path, timeout=120)
    assert "msgs/s" in result.stdout
    assert {"machine", "config", "rows", "ratios"} <= document.keys()
    assert document["machine"]["cpus"] > 0
    assert {"ours-warm", "ours-cold"} <= document["rows"].keys()
    for name, row in document["rows"].items():
        assert row["messages"] == 20
        assert row["msgs_per_sec"] > 0 and row["seconds"] > 0, (name, row)
    if "peer" in document["rows"]:
        assert all(ratio > 0 for ratio in document["ratios"].values())
