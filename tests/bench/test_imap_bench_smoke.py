"""bench/imap_bench.py still runs end to end (``--quick``): every line is measured on both
servers, both gave the same answers, and the memory line is there. No timing thresholds: the
numbers are for people, not for pass/fail."""

from __future__ import annotations

import pytest

from tests.bench.quick import run_quick
from tests.peers.dovecot import unavailable_reason

REASON = unavailable_reason()
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

LINES = (
    "select_cold",
    "select_warm",
    "fetch_flags",
    "fetch_headers",
    "fetch_bodystructure",
    "search_subject",
    "search_body",
    "store_add",
    "store_remove",
    "random_fetch",
)
MESSAGES = 300  # --quick
FETCH_LINES = ("fetch_flags", "fetch_headers", "fetch_bodystructure", "store_add", "store_remove")


def test_quick_bench_reports_every_line_for_both_servers(tmp_path):
    """A quick run exits 0, prints the table with every line, and writes a JSON document in
    which both servers answered every line alike (one FETCH response per message, the same
    SEARCH hits, every random BODY[] fetch answered), with positive times and ratios, a memory
    figure per idle connection for both, and no temporary directory left behind."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    result, document = run_quick("imap_bench.py", tmp_path, workdir=workdir)
    assert document["machine"]["dovecot"]
    assert document["config"]["messages"] == MESSAGES
    assert document["checks"] == [], document["checks"]  # same sizes, order, counts, hits

    rows = {row["key"]: row for row in document["results"]}
    assert tuple(rows) == LINES
    for key, row in rows.items():
        for name in ("ours", "dovecot"):
            measured = row[name]
            assert len(measured["runs"]) == 1
            assert measured["seconds"] > 0, (key, name)
            if key in FETCH_LINES:
                assert measured["fetches"] == MESSAGES, (key, name)
        assert row["ratio"] > 0, key
        assert row["label"] in result.stdout
    assert rows["search_subject"]["ours"]["hits"] == rows["search_subject"]["dovecot"]["hits"]
    assert rows["search_body"]["ours"]["hits"] == rows["search_body"]["dovecot"]["hits"]
    clients, fetches = document["config"]["clients"], document["config"]["fetches"]
    for name in ("ours", "dovecot"):
        assert rows["random_fetch"][name]["fetches"] == clients * fetches
        assert rows["random_fetch"][name]["literal_bytes"] > 0
        memory = document["memory"][name]
        assert memory["connections"] == 10
        assert memory["after_kib"]["rss"] > 0
    assert "memory per idle logged-in connection" in result.stdout
    assert "target (within 2x of Dovecot" in result.stdout
    assert not list(workdir.iterdir())
