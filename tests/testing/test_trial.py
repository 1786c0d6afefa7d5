"""MailSystem works under twisted.trial: tests/testing/trial_mail_system.py passes when run
by ``python -m twisted.trial`` in a process of its own (in this pytest run the reactor
already belongs to pytest-twisted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


def test_trial_test_case_passes(tmp_path: Path) -> None:
    """trial runs the trial module's three tests and reports PASSED."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "twisted.trial",
            f"--temp-directory={tmp_path / '_trial_temp'}",
            "tests.testing.trial_mail_system",
        ],
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "PASSED (successes=3)" in output, output
