"""The twistd plugin: ``twistd --help`` lists ``mailserver`` and its options parse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TWISTD = Path(sys.executable).parent / "twistd"
ROOT = Path(__file__).resolve().parents[1]


def test_twistd_lists_mailserver():
    """``twistd --help`` names the mailserver plugin."""
    out = subprocess.run(
        [str(TWISTD), "--help"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert any(line.split()[:1] == ["mailserver"] for line in out.splitlines())


def test_no_init_above_the_plugin():
    """No ``__init__.py`` in twisted/ or twisted/plugins/: it would hide Twisted's plugins."""
    assert not (ROOT / "twisted" / "__init__.py").exists()
    assert not (ROOT / "twisted" / "plugins" / "__init__.py").exists()


def test_mailserver_plugin_help():
    """``twistd mailserver --help`` documents --config."""
    out = subprocess.run(
        [str(TWISTD), "mailserver", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "--config" in out
