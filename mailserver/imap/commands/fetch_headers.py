"""FETCH of header items from the header index, one loop per group of messages (issue 6).

``FETCH 1:* BODY.PEEK[HEADER.FIELDS (From To Subject Date)]``, ``BODY[HEADER]``,
``RFC822.HEADER`` and the like, alone or with UID, FLAGS and MODSEQ, need only each
message's header block: a mailbox that provides
:class:`~mailserver.interfaces.header_index.IHeaderIndex` keeps it in its index, so a group
of messages is answered from one walk of the kept blocks (and one of the flag index, when
FLAGS or MODSEQ are asked for) instead of opening every file. A group with a message whose
block is not kept (indexed before the header index, a huge header section) or that is gone
is left to the general path (:mod:`mailserver.imap.commands.fetch`), which reads the files;
the bytes sent are the general path's either way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from mailserver.imap import response
from mailserver.imap.commands.sections import field_cutter, header_fields
from mailserver.imap.parse_fetch import BodySection, FetchAtt, FetchItem
from mailserver.imap.selected import SelectedMailbox, modseq_value
from mailserver.interfaces.header_index import IHeaderIndex

__all__ = ["HeaderFetch"]

Partial = tuple[int, int] | None

_HEADER_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})
_FROM_FLAGS = frozenset({"UID", "FLAGS", "MODSEQ"})


def _cut(block: bytes, fields: tuple[str, ...], exclude: bool) -> bytes:
    return header_fields(block, fields, exclude=exclude)


def header_item(item: FetchItem) -> bool:
    """True for the items cut from the top-level header block alone."""
    if isinstance(item, BodySection):
        spec = item.section
        return not item.binary and not spec.part and spec.text in _HEADER_TEXTS
    return isinstance(item, FetchAtt) and item.name == "RFC822.HEADER"


class HeaderFetch:
    """The responses of one FETCH of header items (and UID, FLAGS, MODSEQ) from the header
    index; :meth:`of` gives None for any other FETCH or mailbox."""

    def __init__(self, view: SelectedMailbox, items: list[FetchItem]) -> None:
        self.view = view
        self.flags = any(
            isinstance(item, FetchAtt) and item.name in ("FLAGS", "MODSEQ") for item in items
        )
        #: Per item: (what, label + space, the cut of the block, partial), worked out once.
        self.plan: list[tuple[str, bytes, Callable[[bytes], bytes] | None, Partial]] = []
        for item in items:
            if isinstance(item, BodySection):
                spec = item.section
                label = item.label().encode("utf-8") + b" "
                cut = None
                if spec.text != "HEADER":
                    exclude = spec.text == "HEADER.FIELDS.NOT"
                    cut = None if exclude else field_cutter(spec.fields)
                    if cut is None:
                        cut = functools.partial(_cut, fields=spec.fields, exclude=exclude)
                self.plan.append(("BODY", label, cut, item.partial))
            else:
                self.plan.append((item.name, item.name.encode("ascii") + b" ", None, None))

    @classmethod
    def of(cls, view: SelectedMailbox, items: list[FetchItem]) -> HeaderFetch | None:
        if not IHeaderIndex.providedBy(view.mailbox):
            return None
        if not any(header_item(item) for item in items):
            return None
        for item in items:
            if not header_item(item) and not (
                isinstance(item, FetchAtt) and item.name in _FROM_FLAGS
            ):
                return None
        return cls(view, items)

    def lines(self, group: list[tuple[int, int]], uids: list[int]) -> bytes | None:
        """The responses of ``group`` ((number, uid) pairs; ``uids`` their UIDs ascending) as
        one buffer; None when a message's block is not kept or the message is gone."""
        blocks = dict(self.view.mailbox.header_blocks(uids))
        if len(blocks) < len(uids):
            return None
        states = {}
        if self.flags:
            states = {info.uid: info for info in self.view.mailbox.flags(uids[0], uids[-1])}
            if any(uid not in states for uid in uids):
                return None
        if len(self.plan) == 1 and self.plan[0][0] == "BODY" and self.plan[0][3] is None:
            # One header section without a partial (the common FETCH): one format per message.
            _what, label, cut, _partial = self.plan[0]
            contents = (
                (number, blocks[uid] if cut is None else cut(blocks[uid])) for number, uid in group
            )
            return b"".join(
                [
                    b"* %d FETCH (%s{%d}\r\n%s)\r\n" % (number, label, len(content), content)
                    for number, content in contents
                ]
            )
        flags_for = self.view.flags_for
        literal = response.literal
        out = []
        for number, uid in group:
            block = blocks[uid]
            values = []
            for what, label, cut, partial in self.plan:
                if what == "BODY":
                    content = block if cut is None else cut(block)
                    if partial is not None:
                        content = content[partial[0] : partial[0] + partial[1]]
                    values.append(label + literal(content))
                elif what == "RFC822.HEADER":
                    values.append(label + literal(block))
                elif what == "UID":
                    values.append(label + b"%d" % uid)
                elif what == "FLAGS":
                    values.append(label + flags_for(uid, states[uid].flags))
                else:
                    values.append(label + modseq_value(states[uid].modseq))
            out.append(b"* %d FETCH (%s)\r\n" % (number, b" ".join(values)))
        return b"".join(out)
