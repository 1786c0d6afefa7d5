"""An optional contract of a mailbox whose index keeps each message's IMAP ENVELOPE,
BODYSTRUCTURE and BODY as sent, so ``FETCH 1:* BODYSTRUCTURE`` (one such item beside UID,
RFC822.SIZE and MODSEQ) is one walk of the index that copies only the wanted item."""

from __future__ import annotations

from collections.abc import Iterable

from zope.interface import Interface


class IRenderedItems(Interface):
    """Optional, beside :class:`~mailserver.interfaces.store.IMailbox` on the same object:
    the folder's index keeps the items of :func:`mailserver.message.imap_render.render`
    per message. The IMAP server uses it when a mailbox provides it, and otherwise
    :meth:`IMailboxRecords.records`, with the same answers. Reads only; fast enough for the reactor
    thread (no file is opened)."""

    def rendered_item(
        uids: Iterable[int], tag: int, utf8: bool
    ) -> list[tuple[int, int, int, bytes]] | None:
        """``(uid, modseq, size, value)`` of each of ``uids`` (an ascending iterable) that is
        present, in that order, read in one index read transaction: ``value`` is the item
        with one-letter ``tag`` (:data:`mailserver.message.imap_render.ITEMS`, as an int) as
        rendered at delivery, its UTF-8 variant for a ``utf8`` client where one is kept.
        None when any of those messages has no such item kept (then use
        :meth:`IMailboxRecords.records`); the values equal :meth:`IMailboxRecords.records`' and the
        rendered items' there."""
