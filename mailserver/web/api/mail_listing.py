"""``GET /folders/{folder}/messages``: one page of a folder, without loading the folder.

The default order, newest first (``-date``), pages by UID (UIDs ascend with arrival, RFC 9051
§2.3.1.1): the UIDs below the cursor are read from the index in windows going backwards, and
only the page's messages are looked up, in one :meth:`IMailbox.messages` batch. ``date``
(oldest first) pages forward the same way. The other sorts (``size``, ``from``,
``subject``, each with ``-`` for descending) make one pass over the folder's index metadata,
at most :data:`MAX_SORTED` messages, in batches of :data:`BATCH` per store call, and page by
offset (rule 1 of :mod:`mailserver.web.api.mail`, which re-exports these names).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.task import deferLater

from mailserver.types import MessageInfo
from mailserver.web.api import compose, render
from mailserver.web.api.compose import account_of
from mailserver.web.api.mail_json import summary_json
from mailserver.web.api.routing import Call, Problem

#: Messages per store call when a pass reads index metadata.
BATCH = 256
#: The most messages a non-UID sort or a search looks at in one folder.
MAX_SORTED = 200_000
#: Largest page.
MAX_LIMIT = 500
_SORTS = ("date", "-date", "size", "-size", "from", "-from", "subject", "-subject")


def _uids_before(mailbox: Any, before: int, limit: int) -> list[int]:
    """The ``limit`` highest UIDs below ``before``, descending: index windows read backwards
    (doubling), never the whole folder unless the page needs it."""
    found: list[int] = []
    high = before - 1
    window = max(limit * 2, 64)
    while high >= 1 and len(found) < limit:
        low = max(1, high - window + 1)
        chunk = list(mailbox.uids(low, high))
        found.extend(reversed(chunk))
        high = low - 1
        window *= 2
    return found[:limit]


def _uids_after(mailbox: Any, after: int, limit: int) -> list[int]:
    out: list[int] = []
    for uid in mailbox.uids(after + 1, None):
        out.append(uid)
        if len(out) >= limit:
            break
    return out


def _infos(mailbox: Any, uids: Iterable[int], meta: bool | str = True) -> list[MessageInfo]:
    """The MessageInfo of ``uids`` (any order), in that order, a batch per store call."""
    wanted = list(uids)
    found: dict[int, MessageInfo] = {}
    ordered = sorted(wanted)
    for start in range(0, len(ordered), BATCH):
        for message in mailbox.messages(ordered[start : start + BATCH], meta):
            found[message.info.uid] = message.info
    return [found[uid] for uid in wanted if uid in found]


def _sort_key(sort: str) -> Callable[[MessageInfo], Any]:
    field = sort.lstrip("-")
    if field == "size":
        return lambda info: (info.size, info.uid)
    if field == "subject":
        return lambda info: (str(info.envelope.get("subject") or "").casefold(), info.uid)

    def sender(info: MessageInfo) -> tuple[str, int]:
        first = render.addresses(info.envelope.get("from"))
        text = (first[0]["name"] or first[0]["address"] or "") if first else ""
        return (text.casefold(), info.uid)

    return sender


async def _ranked(call: Call, mailbox: Any, sort: str) -> list[int]:
    """The folder's UIDs (at most :data:`MAX_SORTED`) in ``sort`` order: one pass over the
    index metadata a batch at a time, keeping only each message's sort key, and letting
    the reactor run between batches."""
    meta: bool | str = False if sort.lstrip("-") == "size" else "envelope"
    key = _sort_key(sort)
    uids = list(itertools.islice(mailbox.uids(), MAX_SORTED))
    keyed: list[tuple[Any, int]] = []
    for start in range(0, len(uids), BATCH):
        for message in mailbox.messages(uids[start : start + BATCH], meta):
            keyed.append((key(message.info), message.info.uid))
        await deferLater(call.context.reactor, 0, lambda: None)
    keyed.sort(reverse=sort.startswith("-"))
    return [uid for _, uid in keyed]


async def list_messages(call: Call) -> dict[str, object]:
    """One page of a folder (see rule 1 for the cost of each sort)."""
    mailbox = account_of(call).folder(call.params["folder"])
    limit = call.int_arg("limit", 50, 1, MAX_LIMIT)
    sort = call.arg("sort", "-date") or "-date"
    if sort not in _SORTS:
        raise Problem(400, "Bad query parameter", f"sort must be one of {', '.join(_SORTS)}",
                      field="sort")  # fmt: skip
    info = mailbox.info()
    next_page: dict[str, int] | None = None
    if sort == "-date":
        before = call.int_arg("before_uid", info.uidnext, 1, compose.MAX_UID + 1)
        uids = _uids_before(mailbox, before, limit + 1)
        if len(uids) > limit:
            uids = uids[:limit]
            next_page = {"before_uid": uids[-1]}
        infos = _infos(mailbox, uids)
    elif sort == "date":
        after = call.int_arg("after_uid", 0, 0, compose.MAX_UID)
        uids = _uids_after(mailbox, after, limit + 1)
        if len(uids) > limit:
            uids = uids[:limit]
            next_page = {"after_uid": uids[-1]}
        infos = _infos(mailbox, uids)
    else:
        offset = call.int_arg("offset", 0, 0, MAX_SORTED)
        ranked = await _ranked(call, mailbox, sort)
        page = ranked[offset : offset + limit]
        if offset + limit < len(ranked):
            next_page = {"offset": offset + limit}
        infos = _infos(mailbox, page)
    return {
        "folder": mailbox.name,
        "messages": [summary_json(i) for i in infos],
        "total": info.exists,
        "next": next_page,
    }
