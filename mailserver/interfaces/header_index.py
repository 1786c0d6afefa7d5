"""An optional contract of a mailbox whose index keeps each message's header block, search
texts and text leaves, so FETCH of header items and SEARCH on envelope keys need not read
every file, and SEARCH BODY/TEXT need not decode every cached structure."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from zope.interface import Interface


class IHeaderIndex(Interface):
    """Optional, beside :class:`~mailserver.interfaces.store.IMailbox` on the same object: the
    folder's index keeps the header block and the text leaves of (most of) its messages and,
    for every message, the texts SEARCH SUBJECT, FROM, TO, CC and BCC look in
    (:func:`mailserver.message.search_text.field_text` of its envelope). The IMAP server uses
    it when a mailbox provides it, and otherwise reads the files or the parse results, with
    the same results. Reads only; fast enough for the reactor thread (no file is opened)."""

    def header_blocks(uids: Iterable[int]) -> Iterator[tuple[int, bytes]]:
        """``(uid, header block)`` of each of ``uids`` (an ascending iterable) that is present
        and whose block is kept, in that order: the message's octets up to and including the
        first empty line (all of it when there is none), exactly as in its file. A UID left
        out is absent, or present without a kept block (read its file)."""

    def text_leaves(uids: Iterable[int]) -> Iterator[tuple[int, list[tuple[int, int, str, str]]]]:
        """``(uid, leaves)`` of each of ``uids`` (an ascending iterable) that is present and
        whose leaves are kept, in that order: :func:`mailserver.message.body_text.text_leaves`
        of its cached structure (where each text/* leaf sits in its file, and its transfer
        encoding and charset). A UID left out is absent, or present without kept leaves
        (use its cached structure)."""

    def search_field(field: str, value: str) -> list[int] | None:
        """The UIDs (ascending) of the folder's messages whose text for ``field`` (SUBJECT,
        FROM, TO, CC or BCC) contains ``value``, compared as
        :func:`mailserver.message.search_text.needle` says; None when the index does not
        hold that text for every message of the folder (then search another way)."""
