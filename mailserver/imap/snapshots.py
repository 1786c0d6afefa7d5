"""What a SELECT reads of a folder, kept per listener so that selecting an unchanged folder
again (the same session, another session of the user, EXAMINE, STATUS RECENT) reads no
per-message index entries (issue 6).

A :class:`FolderSnapshot` holds the folder's UIDs (an ``array('I')``: 4 bytes per message
instead of a list of int objects), its keywords and the number of its first unseen message,
as read by one walk of the folder's flags.

Design rules:

1. A snapshot is valid only for the exact state it was read at: the folder's (UIDVALIDITY,
   MAILBOXID) name it, and its (UIDNEXT, EXISTS, HIGHESTMODSEQ) must still be the folder's.
   Every change to a folder (a delivery, an expunge, a flag change, in this process or
   another one sharing the store) raises HIGHESTMODSEQ: the store contract requires it
   (:mod:`mailserver.interfaces.store`: every change of a message's flags or membership
   raises its modseq above the folder's HIGHESTMODSEQ; RFC 7162 §3.1.1, §3.2.10). So an
   equal state is the same set of UIDs and flags, a stale snapshot is never used, and
   nothing needs invalidating.
2. A snapshot is kept only when the folder's state after the walk is the state read before
   it, so it never mixes two states (the walk reads in several short transactions).
3. Snapshots are immutable and shared; a session copies the UID array into its own view
   before changing it.
4. Bounded by the UIDs held (4 bytes each plus a fixed overhead per folder), least recently
   used dropped first: one cache per factory
   (:class:`mailserver.imap.factory.IMAPFactory`), shared by its sessions, never a global.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from dataclasses import dataclass

from mailserver.types import FolderInfo

__all__ = ["FolderSnapshot", "FolderSnapshots", "Key", "State", "key_of", "state_of"]

#: Bytes counted per snapshot on top of its UIDs (key, keywords, dict slot, headers).
ENTRY_OVERHEAD = 1024

#: (user, folder name, UIDVALIDITY, MAILBOXID): which folder a snapshot is of.
Key = tuple[str, str, int, str]
#: (UIDNEXT, EXISTS, HIGHESTMODSEQ): the folder's state a snapshot was read at.
State = tuple[int, int, int]


def key_of(user: str, name: str, info: FolderInfo) -> Key:
    """The :data:`Key` of ``user``'s folder ``name`` whose FolderInfo is ``info``."""
    return (user, name, info.uidvalidity, info.mailbox_id)


def state_of(info: FolderInfo) -> State:
    """The :data:`State` a FolderInfo gives."""
    return (info.uidnext, info.exists, info.highestmodseq)


@dataclass(frozen=True, eq=False)
class FolderSnapshot:
    """One folder as a SELECT reads it, at ``state``."""

    state: State
    #: The UIDs present, ascending (``array('I')``; never changed once built).
    uids: array[int]
    #: Keywords set on at least one message (RFC 9051 §7.3.5 FLAGS).
    keywords: frozenset[str]
    #: The message sequence number of the first message without ``\\Seen``, or None.
    first_unseen: int | None

    @property
    def weight(self) -> int:
        return self.uids.itemsize * len(self.uids) + ENTRY_OVERHEAD


class FolderSnapshots:
    """A bounded LRU of :class:`FolderSnapshot` by :data:`Key`; ``max_bytes = 0`` keeps
    nothing."""

    def __init__(self, max_bytes: int = 16 << 20) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[Key, FolderSnapshot] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key, state: State) -> FolderSnapshot | None:
        """The snapshot of ``key`` if it was read at ``state``; a stale one is dropped."""
        snapshot = self._entries.get(key)
        if snapshot is None:
            return None
        if snapshot.state != state:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return snapshot

    def put(self, key: Key, snapshot: FolderSnapshot) -> None:
        """Keep ``snapshot`` (in place of any older one of the folder), within the bound."""
        if snapshot.weight > self.max_bytes:
            self._drop(key)
            return
        self._drop(key)
        self._entries[key] = snapshot
        self.size += snapshot.weight
        while self.size > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self.size -= dropped.weight

    def clear(self) -> None:
        self._entries.clear()
        self.size = 0

    def _drop(self, key: Key) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.size -= old.weight
