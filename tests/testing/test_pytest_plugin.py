"""The pytest plugin without pytest-twisted: tests/testing/sync_mail_system.py (plain
functions, blocking clients, the reactor in a thread) passes in a pytest of its own with
``-p no:twisted -p mailserver.testing_pytest``, and the process ends (the plugin stops its
reactor thread)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


def test_plain_pytest_with_the_plugin(tmp_path: Path) -> None:
    """Both plain tests pass."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:twisted",
            "-p",
            "mailserver.testing_pytest",
            "-p",
            "no:cacheprovider",
            f"--basetemp={tmp_path / 'basetemp'}",
            "tests/testing/sync_mail_system.py",
        ],
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "2 passed" in output, output
