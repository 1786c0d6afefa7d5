"""The mail store: accounts, folders and messages, with ranges instead of "load all".

A provider guarantees IMAP semantics (RFC 9051 §2.3.1.1): within one UIDVALIDITY, UIDs in a
folder strictly ascend with arrival order and are never reused; every change of a message's
flags or membership raises its modseq above the folder's previous HIGHESTMODSEQ (RFC 7162).
Writes return Deferreds that fire only after the change is durable; reads are synchronous
and must be cheap (index look-ups, never a scan of every message file).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from twisted.internet.defer import Deferred

    from mailserver.types import (
        FlagInfo,
        FlagMode,
        FolderInfo,
        QuotaUsage,
        SpamVerdict,
        SpecialUse,
    )


class IMailStore(Interface):
    """All accounts of one installation."""

    def create_account(address: str) -> Deferred[None]:
        """Create the account ``address`` with the default folders (INBOX, Sent, Drafts, Junk,
        Trash, Archive with their special-use flags). Deferred; fails with AlreadyExists."""

    def delete_account(address: str) -> Deferred[None]:
        """Remove the account, its folders and messages. Deferred; NoSuchUser if absent."""

    def has_account(address: str) -> bool:
        """True when ``address`` has an account in this store."""

    def account(address: str) -> IAccount:
        """The account for ``address``; raises NoSuchUser when there is none."""

    def close() -> Deferred[None]:
        """Finish in-flight writes and release every resource. Deferred; idempotent."""


class IAccount(Interface):
    """One user's folders."""

    address = Attribute("The account's address (str).")

    def list_folders() -> list[FolderInfo]:
        """Every folder as a FolderInfo, sorted by name, INBOX first."""

    def folder(name: str) -> IMailbox:
        """The folder called ``name`` (``INBOX`` is case-insensitive); NoSuchFolder if none."""

    def create_folder(name: str, special_use: SpecialUse | None = None) -> Deferred[FolderInfo]:
        """Create a folder (parents are created as needed). Deferred[FolderInfo]; fails with
        FolderExists or InvalidName. A new folder gets a fresh UIDVALIDITY."""

    def delete_folder(name: str) -> Deferred[None]:
        """Delete a folder and its messages. INBOX cannot be deleted (InvalidName). Deferred.
        The subscriptions are left alone: a subscribed name stays subscribed (RFC 9051
        §6.3.7)."""

    def rename_folder(old: str, new: str) -> Deferred[None]:
        """Rename a folder and its children, keeping UIDVALIDITY and UIDs. Renaming INBOX moves
        its messages into the new folder and leaves INBOX empty (RFC 9051 §6.3.6). Deferred.
        Subscriptions are names and do not follow the folder: the old names stay subscribed
        and the new ones are not, unless already (as in Dovecot)."""

    def subscribe(name: str, subscribed: bool = True) -> Deferred[None]:
        """Add ``name`` to the account's subscriptions, whether a folder of that name exists
        or not (RFC 9051 §6.3.7); ``subscribed=False`` is :meth:`unsubscribe`. Deferred;
        fails with InvalidName for a name no folder could have. Creating a folder subscribes
        its name; only UNSUBSCRIBE (and deleting the account) removes a name."""

    def unsubscribe(name: str) -> Deferred[None]:
        """Remove ``name`` from the subscriptions; succeeds when it was not subscribed (RFC
        9051 §6.3.8). Deferred."""

    def subscriptions() -> list[str]:
        """Every subscribed name (normalised as folder names are), INBOX first, then by
        name; names without a folder included. FolderInfo.subscribed agrees with it."""

    def labels(object_id: str) -> list[tuple[str, int]]:
        """Every (folder name, uid) holding the message ``object_id``: its labels."""

    def quota() -> QuotaUsage:
        """The account's QuotaUsage (RFC 9208 STORAGE in bytes and MESSAGE), read from
        counters, never by scanning messages. Writes that would take the account over a
        limit (append, copy, delivery) fail with QuotaExceeded (MailboxFull when the message
        could fit once space is freed), and change nothing; a move never does."""

    def watch(name: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` (on a later reactor turn) after folder ``name`` changed
        through this process (deliveries, APPEND, COPY/MOVE into it, flag changes,
        expunges, its DELETE or RENAME); returns the function that stops watching. A hint
        for IDLE: changes by other processes are not reported."""


class IMailbox(Interface):
    """One folder: a UID-ordered sequence of messages."""

    name = Attribute("The folder's name (str).")

    def info() -> FolderInfo:
        """The folder's current FolderInfo (counts, UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ)."""

    def uids(first: int = 1, last: int | None = None) -> Iterator[int]:
        """Iterator of the UIDs present in ``first..last`` (inclusive; ``None`` = no upper
        bound), ascending."""

    def flags(first: int = 1, last: int | None = None) -> Iterator[FlagInfo]:
        """Iterator of FlagInfo for the messages in ``first..last``, ascending by UID."""

    def changed_since(modseq: int) -> Iterator[FlagInfo]:
        """Iterator of FlagInfo for messages whose modseq is greater than ``modseq``,
        ascending by modseq (CONDSTORE/QRESYNC)."""

    def expunged_since(modseq: int) -> list[int] | None:
        """The UIDs, ascending, of messages removed (expunged, moved away) at a modseq
        greater than ``modseq``: a list, or None when the provider no longer knows (it keeps
        a bounded number of expunge records; below the oldest one it kept, the answer is
        None and a QRESYNC client gets a full resync, RFC 7162 §3.2.5.2).

        Every removal raises the folder's HIGHESTMODSEQ, and is recorded in the same atomic
        change as the removal itself, so an answer is never missing a UID."""

    def message(uid: int) -> IMessage:
        """The message with ``uid``; NoSuchMessage if it is not (or no longer) here."""

    def messages(uids: Iterable[int], meta: bool | str = True) -> Iterator[IMessage]:
        """Batch look-up for FETCH and SEARCH: an iterator of the IMessage of each UID of
        ``uids`` (an ascending iterable) that is present, in that order; absent ones are
        skipped. Reads a chunk of messages per index read transaction, never one per message.

        With ``meta=False`` the per-object parse results are not read: ``info.envelope``,
        ``bodystructure`` and ``attachments`` are empty and ``spam`` is None, while UID,
        flags, modseq, size, internal date, save date and object id are as :meth:`message`
        gives them. With ``meta="envelope"`` only ``info.envelope`` of the parse results is
        read (SEARCH SUBJECT/FROM, FETCH ENVELOPE). With ``meta="rendered"`` a provider that
        keeps the IMAP items rendered at delivery gives them in ``info.rendered`` and may leave
        the parse results empty; where it has none (or keeps none) the parse results are read
        as with ``meta=True``. Ask for ``meta`` only when ENVELOPE,
        BODYSTRUCTURE or the like is wanted: decoding it is most of a look-up's cost."""

    def append(
        source: BinaryIO, flags: Iterable[str] = (), internaldate: float | None = None
    ) -> Deferred[int]:
        """Store a message read from ``source``. Deferred[int]: the new UID, fired only after
        the message is durable."""

    def store_flags(
        uids: Iterable[int], flags: Iterable[str], mode: FlagMode
    ) -> Deferred[list[FlagInfo]]:
        """Change flags of the messages ``uids`` (an iterable of UIDs; absent ones are ignored)
        with a FlagMode. Deferred[list[FlagInfo]] with the new state of each changed message."""

    def conditional_store(
        uids: Iterable[int], flags: Iterable[str], mode: FlagMode, unchangedsince: int
    ) -> Deferred[tuple[list[FlagInfo], list[int]]]:
        """:meth:`store_flags`, but a message whose modseq is greater than
        ``unchangedsince`` is left alone, decided atomically with the change (RFC 7162
        §3.1.3 UNCHANGEDSINCE). Deferred[(list of FlagInfo of the changed messages, list of
        the UIDs left alone, ascending)]."""

    def expunge(uids: Iterable[int] | None = None) -> Deferred[list[int]]:
        """Remove the given messages (default: every message flagged \\Deleted). Deferred[list
        of expunged UIDs, ascending]."""

    def copy(uids: Iterable[int], destination: str) -> Deferred[list[tuple[int, int]]]:
        """Add the messages to folder ``destination`` without copying their bytes (the copies
        share an object_id: labels). Deferred[list of (source uid, new uid)]."""

    def move(uids: Iterable[int], destination: str) -> Deferred[list[tuple[int, int]]]:
        """Copy then expunge, atomically. Deferred[list of (source uid, new uid)]."""


class IMailboxRecords(Interface):
    """Optional, beside :class:`IMailbox`: a mailbox that can list its index records without
    building a message object each. IMAP FETCH of index items only (FLAGS UID RFC822.SIZE
    INTERNALDATE, ENVELOPE/BODYSTRUCTURE/BODY kept rendered) uses it when the mailbox
    provides it and :meth:`IMailbox.messages` otherwise, with the same answers."""

    def records(
        uids: Iterable[int], rendered: bool = False
    ) -> Iterator[tuple[int, frozenset[str], int, int, float, str, bytes | None]]:
        """The cheapest batch look-up, for FETCH of index items only (FLAGS UID RFC822.SIZE
        INTERNALDATE, and ENVELOPE/BODYSTRUCTURE/BODY where they are kept rendered): a plain
        tuple ``(uid, flags, modseq, size, internaldate, object_id, packed)`` per UID of
        ``uids`` (an ascending iterable) that is present, in that order; absent ones are
        skipped. The values equal :meth:`IMailbox.messages`' ``info`` fields. ``packed`` is None
        unless ``rendered`` is asked for and the provider keeps the object's IMAP items
        rendered at delivery: then it is their stored form
        (:func:`mailserver.message.imap_render.pack`). Reads a chunk of messages per index
        read transaction and builds no object per message but the tuple."""


class IMessage(Interface):
    """One message in one folder."""

    info = Attribute("The MessageInfo of this message when it was looked up.")

    def open() -> BinaryIO:
        """A binary file with the message's bytes, exactly as delivered. The caller closes it."""

    def set_spam_verdict(verdict: SpamVerdict) -> Deferred[None]:
        """Record a SpamVerdict for this message (shared by every label). Deferred."""
