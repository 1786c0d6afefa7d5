"""Fixtures for the storage nouns: the installed ``mailserver`` script on a throwaway data
directory (fsync off, bcrypt cost 4, a small index).

- ``cli``: a :class:`Cli` on an empty data directory.
- ``example``: a :class:`Cli` whose data directory already serves ``example.org`` with the
  user ``alice@example.org`` (password :data:`PASSWORD`); copied from one template made once
  per session, so each test pays for its own commands only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Storage

PASSWORD = "correct horse battery"
ALICE = "alice@example.org"


def mailserver_script() -> str:
    """The installed ``mailserver`` console script of this virtualenv."""
    beside = os.path.join(os.path.dirname(sys.executable), "mailserver")
    return beside if os.path.exists(beside) else shutil.which("mailserver") or beside


class Cli:
    """Runs ``mailserver --config <root>/mailserver.toml ...`` with data in ``<root>/var``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "mailserver.toml"
        self.data = root / "var"
        self.config.write_text(
            f"[server]\ndata_dir = {json.dumps(str(self.data))}\n\n"
            "[store]\nfsync = false\nmap_size_mb = 64\n\n"
            "[auth]\nbcrypt_cost = 4\n"
        )

    def __call__(self, *args: str, input: str | bytes | None = None) -> subprocess.CompletedProcess:
        """Run one command; stdin is ``input`` (or empty, never a terminal)."""
        if input is None:
            input = b""
        if isinstance(input, str):
            input = input.encode()
        return subprocess.run(
            [mailserver_script(), "--config", str(self.config), *args],
            input=input,
            capture_output=True,
            timeout=30,
        )

    def ok(self, *args: str, input: str | bytes | None = None) -> str:
        """Run a command that must succeed; its stdout as text."""
        done = self(*args, input=input)
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode()

    def fails(self, *args: str, input: str | bytes | None = None, status: int = 1) -> str:
        """Run a command that must fail with ``status`` and one stderr line; that line."""
        done = self(*args, input=input)
        err = done.stderr.decode()
        assert done.returncode == status, (done.returncode, err)
        assert err.count("\n") == 1, err
        return err

    def maildir(self, address: str = ALICE) -> Path:
        """The INBOX maildir of ``address``."""
        local, _, domain = address.partition("@")
        return self.data / "mail" / domain / local

    def storage(self) -> Storage:
        """The data directory opened in this process (close with ``await s.aclose()``)."""
        return Storage(self.data)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture(scope="session")
def example_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    template = Cli(tmp_path_factory.mktemp("example-template"))
    template.ok("domain", "add", "example.org")
    template.ok("user", "add", ALICE, "--password-stdin", input=PASSWORD + "\n")
    return template.data


@pytest.fixture
def example(tmp_path: Path, example_template: Path) -> Cli:
    cli = Cli(tmp_path)
    shutil.copytree(example_template, cli.data)
    return cli
