"""Modified UTF-7 mailbox names (``mailserver.message.utf7``).

Documented outcome: text, or ``ValueError``. Invariants (module docstring): ``decode`` accepts
only the canonical form, so ``encode(decode(s)) == s``; ``decode(encode(t)) == t``.
"""

from __future__ import annotations

from bench.fuzz.harness import Target, check
from mailserver.message import utf7

SEEDS = (b"INBOX", b"Entw&APw-rfe", b"A &- B", b"&ZeVnLIqe-", b"&2D3eAA-", b"&AGE-")


def one_input(data: bytes) -> None:
    encoded = data.decode("latin-1")
    try:
        decoded = utf7.decode(encoded)
    except ValueError:
        pass
    else:
        check(utf7.encode(decoded) == encoded, f"{encoded!r} decodes but is not canonical")
    text = data.decode("utf-8", "ignore")
    check(utf7.decode(utf7.encode(text)) == text, f"{text!r} does not round-trip")


TARGET = Target("utf7", one_input, SEEDS)
