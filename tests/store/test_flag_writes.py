"""Flag changes over many messages in the maildir store (IMailbox.store_flags and
conditional_store): the index, the folder's counters and the file names all end as changing
one message at a time would leave them."""

from __future__ import annotations

import io
import os

import pytest
import pytest_twisted

from mailserver.store import maildir
from mailserver.store.reindex import recover_new
from mailserver.types import ANSWERED, DELETED, FLAGGED, SEEN, FlagMode

ALICE = "alice@example.org"
DATA = b"From: bob@example.net\r\nSubject: s\r\n\r\nbody\r\n"

#: Flags of the messages appended, in turn: system flags, keywords, $Forwarded (a letter).
PATTERN = [
    (),
    (SEEN,),
    (SEEN, FLAGGED),
    ("$Todo",),
    (SEEN, "$Forwarded", "$Todo"),
    (ANSWERED,),
    (SEEN,),
]


@pytest.fixture
def alice(storage):
    pytest_twisted.blockon(storage.store.create_account(ALICE))
    return storage.store.account(ALICE)


def combine(old: frozenset[str], given: frozenset[str], mode: FlagMode) -> frozenset[str]:
    if mode is FlagMode.ADD:
        return old | given
    if mode is FlagMode.REMOVE:
        return old - given
    return given


def mirrored(path: str) -> dict[str, frozenset[str]]:
    """File base -> the flags its name in cur/ carries."""
    return dict(maildir.split_name(name) for name in os.listdir(os.path.join(path, "cur")))


def letters(flags: frozenset[str]) -> frozenset[str]:
    """The flags a file name can carry."""
    return maildir.split_name(maildir.file_name("x", flags))[1]


@pytest.mark.parametrize(
    ("mode", "given"),
    [
        (FlagMode.ADD, {FLAGGED}),
        (FlagMode.ADD, {SEEN, "$Todo"}),
        (FlagMode.REMOVE, {SEEN}),
        (FlagMode.REMOVE, {SEEN, "$Todo", "$Forwarded"}),
        (FlagMode.REPLACE, {SEEN, DELETED}),
        (FlagMode.REPLACE, set()),
    ],
)
@pytest_twisted.ensureDeferred
async def test_store_over_many_messages_matches_one_at_a_time(alice, mode, given):
    """Every message named gets its flags combined with the given ones; the changed ones
    (only those) share one new modseq, the others keep theirs; HIGHESTMODSEQ and the unseen
    count follow; each changed file is renamed to mirror its new flags."""
    inbox = alice.folder("INBOX")
    for n in range(35):
        await inbox.append(io.BytesIO(DATA), PATTERN[n % len(PATTERN)])
    before = {info.uid: info for info in inbox.flags()}
    highest = inbox.info().highestmodseq
    named = [uid for uid in before if uid % 5 != 3]  # some left out of the STORE
    changed = await inbox.store_flags(named, given, mode)

    expected = {
        uid: combine(info.flags, frozenset(given), mode) if uid in named else info.flags
        for uid, info in before.items()
    }
    after = {info.uid: info for info in inbox.flags()}
    assert {uid: info.flags for uid, info in after.items()} == expected
    moved = {uid for uid in named if expected[uid] != before[uid].flags}
    assert sorted(info.uid for info in changed) == sorted(moved)
    assert {info.uid: info.flags for info in changed} == {uid: expected[uid] for uid in moved}
    new_modseq = highest + 1 if moved else highest
    assert {info.modseq for info in changed} <= {new_modseq}
    for uid, info in after.items():
        assert info.modseq == (new_modseq if uid in moved else before[uid].modseq)
    folder = inbox.info()
    assert folder.highestmodseq == new_modseq
    assert folder.unseen == sum(1 for flags in expected.values() if SEEN not in flags)
    assert sorted(change.uid for change in inbox.changed_since(highest)) == sorted(moved)
    names = mirrored(inbox.path)
    assert sorted(names.values(), key=sorted) == sorted(
        (letters(flags) for flags in expected.values()), key=sorted
    )
    for uid, flags in expected.items():
        assert names[inbox.message(uid).base] == letters(flags)


@pytest_twisted.ensureDeferred
async def test_conditional_store_leaves_newer_messages_alone(alice):
    """UNCHANGEDSINCE: messages changed after the given modseq are refused and untouched,
    the rest change."""
    inbox = alice.folder("INBOX")
    for _ in range(6):
        await inbox.append(io.BytesIO(DATA))
    since = inbox.info().highestmodseq
    await inbox.store_flags([2, 5], [SEEN], FlagMode.ADD)
    changed, refused = await inbox.conditional_store(range(1, 7), [FLAGGED], FlagMode.ADD, since)
    assert refused == [2, 5]
    assert sorted(info.uid for info in changed) == [1, 3, 4, 6]
    flags = {info.uid: info.flags for info in inbox.flags()}
    assert flags[2] == flags[5] == frozenset({SEEN})
    assert flags[1] == flags[3] == frozenset({FLAGGED})


@pytest_twisted.ensureDeferred
async def test_a_file_with_an_escaped_name_is_renamed_too(alice):
    """A message file whose name holds JSON-escaped characters (a backslash, as maildir
    writes a host name with ``/`` or ``:``; a double quote from an outside deliverer) is
    found and renamed like any other when its flags change."""
    inbox = alice.folder("INBOX")
    bases = ["1700000000.M1P1.host\\057name", '1700000001.M2P1.odd"name', "1700000002.M3P1.h"]
    for base in bases:
        with open(os.path.join(inbox.path, "new", base), "wb") as f:
            f.write(DATA)
    assert await recover_new(alice.store) == 3
    uids = list(inbox.uids())
    assert {inbox.message(uid).base for uid in uids} == set(bases)
    await inbox.store_flags(uids, [SEEN, FLAGGED], FlagMode.ADD)
    assert mirrored(inbox.path) == {base: frozenset({SEEN, FLAGGED}) for base in bases}
    for uid in uids:
        with inbox.message(uid).open() as f:
            assert f.read() == DATA
