"""Folder name rules shared by every store provider.

Names use ``/`` as the hierarchy delimiter (:data:`mailserver.types.DELIMITER`). ``INBOX`` is
case-insensitive, also as the first level of a longer name (RFC 9051 §5.1).
"""

from __future__ import annotations

import unicodedata

from mailserver.errors import InvalidName
from mailserver.types import DELIMITER

#: RFC 9051 §5.1: names are UTF-8 text; we cap the length to keep on-disk names sane.
MAX_NAME = 255


def normalize_folder_name(name: str) -> str:
    """The canonical form of ``name`` (INBOX upper-cased, Unicode NFC), or InvalidName."""
    if not name or len(name) > MAX_NAME:
        raise InvalidName("folder name must be 1 to 255 characters")
    if name.startswith(DELIMITER) or name.endswith(DELIMITER) or DELIMITER * 2 in name:
        raise InvalidName("folder name has an empty level")
    if any(c in "*%" or unicodedata.category(c) in ("Cc", "Cs") for c in name):
        raise InvalidName("folder name may not contain wildcards or control characters")
    levels = name.split(DELIMITER)
    if any(level in (".", "..") for level in levels):
        raise InvalidName("folder name may not contain . or .. levels")
    if levels[0].upper() == "INBOX":
        levels[0] = "INBOX"
    return unicodedata.normalize("NFC", DELIMITER.join(levels))


def parents(name: str) -> list[str]:
    """The ancestors of ``name``, outermost first (``a/b/c`` -> ``a``, ``a/b``)."""
    levels = name.split(DELIMITER)
    return [DELIMITER.join(levels[:i]) for i in range(1, len(levels))]
