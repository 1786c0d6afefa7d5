"""bench/store_bench.py still runs end to end (``--quick``): every figure is there and
positive. No timing thresholds: the numbers are for people, not for pass/fail."""

from __future__ import annotations

from tests.bench.quick import run_quick

TARGETS = ("ours", "stdlib", "durable")


def test_quick_bench_reports_deliveries_and_listing(tmp_path):
    """A quick run (50 deliveries, 500 listed) exits 0, prints the table and writes a JSON
    document with the machine, the config, a delivery row per concurrency with positive
    rates and ratios for ours and both peers, and the listing figures."""
    result, document = run_quick("store_bench.py", tmp_path, workdir=tmp_path, timeout=120)
    assert {"machine", "config", "delivery", "listing"} <= document.keys()
    assert document["machine"]["cpus"] > 0
    assert document["machine"]["python"]

    assert [row["concurrency"] for row in document["delivery"]] == [1, 32]
    for row in document["delivery"]:
        for name in TARGETS:
            figures = row[name]
            assert figures["messages"] == 50
            assert figures["msgs_per_sec"] > 0, (name, figures)
            assert figures["seconds"] > 0, (name, figures)
            assert figures["cpu_ms_per_msg"] >= 0, (name, figures)
        assert row["ratio_vs_stdlib"] > 0
        assert row["ratio_vs_durable"] > 0

    listing = document["listing"]
    assert listing["messages"] == 500
    assert listing["fill_appended"] + listing["fill_copied"] == 500
    for key in ("ours_cold_seconds", "ours_warm_seconds", "peer_seconds"):
        assert listing[key] > 0, (key, listing)
    assert listing["ratio_cold"] > 0
    assert listing["ratio_warm"] > 0

    assert "ours/durable" in result.stdout
    assert "listing the flags of 500 messages" in result.stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("store-bench-")]
