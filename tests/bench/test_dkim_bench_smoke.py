"""bench/dkim_bench.py still runs (``--quick``): a row per operation and algorithm with
positive rates for ours and dkimpy. No timing thresholds: the numbers are for people."""

from __future__ import annotations

from tests.bench.quick import run_quick


def test_quick_bench_reports_every_row(tmp_path):
    result, document = run_quick("dkim_bench.py", tmp_path)
    assert document["machine"]["cpus"] > 0
    assert [(r["operation"], r["algorithm"]) for r in document["rows"]] == [
        ("sign", "rsa-sha256"), ("verify", "rsa-sha256"),
        ("sign", "ed25519-sha256"), ("verify", "ed25519-sha256"),
    ]
    for row in document["rows"]:
        assert row["ours_per_sec"] > 0 and row["dkimpy_per_sec"] > 0 and row["ratio"] > 0
    assert "ratio" in result.stdout
