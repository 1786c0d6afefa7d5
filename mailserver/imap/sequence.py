"""IMAP sequence sets: ``1:*``, ``2,4:7,9``, ``*`` and the saved result ``$``.

A :class:`SequenceSet` holds the ranges as the client gave them; ``*`` stands for the largest
number in use (the last message's sequence number or UID), which only the server knows, so every
question about membership takes it as ``star``. Sources: RFC 9051 §9 (``sequence-set``,
``seq-range``: "the range 4:2 is the same as 2:4"), RFC 9051 §6.4.8 (a UID range ``559:*``
always includes the last UID, even when 559 is higher), RFC 5182 (``$``, SEARCHRES) and
RFC 4315 §3 (``uid-set`` in COPYUID / APPENDUID). A leaf module: standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["MAX_NUMBER", "STAR", "SequenceSet", "compact_ranges"]

#: ``nz-number`` is a 32-bit unsigned number (RFC 9051 §9: ``number`` is 0 .. 4,294,967,295).
MAX_NUMBER = 4_294_967_295
#: ``*`` inside a range: ``(5, STAR)`` is ``5:*`` and ``(STAR, STAR)`` is ``*``.
STAR = None

Bound = int | None
_NUMBER = re.compile(r"[1-9][0-9]{0,9}")


def _bound(text: str) -> Bound:
    if text == "*":
        return STAR
    if not _NUMBER.fullmatch(text) or int(text) > MAX_NUMBER:
        raise ValueError(f"invalid sequence number {text!r}")
    return int(text)


def _resolve(first: Bound, last: Bound, star: int) -> tuple[int, int]:
    """A range with ``*`` replaced by ``star`` and its ends in ascending order."""
    a = star if first is None else first
    b = star if last is None else last
    return (a, b) if a <= b else (b, a)


def compact_ranges(numbers: Iterable[int], *, sort: bool = True) -> list[tuple[int, int]]:
    """Consecutive numbers as ``(first, last)`` ranges.

    With ``sort`` (the default) the numbers are sorted and deduplicated first; without it their
    order is kept and only ascending runs are merged (COPYUID's two sets correspond in order,
    RFC 4315 §3).
    """
    values = sorted(set(numbers)) if sort else list(numbers)
    ranges: list[tuple[int, int]] = []
    for n in values:
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], n)
        else:
            ranges.append((n, n))
    return ranges


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A parsed ``sequence-set`` (or ``$``).

    ``ranges`` holds ``(first, last)`` pairs where an end is an ``int`` or :data:`STAR`; a single
    number ``n`` is ``(n, n)``. A numeric range is kept with ``first <= last``; a range with one
    ``*`` keeps the number first (``*:4`` is stored as ``(4, STAR)``). ``saved`` marks ``$``,
    the result saved by an earlier ``SEARCH RETURN (SAVE)`` (RFC 5182): it has no ranges and the
    server substitutes the saved set before asking anything else.
    """

    ranges: tuple[tuple[Bound, Bound], ...]
    saved: bool = False

    @classmethod
    def parse(cls, text: str) -> SequenceSet:
        """Parse ``sequence-set`` text; raises :class:`ValueError` when it is not one."""
        if text == "$":
            return cls((), saved=True)
        if not text:
            raise ValueError("empty sequence set")
        ranges: list[tuple[Bound, Bound]] = []
        for item in text.split(","):
            first_text, colon, last_text = item.partition(":")
            first = _bound(first_text)
            last = _bound(last_text) if colon else first
            if first is None and last is not None:
                first, last = last, STAR
            elif first is not None and last is not None and first > last:
                first, last = last, first
            ranges.append((first, last))
        return cls(tuple(ranges))

    @classmethod
    def saved_result(cls) -> SequenceSet:
        """``$``: the saved search result (RFC 5182)."""
        return cls((), saved=True)

    @classmethod
    def from_numbers(cls, numbers: Iterable[int], *, sort: bool = True) -> SequenceSet:
        """The compact set holding exactly ``numbers`` (see :func:`compact_ranges`)."""
        return cls(tuple(compact_ranges(numbers, sort=sort)))

    def __str__(self) -> str:
        if self.saved:
            return "$"
        return ",".join(_format_range(first, last) for first, last in self.ranges)

    def __bool__(self) -> bool:
        return self.saved or bool(self.ranges)

    @property
    def uses_star(self) -> bool:
        """True when ``*`` appears anywhere in the set."""
        return any(last is None for _, last in self.ranges)

    def _check(self) -> None:
        if self.saved:
            raise ValueError("substitute the saved search result ($) first")

    def resolved(self, star: int) -> list[tuple[int, int]]:
        """The set as sorted, merged, non-overlapping ``(first, last)`` ranges with ``*`` as
        ``star`` (not clamped: ``4:9`` with ``star`` 5 stays ``(4, 9)``).

        ``star`` 0 (an empty mailbox) makes every range with ``*`` empty: there is no last
        message for it to include.
        """
        self._check()
        spans: list[tuple[int, int]] = []
        for first, last in self.ranges:
            if star <= 0 and (first is None or last is None):
                continue
            spans.append(_resolve(first, last, star))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for first, last in spans:
            if merged and first <= merged[-1][1] + 1:
                if last > merged[-1][1]:
                    merged[-1] = (merged[-1][0], last)
            else:
                merged.append((first, last))
        return merged

    def clamped(self, star: int) -> list[tuple[int, int]]:
        """:meth:`resolved` limited to ``1 .. star``: the ranges a server actually looks up."""
        out: list[tuple[int, int]] = []
        for first, last in self.resolved(star):
            if first > star:
                break
            out.append((first, min(last, star)))
        return out

    def contains(self, number: int, star: int) -> bool:
        """True when ``number`` is in the set, ``*`` standing for ``star``.

        A range with ``*`` includes ``star`` even when its other end is larger (RFC 9051
        §6.4.8: ``559:*`` always includes the last UID): it is ``star:559``. Numbers above
        ``star`` are answered too (``4`` is in ``559:*`` when ``star`` is 3); :meth:`iter` and
        :meth:`clamped` keep to ``1 .. star``.
        """
        self._check()
        for first, last in self.ranges:
            if star <= 0 and (first is None or last is None):
                continue
            low, high = _resolve(first, last, star)
            if low <= number <= high:
                return True
        return False

    def iter(self, star: int) -> Iterator[int]:
        """The numbers ``1 .. star`` in the set, ascending and each once."""
        for first, last in self.clamped(star):
            yield from range(first, last + 1)

    def normalized(self) -> SequenceSet:
        """An equivalent set in canonical form: it names the same numbers in ``1 .. star``
        whatever ``star`` turns out to be.

        Numeric ranges are sorted and merged (``3,1:2,2`` is ``1:3``); the ranges that end in
        ``*`` collapse to the one with the smallest start (``5:*,3:*`` is ``3:*``), and a lone
        ``*`` is dropped when such a range exists. A numeric range is never merged into a ``*``
        range: ``1:4,5:*`` with ``star`` 3 is 1..4, which ``1:*`` is not.
        """
        if self.saved:
            return self
        numeric = [(first, last) for first, last in self.ranges if last is not None]
        starred = [first for first, last in self.ranges if last is None]
        merged = SequenceSet(tuple(numeric)).resolved(0) if numeric else []
        ranges: list[tuple[Bound, Bound]] = list(merged)
        finite_starts = [first for first in starred if first is not None]
        if finite_starts:
            ranges.append((min(finite_starts), STAR))
        elif starred:
            ranges.append((STAR, STAR))
        return SequenceSet(tuple(ranges))


def _format_range(first: Bound, last: Bound) -> str:
    a = "*" if first is None else str(first)
    if first == last:
        return a
    return f"{a}:{'*' if last is None else last}"
