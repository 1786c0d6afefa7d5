"""Run one benchmark script with ``--quick --json`` the way every smoke test does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def run_quick(
    script: str, tmp_path: Path, *, workdir: Path | None = None, timeout: float = 300
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run ``bench/<script> --quick --json`` (with ``--workdir`` when given); fail the test
    with its output unless it exits 0; return the process and its JSON document."""
    out = tmp_path / "bench.json"
    command = [sys.executable, str(BENCH_DIR / script), "--quick", "--json", str(out)]
    if workdir is not None:
        command += ["--workdir", str(workdir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads(out.read_text())
