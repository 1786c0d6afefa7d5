"""Sequence sets: parsing, formatting, "*" and "$", membership, iteration, normalisation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailserver.imap.sequence import STAR, SequenceSet, compact_ranges

S = SequenceSet.parse


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        ("1", ((1, 1),)),
        ("1:4", ((1, 4),)),
        ("4:1", ((1, 4),)),
        ("*", ((STAR, STAR),)),
        ("1:*", ((1, STAR),)),
        ("*:4", ((4, STAR),)),
        ("2,4:7,9,12:*", ((2, 2), (4, 7), (9, 9), (12, STAR))),
        ("4294967295", ((4294967295, 4294967295),)),
    ],
)
def test_parse(text, ranges):
    assert S(text).ranges == ranges


@pytest.mark.parametrize(
    "text", ["", "0", "1:0", "a", "1,", ",1", "1::2", "1:2:3", "4294967296", "$,1", "01", " 1"]
)
def test_parse_invalid(text):
    with pytest.raises(ValueError):
        S(text)


def test_saved_result():
    """RFC 5182: "$" is the saved search result; it must be substituted before use."""
    saved = S("$")
    assert saved.saved and str(saved) == "$" and saved == SequenceSet.saved_result()
    with pytest.raises(ValueError):
        saved.contains(1, 5)
    with pytest.raises(ValueError):
        list(saved.iter(5))


def test_format_canonical_forms():
    assert str(S("4:1")) == "1:4"
    assert str(S("*:4")) == "4:*"
    assert str(S("*")) == "*"
    assert str(S("3:3")) == "3"


def test_contains_with_star():
    """``*`` is the largest number in use; ``n:*`` includes it even when n is larger (RFC 9051
    §6.4.8)."""
    assert S("1:*").contains(5, star=5)
    assert not S("1:*").contains(6, star=5)
    assert S("*").contains(7, star=7) and not S("*").contains(6, star=7)
    assert S("559:*").contains(3, star=3)
    assert not S("559:*").contains(2, star=3)
    assert list(S("559:*").iter(3)) == [3]
    assert S("2,4:6").contains(5, star=100) and not S("2,4:6").contains(3, star=100)


def test_star_in_an_empty_mailbox_matches_nothing():
    """With no messages, "*" has no value: every range with it is empty."""
    assert not S("*").contains(0, star=0)
    assert not S("2:*").contains(2, star=0)
    assert S("2:*,3").resolved(0) == [(3, 3)]
    assert list(S("1:*").iter(0)) == []


def test_iteration_is_bounded_by_star():
    """Iteration never goes past star, is ascending and yields each number once."""
    assert list(S("1:*").iter(5)) == [1, 2, 3, 4, 5]
    assert list(S("3:10").iter(5)) == [3, 4, 5]
    assert list(S("4,2:3,3,*").iter(9)) == [2, 3, 4, 9]
    assert list(S("1:4294967295").iter(3)) == [1, 2, 3]
    assert list(S("10").iter(3)) == []


def test_resolved_and_clamped_ranges():
    """Store look-ups get merged ranges, never one number at a time."""
    assert S("7:9,1:3,4,20:*").resolved(25) == [(1, 4), (7, 9), (20, 25)]
    assert S("7:9,1:3,4,20:*").clamped(8) == [(1, 4), (7, 8)]
    assert S("30:*").clamped(8) == [(8, 8)]


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("3,1:2,2", "1:3"),
        ("5:*,3:*,*", "3:*"),
        ("1:4,5:*", "1:4,5:*"),
        ("*,*", "*"),
        ("9,7,8,1", "1,7:9"),
    ],
)
def test_normalized(text, normal):
    assert str(S(text).normalized()) == normal


def test_from_numbers_and_compact_ranges():
    assert str(SequenceSet.from_numbers([5, 1, 2, 3, 9, 2])) == "1:3,5,9"
    assert compact_ranges([5, 6, 7, 3, 4], sort=False) == [(5, 7), (3, 4)]


_NUMBER = st.integers(min_value=1, max_value=60)
_BOUND = st.one_of(_NUMBER, st.just("*"))
_RANGE = st.tuples(_BOUND, st.one_of(st.none(), _BOUND)).map(
    lambda r: str(r[0]) if r[1] is None else f"{r[0]}:{r[1]}"
)
_SETS = st.lists(_RANGE, min_size=1, max_size=6).map(",".join)


@given(_SETS)
def test_format_parse_round_trip(text):
    """parse(str(s)) == s for every set."""
    parsed = S(text)
    assert S(str(parsed)) == parsed


@given(_SETS, st.integers(min_value=0, max_value=70))
def test_contains_agrees_with_iteration(text, star):
    """contains(n, star) holds exactly for the numbers iter(star) yields (1 .. star)."""
    parsed = S(text)
    members = set(parsed.iter(star))
    assert members == {n for n in range(1, star + 1) if parsed.contains(n, star)}


@given(_SETS, st.integers(min_value=0, max_value=70))
def test_normalized_is_equivalent(text, star):
    """Normalisation never changes which messages a set names, whatever star is."""
    parsed = S(text)
    assert list(parsed.normalized().iter(star)) == list(parsed.iter(star))
    assert parsed.normalized().clamped(star) == parsed.clamped(star)


@given(st.sets(st.integers(min_value=1, max_value=200)))
def test_from_numbers_round_trip(numbers):
    if numbers:
        assert set(SequenceSet.from_numbers(numbers).iter(200)) == numbers
