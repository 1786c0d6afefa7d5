"""bench/fuzz still runs: every harness accepts its own seeds, and the runner fuzzes a
harness for a second with either engine, reports its inputs and exits 0. No timing
thresholds, and no crash expected: a crash found here is a parser bug for
tests/regressions/test_fuzz_*.py."""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.fuzz import HARNESSES
from bench.fuzz.harness import Target, pieces

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", HARNESSES)
def test_every_harness_passes_its_seeds(name):
    """Each harness module exposes a Target named after it whose seeds all pass: the seeds
    are valid inputs the parser must keep accepting."""
    target = importlib.import_module(f"bench.fuzz.{name}").TARGET
    assert isinstance(target, Target) and target.name == name
    assert target.seeds
    for seed in target.seeds:
        target.one_input(seed)
    target.one_input(b"")


def test_pieces_keeps_every_byte():
    """pieces() cuts the data without losing or reordering a byte."""
    data = bytes(range(50))
    assert b"".join(pieces(data, b"\x03\x40\x07")) == data
    assert pieces(b"", b"\x01") == [b""]


ENGINES = ["hypothesis"] + (["atheris"] if importlib.util.find_spec("atheris") else [])


@pytest.mark.parametrize("engine", ENGINES)
def test_runner_reports_a_short_run(tmp_path, engine):
    """``python -m bench.fuzz --seconds 1 --only utf7 --grow 8192`` exits 0 and reports the
    harness with some inputs run, a corpus, the grown inputs' pass and no crash, in its table
    and in its JSON."""
    out = tmp_path / "fuzz.json"
    command = [sys.executable, "-m", "bench.fuzz", "--seconds", "1", "--only", "utf7",
               "--engine", engine, "--workdir", str(tmp_path), "--json", str(out),
               "--grow", "8192"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = json.loads(out.read_text())
    assert (row["harness"], row["engine"], row["crash"], row["status"]) == (
        "utf7",
        engine,
        "",
        0,
    )
    assert row["runs"] > 0 and row["corpus"] > 0
    assert row["grown_status"] == 0 and row["grown"] > 0 and row["slowest"] >= 0
    assert "utf7" in result.stdout
