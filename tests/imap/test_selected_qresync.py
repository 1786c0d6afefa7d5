"""SelectedMailbox's QRESYNC answers (VANISHED (EARLIER), changes since a modseq, the seq-match
narrowing) checked as properties over the in-memory store: whatever was expunged and whatever
UID ranges the client names, the answer is exactly the expunged UIDs within those ranges."""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.imap.selected import SelectedMailbox
from mailserver.imap.sequence import SequenceSet
from mailserver.testing import MemoryStore
from mailserver.types import FlagMode

ALICE = "alice@example.org"
COUNT = 40


def now(deferred):
    """The result of a Deferred the in-memory store has already fired."""
    results = []
    deferred.addBoth(results.append)
    assert results, "the in-memory store answers at once"
    return results[0]


def mailbox(expunged: set[int], flagged: set[int]):
    """INBOX with COUNT messages (UIDs 1..COUNT), then ``expunged`` removed and ``flagged``
    flagged; returns the folder and the modseq before the changes."""
    store = MemoryStore()
    now(store.create_account(ALICE))
    inbox = store.account(ALICE).folder("INBOX")
    for n in range(COUNT):
        now(inbox.append(io.BytesIO(b"Subject: %d\r\n\r\nx\r\n" % n)))
    mark = inbox.info().highestmodseq
    if expunged:
        now(inbox.expunge(sorted(expunged)))
    if flagged - expunged:
        now(inbox.store_flags(flagged - expunged, ["$F"], FlagMode.ADD))
    return inbox, mark


def reported(lines: list[bytes]) -> set[int]:
    uids: set[int] = set()
    for line in lines:
        assert line.startswith(b"* VANISHED (EARLIER) ") and line.endswith(b"\r\n")
        for first, last in SequenceSet.parse(line[21:-2].decode()).resolved(0):
            uids.update(range(first, last + 1))
    return uids


uid_sets = st.sets(st.integers(1, COUNT), max_size=COUNT)
known = st.lists(st.tuples(st.integers(1, COUNT + 5), st.integers(1, COUNT + 5)), max_size=6)


@settings(max_examples=60, deadline=None)
@given(expunged=uid_sets, flagged=uid_sets, spans=known)
def test_vanished_earlier_is_the_expunged_uids_within_the_ranges(expunged, flagged, spans):
    """VANISHED (EARLIER) lists exactly the UIDs expunged after the modseq that fall in the
    client's ranges, and nothing when there are none; changes_since reports exactly the
    flagged messages in the ranges."""
    inbox, mark = mailbox(expunged, flagged)
    view = SelectedMailbox(inbox, False, condstore=True, qresync=True)
    view.open()
    ranges = SequenceSet.parse(",".join(f"{a}:{b}" for a, b in spans)).resolved(0) if spans else []
    inside = {uid for a, b in ranges for uid in range(a, b + 1)}
    lines = view.vanished_earlier(mark, ranges)
    assert reported(lines) == expunged & inside
    assert len(lines) == (1 if expunged & inside else 0)
    changes = view.changes_since(mark, ranges)
    assert len(changes) == len((flagged - expunged) & inside)
    assert all(b"$F" in line and b"MODSEQ" in line for line in changes)


@settings(max_examples=60, deadline=None)
@given(expunged=uid_sets, sample=st.sets(st.integers(1, COUNT), min_size=1, max_size=8))
def test_seq_match_never_hides_an_expunge_the_client_does_not_know(expunged, sample):
    """Without expunge records (a full resync), the client's (number, UID) sample from its
    view before the expunges narrows VANISHED (EARLIER) but never leaves out an expunged UID
    the client had (RFC 7162 §3.2.5.2)."""
    inbox, _mark = mailbox(expunged, set())
    view = SelectedMailbox(inbox, False, condstore=True, qresync=True)
    view.open()
    inbox.expunged_since = lambda modseq: None  # the records were pruned
    old_view = list(range(1, COUNT + 1))  # the client's view: every message, numbers = UIDs
    numbers = sorted(sample)
    match = (
        SequenceSet.from_numbers(numbers),
        SequenceSet.from_numbers(old_view[n - 1] for n in numbers),
    )
    found = reported(view.vanished_earlier(1, [(1, COUNT)], match))
    assert expunged <= found
    assert not found & set(view.uids)  # never a message that is still there
