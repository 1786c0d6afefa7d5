"""IMAP sequence sets (``mailserver.imap.sequence.SequenceSet``).

Documented outcome: a set, or ``ValueError``. Invariants: the set's text parses back to the
same set, ``normalized`` is idempotent and names the same numbers for a few values of ``*``.
"""

from __future__ import annotations

from bench.fuzz.harness import Target, check
from mailserver.imap.sequence import SequenceSet

SEEDS = (b"1:4,7,9:*", b"*", b"$", b"5:*,3:*,1:2,2", b"4294967295:1", b"*:4")


def one_input(data: bytes) -> None:
    text = data[:200].decode("latin-1")
    try:
        parsed = SequenceSet.parse(text)
    except ValueError:
        return
    check(SequenceSet.parse(str(parsed)) == parsed, f"{text!r} does not round-trip")
    if parsed.saved:
        return
    normal = parsed.normalized()
    check(normal.normalized() == normal, "normalized() is not idempotent")
    for star in (0, 1, 7):
        wanted = [n for first, last in parsed.clamped(star) for n in (first, last)]
        got = [n for first, last in normal.clamped(star) for n in (first, last)]
        check(wanted == got, f"normalized() changes the set {text!r} for * = {star}")


TARGET = Target("imap_sequence", one_input, SEEDS)
