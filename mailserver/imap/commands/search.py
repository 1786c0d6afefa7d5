"""SEARCH and UID SEARCH, with ESEARCH results (RFC 9051 §6.4.4, RFC 4731) and SAVE (RFC 5182).

Flags come from one pass over the folder's flag index; sizes, dates and the envelope
(SUBJECT, FROM, TO, CC, BCC) from the index, read a batch of messages per store call
(:meth:`IMailbox.messages`, the objects' parse results only for the keys that need them);
only HEADER (the header block alone), BODY and TEXT read the message bytes, in the thread
pool, a batch at a time. A mailbox that provides
:class:`~mailserver.interfaces.header_index.IHeaderIndex` answers SUBJECT, FROM, TO, CC and
BCC in one pass over its index for the whole folder, and gives the header blocks HEADER
looks in (the files are read for those it does not keep); a search made only of such keys
(with AND and OR) reads nothing else. The texts compared are the same either way
(:mod:`mailserver.message.search_text`). Strings match as case-insensitive substrings (RFC
9051 §6.4.4); BODY and TEXT look in the decoded text parts. Dates compare by day, internal
dates in UTC, Date headers in their own zone.

An IMAP4rev2 client, or any ``SEARCH RETURN (...)``, gets an ESEARCH response; an IMAP4rev1
client's plain SEARCH gets ``* SEARCH``.

``MODSEQ n`` (RFC 7162 §3.1.5) matches messages whose modseq is at least ``n`` (a per-message
modseq: the entry name and type are accepted and answered alike) and adds the highest modseq
of the result, ``(MODSEQ m)`` after ``* SEARCH`` or ``MODSEQ m`` in ESEARCH.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import time
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from mailserver.errors import MailError
from mailserver.imap import response
from mailserver.imap.commands.base import Result
from mailserver.imap.commands.fetch import read_headers, read_messages
from mailserver.imap.commands.sections import structure_of
from mailserver.imap.grammar import Command
from mailserver.imap.parse_search import (
    All,
    And,
    Contains,
    DateKey,
    HasFlag,
    Header,
    InSet,
    ModSeqKey,
    Not,
    ObjectId,
    Or,
    SaveDateSupported,
    Search,
    SearchKey,
    SizeKey,
    Within,
)
from mailserver.imap.selected import RECENT, SelectedMailbox
from mailserver.imap.session import Session
from mailserver.interfaces import IMessage
from mailserver.interfaces.header_index import IHeaderIndex
from mailserver.message import body_text, search_text
from mailserver.message.headers import (
    decode_header_value,
    get_headers,
    parse_headers,
    split_message,
    unfold,
)
from mailserver.types import MessageInfo

__all__ = [
    "Candidate",
    "Matcher",
    "all_keys",
    "header_matches",
    "header_text_contains",
    "search",
]

#: Messages read per trip to the thread pool (keys that read bytes), else per store call.
BATCH = 64
GROUP = 512


@dataclass
class Candidate:
    """One message as SEARCH sees it: its sequence number, UID, flags, and (read only when a
    key needs them) its stored facts and bytes. The web API's search reuses it."""

    number: int
    uid: int
    flags: frozenset[str]
    modseq: int = 0
    info: MessageInfo | None = None
    data: bytes | None = None
    #: Its text leaves as the store keeps them (else its cached structure gives them).
    leaves: list[body_text.Leaf] | None = None


def all_keys(key: SearchKey) -> list[SearchKey]:
    """``key`` and every key nested in it (to see what a search needs to read)."""
    if isinstance(key, And):
        return [key, *(k for sub in key.keys for k in all_keys(sub))]
    if isinstance(key, Or):
        return [key, *all_keys(key.left), *all_keys(key.right)]
    if isinstance(key, Not):
        return [key, *all_keys(key.key)]
    return [key]


async def search(session: Session, command: Command) -> Result:
    args = command.args
    assert isinstance(args, Search)
    view = session.selected
    assert view is not None
    keys = all_keys(args.key)
    saving = args.returns is not None and "SAVE" in args.returns
    if saving:
        view.saved = []  # RFC 5182 §2.1: a failed search saves the empty set
    known = _from_header_index(view, keys)
    keys = [k for k in keys if not (isinstance(k, Contains) and k in known)]
    needs_info = any(isinstance(k, SizeKey | DateKey | Within | Contains | ObjectId) for k in keys)
    # The objects' parse results (envelope, structure) only for the keys that look in them.
    needs_body = any(isinstance(k, Contains) and k.field in ("BODY", "TEXT") for k in keys)
    needs_meta: bool | str = needs_body or (
        "envelope"  # SUBJECT, FROM, ..., SENT*: the envelope alone
        if any(isinstance(k, Contains) or (isinstance(k, DateKey) and k.field == "sent")
               for k in keys)
        else False
    )  # fmt: skip
    needs_header = any(isinstance(k, Header) for k in keys)
    needs_bytes = needs_body or needs_header
    by_modseq = any(isinstance(k, ModSeqKey) for k in keys)
    if by_modseq:
        session.use_condstore()  # RFC 7162 §3.1: a CONDSTORE-enabling command
    found_uids = _combined(args.key, known)
    if found_uids is not None:  # answered by the header index alone
        pairs = [(number, uid) for number, uid in enumerate(view.uids, 1) if uid in found_uids]
        numbers = [uid if args.uid else number for number, uid in pairs]
        untagged = _results(session, command.tag, args, numbers, [uid for _, uid in pairs])
        code = b"EXPUNGEISSUED" if view.expunge_pending() else None
        return Result(text=f"{command.name} completed", code=code, untagged=untagged)
    headers_kept = needs_header and not needs_body and IHeaderIndex.providedBy(view.mailbox)
    # With the text leaves kept, BODY and TEXT need no cached structure: the parse results
    # are read only for the other keys (and for a message whose leaves are not kept).
    leaves_kept = needs_body and IHeaderIndex.providedBy(view.mailbox)
    if leaves_kept:
        needs_meta = (
            "envelope"
            if any((isinstance(k, Contains) and k.field not in ("BODY", "TEXT"))
                   or (isinstance(k, DateKey) and k.field == "sent") for k in keys)
            else False
        )  # fmt: skip
    # With the text leaves kept, each file is read up to the end of its last text leaf (the
    # attachments after it are not read), and of its header block when TEXT or HEADER look
    # in that (its length from the kept block; the whole file when it is not kept).
    with_header = needs_header or any(isinstance(k, Contains) and k.field == "TEXT" for k in keys)
    current = {info.uid: info for info in view.mailbox.flags()}
    # Only messages that can match the known keys ANDed with the rest are read.
    required = _required(args.key, known)
    candidates = [
        Candidate(number, uid, current[uid].flags, current[uid].modseq)
        for number, uid in enumerate(view.uids, 1)
        if uid in current and (required is None or uid in required)
    ]
    matcher = Matcher(view, time.time(), known)
    matched: list[Candidate] = []
    step = BATCH if needs_bytes and not headers_kept else GROUP
    for start in range(0, len(candidates), step):
        batch = candidates[start : start + step]
        if needs_info or needs_bytes:
            # One store call per batch (view.uids ascend, so the batch's UIDs do).
            found = {
                message.info.uid: message
                for message in view.mailbox.messages([c.uid for c in batch], needs_meta)
            }
            if leaves_kept:
                leaves = dict(view.mailbox.text_leaves([c.uid for c in batch]))
                lacking = [c.uid for c in batch if c.uid in found and c.uid not in leaves]
                for message in view.mailbox.messages(lacking, True) if lacking else ():
                    found[message.info.uid] = message  # no leaves kept: the structure
                for candidate in batch:
                    candidate.leaves = leaves.get(candidate.uid)
            batch = [c for c in batch if c.uid in found]  # expunged meanwhile: left out
            for candidate in batch:
                candidate.info = found[candidate.uid].info
            if headers_kept:  # the header blocks the index keeps, the files for the rest
                kept = dict(view.mailbox.header_blocks([c.uid for c in batch]))
                for candidate in batch:
                    candidate.data = kept.get(candidate.uid)
            unread = [c for c in batch if c.data is None] if needs_bytes else []
            if unread and leaves_kept:  # up to the end of the last text leaf (kept or not)
                lengths: dict[int, int] = {}
                if with_header:
                    uids = [c.uid for c in unread]
                    lengths = {u: len(b) for u, b in view.mailbox.header_blocks(uids)}
                wanted = [(found[c.uid], _read_end(c, lengths, with_header)) for c in unread]
                for candidate, data in zip(unread, await session.in_thread(_read_upto, wanted)):
                    candidate.data = data
            elif unread:
                reader = read_messages if needs_body else read_headers
                messages = [found[c.uid] for c in unread]
                for candidate, data in zip(unread, await session.in_thread(reader, messages)):
                    candidate.data = data
            if needs_bytes:
                batch = [c for c in batch if c.data is not None]
        matched += [c for c in batch if matcher.match(args.key, c)]
        for candidate in batch:
            candidate.data = None
            candidate.info = None
            candidate.leaves = None
    numbers = [c.uid if args.uid else c.number for c in matched]
    modseqs = [c.modseq for c in matched] if by_modseq else None
    untagged = _results(session, command.tag, args, numbers, [c.uid for c in matched], modseqs)
    code = b"EXPUNGEISSUED" if view.expunge_pending() else None
    return Result(text=f"{command.name} completed", code=code, untagged=untagged)


def _from_header_index(
    view: SelectedMailbox, keys: list[SearchKey]
) -> dict[Contains, frozenset[int]]:
    """The UIDs matching each SUBJECT/FROM/TO/CC/BCC key, from the mailbox's header index
    (:class:`IHeaderIndex`); empty when it has none, or lacks a text of any message."""
    wanted = {k for k in keys if isinstance(k, Contains) and k.field in search_text.FIELDS}
    if not wanted or not IHeaderIndex.providedBy(view.mailbox):
        return {}
    known = {}
    for key in wanted:
        uids = view.mailbox.search_field(key.field, key.value)
        if uids is None:
            return {}
        known[key] = frozenset(uids)
    return known


def _combined(key: SearchKey, known: dict[Contains, frozenset[int]]) -> frozenset[int] | None:
    """The UIDs matching ``key`` when it is made only of ``known`` keys, AND and OR (present
    messages only); None otherwise."""
    if not known:
        return None
    if isinstance(key, Contains):
        return known.get(key)
    if isinstance(key, And) and key.keys:
        parts = [_combined(k, known) for k in key.keys]
        if any(part is None for part in parts):
            return None
        return frozenset.intersection(*parts)  # type: ignore[arg-type]
    if isinstance(key, Or):
        left, right = _combined(key.left, known), _combined(key.right, known)
        return None if left is None or right is None else left | right
    return None


def _read_end(candidate: Candidate, headers: dict[int, int], with_header: bool) -> int | None:
    """How much of the candidate's file a search reads: up to where its last text leaf ends,
    and its header block (``headers``: kept block lengths) ``with_header``; None: all."""
    leaves = candidate.leaves
    if leaves is None:
        structure = candidate.info.bodystructure if candidate.info is not None else {}
        if "body_offset" not in structure:
            return None
        leaves = body_text.text_leaves(structure)
    end = max((start + length for start, length, _e, _c in leaves), default=0)
    if with_header:
        header = headers.get(candidate.uid)
        return None if header is None else max(end, header)
    return end


def _read_upto(wanted: list[tuple[IMessage, int | None]]) -> list[bytes | None]:
    """In a worker thread: each message's first ``n`` octets (all of it for None); None for
    one that is gone."""
    out: list[bytes | None] = []
    for message, end in wanted:
        try:
            with message.open() as source:
                out.append(source.read() if end is None else source.read(end))
        except (OSError, MailError):
            out.append(None)
    return out


def _required(key: SearchKey, known: dict[Contains, frozenset[int]]) -> frozenset[int] | None:
    """UIDs every match of ``key`` is among, from the ``known`` keys it ANDs (directly or in
    nested ANDs); None when it ANDs none."""
    if isinstance(key, Contains):
        return known.get(key)
    if isinstance(key, And):
        parts = [part for part in (_required(k, known) for k in key.keys) if part is not None]
        return frozenset.intersection(*parts) if parts else None
    return None


def _results(
    session: Session,
    tag: str,
    args: Search,
    numbers: list[int],
    uids: list[int],
    modseqs: list[int] | None = None,
) -> list[bytes]:
    """The SEARCH or ESEARCH response; ``modseqs`` (those of the matches, for a MODSEQ
    search) add the highest of them (RFC 7162 §3.1.5; none when nothing matched)."""
    view = session.selected
    assert view is not None
    if args.returns is None and not session.rev2:
        found = [b"%d" % n for n in numbers]
        if modseqs:
            found.append(b"(MODSEQ %d)" % max(modseqs))
        return [response.untagged(b"SEARCH", *found)]
    options = args.returns or ("ALL",)
    if "SAVE" in options:
        # RFC 5182 §2.1: with MIN and/or MAX only, just those are saved.
        if set(options) & {"ALL", "COUNT"} or not set(options) & {"MIN", "MAX"}:
            view.saved = list(uids)
        else:
            chosen = set()
            if uids and "MIN" in options:
                chosen.add(uids[0])
            if uids and "MAX" in options:
                chosen.add(uids[-1])
            view.saved = sorted(chosen)
        if options == ("SAVE",):
            return []  # RFC 5182 §2.1: no ESEARCH for SAVE alone
    results: dict[str, Any] = {}
    if "MIN" in options and numbers:
        results["MIN"] = min(numbers)
    if "MAX" in options and numbers:
        results["MAX"] = max(numbers)
    if "ALL" in options:
        results["ALL"] = numbers
    if "COUNT" in options:
        results["COUNT"] = len(numbers)
    if modseqs:
        if set(options) & {"ALL", "COUNT"}:
            results["MODSEQ"] = max(modseqs)
        else:  # RFC 7162 §3.1.5 with RFC 4731: the highest of the messages returned
            results["MODSEQ"] = max(
                modseqs[numbers.index(results[o])] for o in ("MIN", "MAX") if o in results
            )
    return [response.esearch(tag, args.uid, results)]


def header_matches(block: bytes, name: str, value: str) -> bool:
    """``HEADER name value`` on a header block: a field called ``name`` whose decoded value
    holds ``value``, case-insensitively (RFC 9051 §6.4.4).

    Without parsing when the answer is plainly no: in an ASCII block with no encoded-word
    a field's decoded value is its lines' text joined at the folds (each continuation line
    starts with a blank), so a search string with no blank in it can only be found within
    one line of the block."""
    wanted = value.casefold()
    if wanted and block.isascii() and b"=?" not in block and " " not in wanted:
        if "\t" not in wanted and (not wanted.isascii() or wanted.encode() not in block.lower()):
            return False
    values = get_headers(parse_headers(block), name)
    return any(wanted in decode_header_value(v).casefold() for v in values)


def header_text_contains(block: bytes, wanted: str) -> bool:
    """True when the decoded header block (SEARCH TEXT's header part) holds ``wanted``
    (case-folded). An ASCII block without encoded-words decodes to itself unfolded, so it is
    searched as lower-cased bytes."""
    if block.isascii() and b"=?" not in block:
        return wanted.isascii() and wanted.encode() in unfold(block).lower()
    return wanted in decode_header_value(block).casefold()


def _day(timestamp: float) -> dt.date:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).date()


def _sent_day(info: MessageInfo) -> dt.date | None:
    raw = info.envelope.get("date")
    if not raw:
        return None
    try:
        return email.utils.parsedate_to_datetime(str(raw)).date()
    except (TypeError, ValueError, IndexError):
        return None


class Matcher:
    """Evaluates a parsed search key against candidates of one mailbox view (RFC 9051
    §6.4.4); shared by IMAP SEARCH and the web API's search. ``known``: the UIDs matching
    some SUBJECT/FROM/TO/CC/BCC keys, worked out beforehand (from the header index)."""

    def __init__(
        self,
        view: SelectedMailbox,
        now: float,
        known: Mapping[Contains, AbstractSet[int]] | None = None,
    ) -> None:
        self.view = view
        self.now = now
        self.known = known or {}
        self.last_uid = view.uids[-1] if view.uids else 0
        self.count = len(view.uids)

    def match(self, key: SearchKey, c: Candidate) -> bool:
        if isinstance(key, All):
            return True
        if isinstance(key, And):
            return all(self.match(k, c) for k in key.keys)
        if isinstance(key, Or):
            return self.match(key.left, c) or self.match(key.right, c)
        if isinstance(key, Not):
            return not self.match(key.key, c)
        if isinstance(key, HasFlag):
            if key.flag == RECENT:
                return (c.uid in self.view.recent) == key.present
            present = key.flag.lower() in {f.lower() for f in c.flags}
            return present == key.present
        if isinstance(key, InSet):
            if key.sequence.saved:
                return c.uid in (self.view.saved or ())
            if key.uid:
                return key.sequence.contains(c.uid, self.last_uid)
            return key.sequence.contains(c.number, self.count)
        if isinstance(key, SaveDateSupported):
            return True  # RFC 8514 §4.2: every mailbox here keeps save dates
        if isinstance(key, ModSeqKey):
            return c.modseq >= key.modseq  # RFC 7162 §3.1.5
        if isinstance(key, Contains) and key in self.known:
            return c.uid in self.known[key]
        info = c.info
        assert info is not None
        if isinstance(key, ObjectId):  # RFC 8474 §6; no THREADID: threads are not computed
            return key.kind == "EMAILID" and info.object_id == key.value
        if isinstance(key, SizeKey):
            return info.size > key.size if key.larger else info.size < key.size
        if isinstance(key, Within):
            age = self.now - info.internaldate
            return age >= key.seconds if key.older else age < key.seconds
        if isinstance(key, DateKey):
            if key.field == "saved":  # RFC 8514 §4.2 (no save date: the internal date)
                day: dt.date | None = _day(info.savedate or info.internaldate)
            elif key.field == "internal":
                day = _day(info.internaldate)
            else:
                day = _sent_day(info)
            if day is None:
                return False
            if key.relation == "before":
                return day < key.date
            if key.relation == "on":
                return day == key.date
            return day >= key.date
        if isinstance(key, Header):
            return self._header(key, c)
        assert isinstance(key, Contains)
        return self._contains(key, c, info)

    def _header(self, key: Header, c: Candidate) -> bool:
        assert c.data is not None
        return header_matches(split_message(c.data)[0], key.name, key.value)

    def _contains(self, key: Contains, c: Candidate, info: MessageInfo) -> bool:
        wanted = key.value.casefold()
        if key.field in search_text.FIELDS:
            return wanted in search_text.field_text(info.envelope, key.field)
        assert c.data is not None
        if key.field == "TEXT" and header_text_contains(split_message(c.data)[0], wanted):
            return True
        leaves = c.leaves
        if leaves is None:
            leaves = body_text.text_leaves(structure_of(info.bodystructure, c.data))
        return body_text.contains(wanted, c.data, leaves)
