"""The public modules type-check cleanly with mypy and the mypy-zope plugin.

The public surface is the packages an embedder imports (``mailserver.interfaces``,
``mailserver.types``, ``mailserver.errors``, ``mailserver.smtp``, ``mailserver.imap``,
``mailserver.pop3``, ``mailserver.testing``, ``mailserver.testing_pytest``) and every module a
name they export is defined in, so a factory re-exported by a package ``__init__`` is checked
where it lives. mypy reads
its settings from setup.cfg's ``[mypy]`` section (the zope plugin, ``disallow_untyped_defs``,
and ``follow_imports = silent``: private modules they import are analysed for their types,
but their own errors are not this test's business).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: What an embedder imports; each is checked together with the modules its names come from.
PUBLIC_MODULES = (
    "mailserver.interfaces",
    "mailserver.types",
    "mailserver.errors",
    "mailserver.smtp",
    "mailserver.imap",
    "mailserver.pop3",
    "mailserver.testing",
    "mailserver.testing_pytest",
    # public by reference: the parser whose results MessageInfo documents (tests/test_public_api)
    "mailserver.message.mime",
)

#: The protocol factories, checked even while a package ``__init__`` does not re-export them.
FACTORY_MODULES = (
    "mailserver.smtp.factory",
    "mailserver.imap.factory",
    "mailserver.pop3.factory",
)


def _exported_names(module: ModuleType) -> list[str]:
    """``__all__``, or else every public name that one of the module's own submodules
    defines (a helper a module merely imports is not part of its surface)."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    inside = module.__name__ + "."
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and (_home(value) or "").startswith(inside)
    ]


def _home(value: object) -> str | None:
    """The module a public name is defined in, when it is one of ours."""
    home = getattr(value, "__module__", None)
    if isinstance(home, str) and (home == "mailserver" or home.startswith("mailserver.")):
        return home
    return None


def public_modules() -> list[str]:
    """The public modules, their submodules when they are packages, and the home module of
    every name they export, sorted."""
    found: set[str] = set(PUBLIC_MODULES) | set(FACTORY_MODULES)
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for exported in _exported_names(module):
            value = getattr(module, exported, None)
            if isinstance(value, ModuleType):
                home = value.__name__ if value.__name__.startswith("mailserver.") else None
            else:
                home = _home(value)
            if home is not None:
                found.add(home)
    return sorted(found)


def mypy_command(modules: list[str], cache_dir: Path) -> list[str]:
    """The mypy run this test makes (the same settings as ``.venv/bin/mypy`` in the
    checkout, which reads setup.cfg)."""
    command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "setup.cfg")]
    command += ["--cache-dir", str(cache_dir), "--no-error-summary", "--show-error-codes"]
    for module in modules:
        command += ["-m", module]
    return command


def test_public_surface_is_found() -> None:
    """The module list covers each public package and the three protocol factories, and
    every entry imports (a typo would make mypy check nothing)."""
    modules = public_modules()
    for name in PUBLIC_MODULES + FACTORY_MODULES:
        assert name in modules
    for name in modules:
        importlib.import_module(name)


def test_mypy_with_the_zope_plugin_is_clean_on_the_public_modules(tmp_path: Path) -> None:
    """mypy (mypy-zope plugin, disallow_untyped_defs) reports no error in any public module;
    on failure the assertion message is mypy's own output."""
    pytest.importorskip("mypy", reason="mypy not installed (pip install -e '.[test]')")
    pytest.importorskip("mypy_zope", reason="mypy-zope not installed (pip install -e '.[test]')")
    command = mypy_command(public_modules(), tmp_path / "mypy-cache")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    report = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, f"mypy found errors:\n{report}\n\ncommand: {' '.join(command)}"
    assert "error" not in report.lower(), report
