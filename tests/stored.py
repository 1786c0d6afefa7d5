"""Reading back what a test stored: the messages of a folder, and the Authentication-Results
this server added to one.

Design rule: read through the store's own interfaces (``uids``, ``message(uid).open()``), as
a mail client's view would, never through the Maildir files.
"""

from __future__ import annotations

from typing import Any

from mailserver.message.headers import get_headers, parse_headers
from mailserver.msgauth.results import parse_authentication_results


def contents(folder: Any) -> list[bytes]:
    """Every message of ``folder`` (a store folder), whole, in UID order."""
    out = []
    for uid in folder.uids():
        with folder.message(uid).open() as f:
            out.append(f.read())
    return out


def our_results(message: bytes, authserv: str) -> dict[str, str]:
    """method -> result of the one Authentication-Results field of ``authserv``; the first
    result of each method counts (SPF: MAIL FROM before HELO)."""
    fields = [
        parse_authentication_results(value)
        for value in get_headers(parse_headers(message), "Authentication-Results")
    ]
    ours = [results for name, results in fields if name == authserv]
    assert len(ours) == 1, fields
    found: dict[str, str] = {}
    for result in ours[0]:
        found.setdefault(result.method, result.result)
    return found
