"""The maildrop of one POP3 session: a snapshot of the INBOX taken at login.

RFC 1939 §5: message numbers are fixed for the session, deleted messages keep their number
and are hidden, and nothing changes in the store before UPDATE (§6). The snapshot reads
UIDs and sizes from the store's index (``IMailbox.uids`` and each message's ``info.size``);
no message file is opened until RETR or TOP.

**Unique ids** (RFC 1939 §7 UIDL) are ``<UIDVALIDITY>.<UID>`` of the INBOX: the identity IMAP
shows for the same message, stable across sessions and never reused (a new UIDVALIDITY, e.g.
after an INBOX rebuild, changes every id, which is what a client must be told then).

**UPDATE** (:meth:`Maildrop.commit`):

- "delete" (the RFC 1939 model): messages marked with DELE are expunged from the INBOX,
  wherever else they are labelled they stay.
- "leave on server": DELE still hides the message for this session, but UPDATE does not
  expunge it (and does not set \\Deleted, so no IMAP client expunges it by accident): it is
  marked \\Seen. The next POP3 session lists it again with the same unique id, so clients
  that keep UIDL state (all current ones) do not download it twice; IMAP shows it as read.

In both modes messages retrieved whole with RETR are marked \\Seen (when the policy says so),
and a session that ends any other way than QUIT (dropped connection, timeout, shutdown)
changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import inlineCallbacks

from mailserver.interfaces import IMailbox
from mailserver.types import SEEN, FlagMode

__all__ = ["Entry", "Maildrop", "load"]


@dataclass(frozen=True)
class Entry:
    """One message of the snapshot."""

    uid: int
    size: int
    unique_id: str


@dataclass
class Maildrop:
    mailbox: Any  # IMailbox
    entries: list[Entry]
    leave_on_server: bool = False
    mark_seen: bool = True
    #: Message numbers (1-based) marked with DELE.
    deleted: set[int] = field(default_factory=set)
    #: Message numbers retrieved whole (RETR).
    retrieved: set[int] = field(default_factory=set)

    def entry(self, number: int) -> Entry | None:
        """Message ``number`` unless it is out of range or deleted."""
        if not 1 <= number <= len(self.entries) or number in self.deleted:
            return None
        return self.entries[number - 1]

    def live(self) -> list[tuple[int, Entry]]:
        """(number, entry) of every message not marked deleted."""
        return [
            (number, entry)
            for number, entry in enumerate(self.entries, 1)
            if number not in self.deleted
        ]

    def stat(self) -> tuple[int, int]:
        """(count, octets) of the messages not marked deleted (RFC 1939 §5 STAT)."""
        live = self.live()
        return len(live), sum(entry.size for _n, entry in live)

    def delete(self, number: int) -> None:
        self.deleted.add(number)

    def reset(self) -> None:
        """RFC 1939 §5 RSET: unmark every deleted message."""
        self.deleted.clear()

    def exists(self, number: int) -> bool:
        return 1 <= number <= len(self.entries)

    def open(self, entry: Entry) -> Any:
        """The message's file (blocking: call in a thread). NoSuchMessage when another
        session expunged it since the snapshot."""
        return self.mailbox.message(entry.uid).open()

    @inlineCallbacks
    def commit(self) -> Any:
        """UPDATE (see the module docstring). Deferred[number of messages left]."""
        deleted = {self.entries[n - 1].uid for n in self.deleted}
        seen = {self.entries[n - 1].uid for n in self.retrieved} if self.mark_seen else set()
        if self.leave_on_server:
            seen |= deleted
            deleted = set()
        seen -= deleted
        if seen:
            yield self.mailbox.store_flags(sorted(seen), {SEEN}, FlagMode.ADD)
        if deleted:
            yield self.mailbox.expunge(sorted(deleted))
        return len(self.entries) - (len(self.deleted) if not self.leave_on_server else 0)


def load(mailbox: IMailbox, leave_on_server: bool = False, mark_seen: bool = True) -> Maildrop:
    """The snapshot of ``mailbox`` (blocking index reads: call in a thread)."""
    uidvalidity = mailbox.info().uidvalidity  # type: ignore[attr-defined]
    # One batch read: sizes only (meta=False skips the parse results POP3 never uses);
    # messages expunged while we list are simply absent.
    messages = mailbox.messages(mailbox.uids(), meta=False)  # type: ignore[attr-defined]
    entries = [
        Entry(message.info.uid, message.info.size, f"{uidvalidity}.{message.info.uid}")
        for message in messages
    ]
    return Maildrop(mailbox, entries, leave_on_server, mark_seen)
