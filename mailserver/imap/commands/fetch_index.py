"""FETCH of index items only, one tight loop per group of messages (issue 6).

``FETCH 1:* (FLAGS UID RFC822.SIZE INTERNALDATE)``, ``FETCH 1:* BODYSTRUCTURE`` and the like
need no message file: every value is in the index record (:meth:`IMailboxRecords.records`, for
a mailbox that provides it; others go the general path), or, for
ENVELOPE, BODYSTRUCTURE and BODY, in the items the store keeps rendered at delivery. For
those commands each response is one ``%``-format of a template built once per command (the
items in the order the client asked) with the message's values: no value list, IMessage or
MessageInfo per message. A group with a message whose rendered items are neither stored nor
in the rendered cache is left to the general path (:mod:`mailserver.imap.commands.fetch`),
which renders and caches them; so the answers are the general path's, byte for byte.
One rendered item beside UID, RFC822.SIZE and MODSEQ (``FETCH 1:* BODYSTRUCTURE``) from a
mailbox providing :class:`~mailserver.interfaces.rendered_items.IRenderedItems` is read
straight out of the index, only that item copied (:meth:`IndexFetch.direct`), with the same
answers.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from mailserver.imap.parse_fetch import FetchAtt, FetchItem
from mailserver.imap.rendered import RenderedCache, stored
from mailserver.imap.selected import SelectedMailbox
from mailserver.interfaces.rendered_items import IRenderedItems
from mailserver.interfaces.store import IMailboxRecords
from mailserver.message.imap_render import ITEMS

__all__ = ["IndexFetch", "date_time"]

#: The items this path renders, and the place of each one's value in a row (see
#: :meth:`IndexFetch.lines`): 0 the sequence number, 1 UID, 2 FLAGS, 3 MODSEQ, 4 RFC822.SIZE,
#: 5 INTERNALDATE, 6 EMAILID, 7.. the rendered items in the command's order.
_FORMS = {
    "UID": (b"UID %d", 1),
    "FLAGS": (b"FLAGS %s", 2),
    "MODSEQ": (b"MODSEQ (%d)", 3),
    "RFC822.SIZE": (b"RFC822.SIZE %d", 4),
    "INTERNALDATE": (b"INTERNALDATE %s", 5),
    "EMAILID": (b"EMAILID (%s)", 6),
    "THREADID": (b"THREADID NIL", None),  # RFC 8474 §5.2: threads are not computed
}
_RENDERED = frozenset(ITEMS)

Record = tuple[int, frozenset[str], int, int, float, str, bytes | None]
#: A row of :meth:`IndexFetch.align`: a record, or a row of IRenderedItems (UID first).
RowT = TypeVar("RowT", bound=tuple[Any, ...])


class IndexFetch:
    """The responses of one FETCH whose items all come from the index (see the module
    docstring); :meth:`of` gives None for any other FETCH."""

    def __init__(
        self, view: SelectedMailbox, items: list[FetchItem], utf8: bool, cache: RenderedCache
    ) -> None:
        self.view = view
        self.utf8 = utf8
        self.cache = cache
        names = [item.name for item in items if isinstance(item, FetchAtt)]
        self.rendered = [(name, ITEMS[name][0]) for name in names if name in _RENDERED]
        parts: list[bytes] = []
        places: list[int] = [0]
        for name in names:
            if name in _RENDERED:
                parts.append(name.encode("ascii") + b" %s")
                places.append(7 + sum(1 for place in places if place >= 7))
                continue
            form, place = _FORMS[name]
            parts.append(form)
            if place is not None:
                places.append(place)
        self.template = b"* %d FETCH (" + b" ".join(parts) + b")\r\n"
        self.pick: Callable[[tuple[Any, ...]], Any] = operator.itemgetter(*places)
        self.flags = "FLAGS" in names
        self.date = "INTERNALDATE" in names
        self.emailid = "EMAILID" in names
        #: The one rendered item's tag when the mailbox can give it straight from its index
        #: (:meth:`direct`): no other item but the sequence number, UID, MODSEQ and size.
        self.direct_tag: int | None = None
        if (
            len(self.rendered) == 1
            and not (self.flags or self.date or self.emailid)
            and IRenderedItems.providedBy(view.mailbox)
        ):
            self.direct_tag = self.rendered[0][1]
            # (number, uid, modseq, size, value): the places of a row of lines() in it.
            self.direct_pick: Callable[[tuple[Any, ...]], Any] = operator.itemgetter(
                *[{0: 0, 1: 1, 3: 2, 4: 3, 7: 4}[place] for place in places]
            )

    @classmethod
    def of(
        cls, view: SelectedMailbox, items: list[FetchItem], utf8: bool, cache: RenderedCache
    ) -> IndexFetch | None:
        if not IMailboxRecords.providedBy(view.mailbox) or not items or not all(
            isinstance(item, FetchAtt) and (item.name in _FORMS or item.name in _RENDERED)
            for item in items
        ):
            return None
        return cls(view, items, utf8, cache)

    @property
    def wants(self) -> bool:
        """Whether the records must carry the rendered items (``records(rendered=...)``)."""
        return bool(self.rendered)

    def direct(self, group: list[tuple[int, int]], uids: list[int]) -> tuple[bytes, int] | None:
        """The responses of ``group`` ((sequence number, UID) pairs; ``uids`` their sorted
        UIDs) and how many messages they answer, from the one rendered item each message
        keeps in the index (:class:`IRenderedItems`): one walk of the index copying only that
        item, one ``%``-format per message. None when this FETCH is not of that kind or a
        message lacks the stored item (then :meth:`lines` answers, from the records), so the
        octets equal :meth:`lines`'."""
        if self.direct_tag is None:
            return None
        rows = IRenderedItems(self.view.mailbox).rendered_item(uids, self.direct_tag, self.utf8)
        if rows is None:
            return None
        kept, found = self.align(group, rows)
        template, pick = self.template, self.direct_pick
        lines = [
            template % pick((number, uid, modseq, size, value))
            for (number, _), (uid, modseq, size, value) in zip(kept, found)
        ]
        return b"".join(lines), len(kept)

    @staticmethod
    def align(
        group: list[tuple[int, int]], found: Iterable[RowT]
    ) -> tuple[list[tuple[int, int]], list[RowT]]:
        """The pairs of ``group`` whose UID has a record, and the record of each, in step."""
        records = list(found)
        if len(records) == len(group) and all(
            pair[1] == record[0] for pair, record in zip(group, records)
        ):
            return group, records
        by_uid = {record[0]: record for record in records}
        kept = [pair for pair in group if pair[1] in by_uid]
        return kept, [by_uid[uid] for _, uid in kept]

    def lines(self, group: list[tuple[int, int]], records: list[Record]) -> bytes | None:
        """The responses of ``group`` ((sequence number, UID) pairs) from the record of each
        (:meth:`align`); None when a message lacks a rendered item (then the general path
        answers the group)."""
        flags_for, date, utf8 = self.view.flags_for, date_time, self.utf8
        want_flags, want_date, want_id = self.flags, self.date, self.emailid
        rendered, template, pick = self.rendered, self.template, self.pick
        get = self.cache.get
        out = []
        if len(rendered) == 1 and not (want_flags or want_date or want_id):
            # One rendered item beside plain numbers (FETCH 1:* BODYSTRUCTURE, UID FETCH ...
            # ENVELOPE): the same row, built without the per-item loop.
            name, tag = rendered[0]
            for (number, _), (uid, _, modseq, size, _, object_id, packed) in zip(
                group, records
            ):
                value = None if packed is None else stored(packed, tag, utf8)
                if value is None:
                    value = get((object_id, name, utf8))
                    if value is None:
                        return None
                out.append(template % pick((number, uid, None, modseq, size, None, None, value)))
            return b"".join(out)
        for (number, _), (uid, flags, modseq, size, internal, object_id, packed) in zip(
            group, records
        ):
            row: tuple[Any, ...] = (
                number,
                uid,
                flags_for(uid, flags) if want_flags else None,
                modseq,
                size,
                date(internal) if want_date else None,
                object_id.encode("ascii") if want_id else None,
            )
            for name, tag in rendered:
                value = None if packed is None else stored(packed, tag, utf8)
                if value is None:
                    value = get((object_id, name, utf8))
                    if value is None:
                        return None
                row += (value,)
            out.append(template % pick(row))
        return b"".join(out)


#: The ``"dd-Mon-yyyy `` part of INTERNALDATE per day since the epoch (a mailbox's messages
#: arrive over few days compared with their number), bounded.
_DAYS: dict[int, bytes] = {}
_DAYS_KEPT = 4096
_MONTHS = [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun"]
_MONTHS += [b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"]


def date_time(value: float) -> bytes:
    """``"17-Jul-1996 02:44:25 +0000"``: INTERNALDATE of a POSIX timestamp in UTC, equal to
    :func:`mailserver.imap.response.date_time` of it (the second floored, as
    ``time.gmtime`` does), the date part memoised per day."""
    seconds = math.floor(value)
    day, second = divmod(seconds, 86400)
    prefix = _DAYS.get(day)
    if prefix is None:
        t = time.gmtime(day * 86400)
        if len(_DAYS) >= _DAYS_KEPT:
            _DAYS.clear()
        prefix = _DAYS[day] = b'"%2d-%s-%04d ' % (t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year)
    hour, second = divmod(second, 3600)
    return prefix + b'%02d:%02d:%02d +0000"' % (hour, second // 60, second % 60)
