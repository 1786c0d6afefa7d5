"""The server's credentials key: 32 random bytes in ``<data_dir>/keys/credentials.key`` (mode
0600, outside the index), under which :class:`mailserver.auth.credentials.CredentialStore`
keeps app passwords, recovery codes and tokens as HMACs. Replacing it invalidates them all.
"""

from __future__ import annotations

import os
import secrets
import stat

from mailserver.durable import fsync_directory, link_into, write_new
from mailserver.errors import StoreUnavailable

#: Bytes in the server's credentials key.
SECRET_SIZE = 32


def secret_path(data_dir: str) -> str:
    """Where the credentials key of a data directory lives."""
    return os.path.join(data_dir, "keys", "credentials.key")


def load_or_create_secret(path: str) -> bytes:
    """The 32-byte credentials key in ``path``, created (mode 0600, directory 0700) when absent.

    Blocking: call it at start-up, before the reactor runs. Creation is durable and never
    replaces a key another process created meanwhile (link, not rename). StoreUnavailable when
    the file has the wrong size or is readable by group or others.
    """
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    temporary = f"{path}.new.{os.getpid()}"
    write_new(temporary, secrets.token_bytes(SECRET_SIZE), mode=0o600)
    try:
        link_into(temporary, path)
    except FileExistsError:
        pass  # another process won the race: use its key
    finally:
        os.unlink(temporary)
        fsync_directory(directory)
    return _read_secret(path)


def _read_secret(path: str) -> bytes:
    with open(path, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        data = f.read(SECRET_SIZE + 1)
    if stat.S_IMODE(mode) & 0o077:
        raise StoreUnavailable(
            detail=f"the credentials key {path} is readable by others: chmod 600 {path}"
        )
    if len(data) != SECRET_SIZE:
        raise StoreUnavailable(
            detail=f"the credentials key {path} is not {SECRET_SIZE} bytes: restore it from "
            "a backup, or delete it (every app password, token and recovery code then stops "
            "working)"
        )
    return data
