"""Maildir++ on disk: directory layout, unique file names and flags mirrored in names.

The layout is the one mutt, Dovecot and Python's ``mailbox.Maildir`` read:
``<root>/<domain>/<local>/{cur,new,tmp}`` is INBOX, and a folder ``a/b`` lives in
``<root>/<domain>/<local>/.a.b/`` with a ``maildirfolder`` marker. Folder names are stored
in modified UTF-7 (RFC 3501 §5.1.3) as Dovecot does; a literal ``.`` or ``~`` inside a name
is escaped as ``~2e``/``~7e`` because ``.`` separates levels on disk.

Messages are delivered ``tmp -> new`` and moved to ``cur`` once indexed, with the standard
info suffix ``:2,<letters>`` (D draft, F flagged, P passed, R replied, S seen, T trashed).
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import time

from mailserver.message import utf7
from mailserver.randomness import token_hex

_counter = itertools.count(1)

#: Maildir info letters <-> IMAP flags (letters are kept in ASCII order in names).
LETTERS = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "P": "$Forwarded",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}
_FLAG_LETTERS = {flag: letter for letter, flag in LETTERS.items()}
_SAFE_LOCAL = re.compile(r"[A-Za-z0-9!#$&'*+=?^_`{|}~-][A-Za-z0-9.!#$&'*+=?^_`{|}~-]*\Z")


def _hostname() -> str:
    # Maildir spec: "/" and ":" in the host name are written as \057 and \072.
    return socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"


#: ``P<pid>`` and ``.host`` of this process's names, taken once per process as Dovecot does
#: (``my_hostname``, set at start-up): no uname and getpid per message. A forked child takes
#: its own (os.register_at_fork), so two processes never share a pid part.
_process_parts = ("", "")


def _take_process_parts() -> None:
    global _process_parts
    _process_parts = (f"P{os.getpid()}", _hostname())


_take_process_parts()
os.register_at_fork(after_in_child=_take_process_parts)


def unique_name(now: float | None = None) -> str:
    """A file name unique across processes and hosts: ``sec.M<usec>P<pid>Q<n>R<rand>.host``
    (pid and host name as of the process's start, or of the fork that made it)."""
    now = time.time() if now is None else now
    seconds = int(now)
    micro = int((now - seconds) * 1_000_000)
    pid, host = _process_parts
    return f"{seconds}.M{micro}{pid}Q{next(_counter)}R{token_hex(4)}.{host}"


def flags_suffix(flags: frozenset[str]) -> str:
    """The ``:2,`` info suffix mirroring ``flags`` (keywords other than $Forwarded live only
    in the index)."""
    letters = sorted(_FLAG_LETTERS[f] for f in flags if f in _FLAG_LETTERS)
    return ":2," + "".join(letters)


def file_name(base: str, flags: frozenset[str]) -> str:
    return base + flags_suffix(flags)


def split_name(name: str) -> tuple[str, frozenset[str]]:
    """(base, flags) of a file name in ``cur`` or ``new``; unknown letters are ignored."""
    base, sep, info = name.partition(":")
    if not sep or not info.startswith("2,"):
        return base, frozenset()
    return base, frozenset(LETTERS[c] for c in info[2:] if c in LETTERS)


def account_dirname(address: str) -> str:
    """``<domain>/<local>`` with anything unsafe for a path percent-escaped."""
    local, _, domain = address.rpartition("@")
    if not _SAFE_LOCAL.match(local):
        local = "".join(
            c if c.isalnum() and c.isascii() else "".join(f"%{b:02X}" for b in c.encode())
            for c in local
        )
    domain = domain.lower().replace("/", "%2F")
    return os.path.join(domain or "_", local or "_")


def address_from_dirname(dirname: str) -> str:
    """Inverse of :func:`account_dirname`."""
    domain, _, local = dirname.replace(os.sep, "/").partition("/")
    raw = bytearray()
    i = 0
    while i < len(local):
        if local[i] == "%" and i + 2 < len(local) + 1:
            try:
                raw.append(int(local[i + 1 : i + 3], 16))
                i += 3
                continue
            except ValueError:
                pass
        raw.extend(local[i].encode())
        i += 1
    return f"{raw.decode('utf-8', 'replace')}@{domain.replace('%2F', '/')}"


def _escape_level(level: str) -> str:
    encoded = utf7.encode(level)
    return encoded.replace("~", "~7e").replace(".", "~2e")


def _unescape_level(level: str) -> str:
    return utf7.decode(level.replace("~2e", ".").replace("~7e", "~"))


def folder_dirname(name: str) -> str:
    """The directory of folder ``name`` relative to the account: ``""`` for INBOX."""
    if name == "INBOX":
        return ""
    return "." + ".".join(_escape_level(level) for level in name.split("/"))


def folder_name(dirname: str) -> str:
    """Inverse of :func:`folder_dirname`; raises ValueError for a name that is not ours."""
    if dirname == "":
        return "INBOX"
    if not dirname.startswith(".") or dirname in (".", ".."):
        raise ValueError(f"not a Maildir++ folder directory: {dirname!r}")
    return "/".join(_unescape_level(level) for level in dirname[1:].split("."))


def make_maildir(path: str, subfolder: bool) -> None:
    """Create ``path`` with ``cur``, ``new`` and ``tmp`` (idempotent)."""
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)
    if subfolder:
        marker = os.path.join(path, "maildirfolder")
        if not os.path.exists(marker):
            with open(marker, "wb"):
                pass
