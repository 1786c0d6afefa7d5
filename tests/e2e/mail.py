"""Helpers for end-to-end tests: put users into a data directory before the server starts,
read a mailbox after it stopped, and a TLS context for our self-signed certificates."""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path

from tests.conftest import Storage
from tests.stored import contents

PASSWORD = "secret-pw"


async def provision(data_dir: Path, domain: str, users: Iterable[str] = ("alice",)) -> None:
    """Serve ``domain`` with ``users`` (local parts, password :data:`PASSWORD`)."""
    storage = Storage(Path(data_dir), fsync=True)
    try:
        await storage.directory.add_domain(domain)
        for user in users:
            await storage.directory.add_user(f"{user}@{domain}", PASSWORD)
            await storage.store.create_account(f"{user}@{domain}")
    finally:
        await storage.aclose()


async def folder_messages(data_dir: Path, address: str, folder: str) -> list[bytes]:
    """Every message in ``address``'s ``folder``, in UID order (open the store while the
    server is stopped, or accept a snapshot)."""
    storage = Storage(Path(data_dir), fsync=True)
    try:
        return contents(storage.store.account(address).folder(folder))
    finally:
        await storage.aclose()


async def inbox_messages(data_dir: Path, address: str) -> list[bytes]:
    """Every message in ``address``'s INBOX: :func:`folder_messages`."""
    return await folder_messages(data_dir, address, "INBOX")


def insecure_context() -> ssl.SSLContext:
    """A client context that accepts the servers' self-signed certificates."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
