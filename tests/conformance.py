"""The conformance dialogs of ``rfc-conformance/`` and the runner that plays them, for the
in-process dialog tests of each protocol.

Design rule: ``rfc-conformance/`` is a directory, not a package, so its ``runner.py`` is
imported by path, once per process, under one module name that every test shares.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

CONFORMANCE = Path(__file__).resolve().parents[1] / "rfc-conformance"


def dialogs(protocol: str) -> list[Path]:
    """The dialog files of ``protocol`` (``smtp``, ``imap``, ``pop3``), sorted by name."""
    return sorted((CONFORMANCE / "dialogs" / protocol).glob("*.dialog"))


def load_runner() -> Any:
    """Import rfc-conformance/runner.py by path (the directory is not a package)."""
    name = "rfc_conformance_runner"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, CONFORMANCE / "runner.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module
