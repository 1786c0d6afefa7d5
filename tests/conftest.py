"""Shared fixtures: the real providers (maildir + LMDB) and the in-memory ones."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from mailserver.auth.directory import LmdbDirectory
from mailserver.db import Database
from mailserver.store.maildir_store import MaildirStore
from mailserver.tls import ensure_self_signed, server_options


def pytest_configure(config: pytest.Config) -> None:
    """Fail the run when a test cited by a 'pass' row of the conformance matrix does not
    pass (rfc-conformance/pytest_plugin.py; the directory is not a package, so by path)."""
    name = "rfc_conformance_pytest_plugin"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "rfc-conformance" / "pytest_plugin.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    sys.modules[name].register(config)


def shared_dir() -> Path | None:
    """``../shared`` beside the checkout (or $MAILSERVER_SHARED), when present."""
    configured = os.environ.get("MAILSERVER_SHARED")
    path = Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared"
    return path if path.is_dir() else None


class Storage:
    """One data directory's database, directory and store, closed at teardown."""

    def __init__(self, root: Path, fsync: bool = False) -> None:
        self.root = root
        self.db = Database.open(
            str(root / "index"), map_size=64 << 20, reactor=reactor, sync=fsync
        )
        self.directory = LmdbDirectory(self.db, reactor=reactor, bcrypt_cost=4)
        self.store = MaildirStore(self.db, str(root / "mail"), reactor=reactor, fsync=fsync)

        self.closed = False

    async def aclose(self) -> None:
        """Close from inside a test (which runs in the reactor's greenlet)."""
        if not self.closed:
            self.closed = True
            await self.store.close()
            await self.db.close()

    def close(self) -> None:
        """Close from a fixture's teardown."""
        if not self.closed:
            self.closed = True
            pytest_twisted.blockon(self.store.close())
            pytest_twisted.blockon(self.db.close())


@pytest.fixture
def storage(tmp_path: Path):
    s = Storage(tmp_path)
    yield s
    s.close()


@pytest.fixture(scope="session")
def tls_options(tmp_path_factory):
    """Server TLS options with a self-signed certificate for "mx.test"."""
    cert, key = ensure_self_signed(str(tmp_path_factory.mktemp("tls")), "mx.test")
    return server_options(cert, key)
