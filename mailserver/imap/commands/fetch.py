"""FETCH and UID FETCH (RFC 9051 §6.4.5, §6.4.8, §7.5.2; RFC 3516 BINARY).

Metadata (FLAGS, UID, INTERNALDATE, RFC822.SIZE, ENVELOPE, BODYSTRUCTURE) comes from the
index, read a group of messages at a time (:meth:`IMailbox.messages`), the objects' parse
results only when an item needs them; message bytes are read only for the items that need
them, in the thread pool (a few small files on the reactor thread: :func:`_inline`), a
bounded batch at a time, and for the top-level header items (``BODY[HEADER]``,
``HEADER.FIELDS``, ``RFC822.HEADER``) only up to the end of the header block. The responses
are a stream (:attr:`Result.stream`): each batch is written before the next is read, so a
``FETCH 1:* BODY[]`` holds at most a batch (about :data:`BATCH_BYTES`, or one bigger
message) and what the transport buffers; a FETCH of one message is answered whole, so its
response and the tagged line go out in one write. A fetch of a body section without
``.PEEK`` sets ``\\Seen`` first (not in a read-only mailbox) and then reports the new FLAGS
with the message (RFC 9051 §6.4.5).
A message that another session expunged keeps its number until the client may be told
(see :mod:`mailserver.imap.selected`); it is left out and the command ends
``NO [EXPUNGEISSUED]`` (RFC 2180 §4.1.2, RFC 5530).

CONDSTORE (RFC 7162 §3.1.4): ``MODSEQ`` is an item, ``(CHANGEDSINCE n)`` keeps only the
messages changed after ``n`` and adds MODSEQ, and once CONDSTORE is on every FETCH with FLAGS
carries MODSEQ too. ``UID FETCH ... (CHANGEDSINCE n VANISHED)`` first reports the UIDs of the
set expunged after ``n`` as ``VANISHED (EARLIER)`` (QRESYNC, §3.2.6).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from mailserver.errors import MailError
from mailserver.imap import response
from mailserver.imap.commands.base import Result, bad, no
from mailserver.imap.commands.fetch_headers import HeaderFetch
from mailserver.imap.commands.fetch_index import IndexFetch
from mailserver.imap.commands.sections import (
    Node,
    UnknownEncoding,
    binary_part,
    header_fields,
    section,
    structure_of,
)
from mailserver.imap.grammar import Command
from mailserver.imap.parse_fetch import (
    BinarySize,
    BodySection,
    Fetch,
    FetchAtt,
    FetchItem,
    Section,
)
from mailserver.imap.selected import modseq_value
from mailserver.imap.session import Session
from mailserver.interfaces import IMessage
from mailserver.message import imap_render, mime
from mailserver.message.headers import header_length
from mailserver.types import SEEN, FlagInfo, FlagMode, MessageInfo

__all__ = ["fetch", "read_headers", "read_messages"]

#: Messages whose index records are read in one store call (one read transaction).
GROUP = 512
#: At most this many messages, and whole files of at most BATCH_BYTES in all (or one bigger
#: message), are read in one trip to the thread pool and written as one output chunk.
BATCH = 64
BATCH_BYTES = 1 << 20
#: A batch of at most this many files, and for whole files of at most INLINE_BYTES in all,
#: is read on the reactor thread instead of in the thread pool (:func:`_inline`).
INLINE_FILES = 2
INLINE_BYTES = 128 << 10
#: Read size while looking for the end of a header block.
_HEADER_READ = 8192
_HEADER_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})
#: Items answered from the flag index alone (:func:`_from_flags`).
_FROM_FLAGS = frozenset({"UID", "FLAGS", "MODSEQ"})
_RFC822_BODIES = frozenset({"RFC822", "RFC822.HEADER", "RFC822.TEXT"})
_HEADER = Section(text="HEADER")
_TEXT = Section(text="TEXT")


def read_messages(messages: Sequence[IMessage]) -> list[bytes | None]:
    """In a worker thread: the bytes of each message; None for one that is gone (expunged
    meanwhile, its file removed)."""
    out: list[bytes | None] = []
    for message in messages:
        try:
            with message.open() as source:
                out.append(source.read())
        except (OSError, MailError):
            out.append(None)
    return out


def _needs_bytes(item: FetchItem) -> bool:
    if isinstance(item, BodySection | BinarySize):
        return True
    return item.name in _RFC822_BODIES


def _sets_seen(item: FetchItem) -> bool:
    if isinstance(item, BodySection):
        return not item.peek
    return isinstance(item, FetchAtt) and item.name in ("RFC822", "RFC822.TEXT")


async def fetch(session: Session, command: Command) -> Result:
    args = command.args
    assert isinstance(args, Fetch)
    view = session.selected
    assert view is not None
    items = list(args.items)
    if (args.uid or session.qresync) and FetchAtt("UID") not in items:
        items.insert(0, FetchAtt("UID"))  # RFC 9051 §6.4.8; RFC 7162 §3.2.3 with QRESYNC
    pairs = view.resolve(args.sequence, args.uid)
    vanished: list[bytes] = []
    changed: dict[int, FlagInfo] | None = None
    if args.changedsince is not None or FetchAtt("MODSEQ") in items:
        pairs, vanished, changed = _condstore(session, args, pairs)
    if all(isinstance(item, FetchAtt) and item.name in _FROM_FLAGS for item in items):
        return _from_flags(session, command, items, pairs, vanished, changed)
    seen_now = await _mark_seen(session, items, pairs)
    if seen_now and FetchAtt("FLAGS") not in items:
        items.append(FetchAtt("FLAGS"))
    _implicit_modseq(session, args, items)
    result = Result(text=f"{command.name} completed")
    stream = _responses(session, items, pairs, vanished, result, args.uid)
    if len(pairs) <= 1 and not vanished:
        # One message is one chunk anyway: answered whole, its response goes out in the
        # same write as the tagged line (one TLS record, one send) instead of two.
        result.untagged = [chunk async for chunk in stream]
    else:
        result.stream = stream
    return result


async def _mark_seen(
    session: Session, items: list[FetchItem], pairs: list[tuple[int, int]]
) -> bool:
    """Set ``\\Seen`` on the messages a body fetch without ``.PEEK`` reads (RFC 9051 §6.4.5);
    True when any message changed."""
    view = session.selected
    assert view is not None
    if view.readonly or not pairs or not any(_sets_seen(item) for item in items):
        return False
    uids = {uid for _, uid in pairs}
    unseen = [
        info.uid
        for info in view.mailbox.flags(min(uids), max(uids))
        if info.uid in uids and SEEN not in info.flags
    ]
    if not unseen:
        return False
    changed = await view.mailbox.store_flags(unseen, [SEEN], FlagMode.ADD)
    view.reported(changed)
    return bool(changed)


@dataclass(frozen=True)
class _Plan:
    """What a FETCH needs from the store per message: the object's parse results
    (``meta``), and the header block only or the whole file (``header``, ``full``)."""

    #: What :meth:`IMailbox.messages` reads of the parse results: all, none or "envelope".
    meta: bool | str
    header: bool
    full: bool
    structure: bool
    envelope: bool
    #: The parse results are wanted only for items the rendered cache may hold.
    cacheable: bool

    @classmethod
    def of(cls, items: list[FetchItem]) -> _Plan:
        structure = any(
            isinstance(item, FetchAtt) and item.name in ("BODYSTRUCTURE", "BODY") for item in items
        )
        envelope = FetchAtt("ENVELOPE") in items
        cut = [item for item in items if _needs_bytes(item)]
        full = any(not _header_only(item) for item in cut)
        needs_root = any(_needs_structure(item) for item in cut)
        return cls(
            meta=True if structure or needs_root else "envelope" if envelope else False,
            header=bool(cut) and not full,
            full=full,
            structure=structure,
            envelope=envelope,
            cacheable=(structure or envelope) and not needs_root,
        )

    def reads(self, info: MessageInfo, held: bool) -> str | None:
        """``"full"``, ``"header"`` or None: what to read of this message's file (``held``:
        its ENVELOPE/BODYSTRUCTURE come from the rendered cache)."""
        if self.full:
            return "full"
        if not held and (
            (self.structure and "body_offset" not in info.bodystructure)
            or (self.envelope and not info.envelope)
        ):
            return "full"
        return "header" if self.header else None


def _header_only(item: FetchItem) -> bool:
    """True for the items cut from the top-level header block alone."""
    if isinstance(item, BodySection):
        spec = item.section
        return not item.binary and not spec.part and spec.text in _HEADER_TEXTS
    return isinstance(item, FetchAtt) and item.name == "RFC822.HEADER"


def _needs_structure(item: FetchItem) -> bool:
    """True for the items cut at the offsets of the cached structure."""
    if _header_only(item):
        return False
    if isinstance(item, BinarySize):
        return bool(item.part)
    if isinstance(item, BodySection):
        return bool(item.section.part if item.binary else item.section.part or item.section.text)
    return isinstance(item, FetchAtt) and item.name == "RFC822.TEXT"


def read_headers(messages: Sequence[IMessage]) -> list[bytes | None]:
    """In a worker thread: the header block (blank line included) of each message, read a
    block at a time up to the first empty line, never the whole file; None for one that is
    gone."""
    out: list[bytes | None] = []
    for message in messages:
        try:
            with message.open() as source:
                data = b""
                while True:
                    block = source.read(_HEADER_READ)
                    data += block
                    length = header_length(data)
                    if length < len(data) or not block:
                        out.append(data[:length])
                        break
        except (OSError, MailError):
            out.append(None)
    return out


def _batches(
    messages: list[tuple[int, IMessage]], plan: _Plan, held: dict[int, dict[str, bytes]]
) -> Iterator[list[tuple[int, IMessage, str | None]]]:
    """The messages in batches holding at most :data:`BATCH` whole files, of at most
    :data:`BATCH_BYTES` in all (but one message, however big): what one output chunk holds.
    Header blocks and index data are small: a group of those is one batch."""
    batch: list[tuple[int, IMessage, str | None]] = []
    size = files = 0
    for number, message in messages:
        reads = plan.reads(message.info, message.info.uid in held)
        full = reads == "full"
        weight = message.info.size if full else 0
        if batch and full and (files >= BATCH or size + weight > BATCH_BYTES):
            yield batch
            batch, size, files = [], 0, 0
        batch.append((number, message, reads))
        size += weight
        files += full
    if batch:
        yield batch


async def _responses(
    session: Session,
    items: list[FetchItem],
    pairs: list[tuple[int, int]],
    vanished: list[bytes],
    result: Result,
    uid: bool,
) -> AsyncIterator[bytes]:
    """The FETCH responses, a chunk at a time (see :mod:`mailserver.imap.server`): index
    records for :data:`GROUP` messages in one read, message bytes a bounded batch at a time.
    Ends by turning ``result`` into ``NO [EXPUNGEISSUED]`` when messages were gone."""
    view = session.selected
    assert view is not None
    plan = _Plan.of(items)
    render = _Renderer(session, items)
    headed = HeaderFetch.of(view, items)
    indexed = IndexFetch.of(view, items, session.utf8, session.factory.rendered)
    missing = False
    if vanished:
        yield b"".join(vanished)
    for start in range(0, len(pairs), GROUP):
        group = pairs[start : start + GROUP]
        uids = sorted({u for _, u in group})
        if headed is not None:  # header items from the header index (fetch_headers.py)
            lines = headed.lines(group, uids)
            if lines is not None:
                yield lines
                continue
        if indexed is not None:  # every item from the index: one loop, one buffer
            answered = indexed.direct(group, uids)  # one rendered item: copied out alone
            if answered is not None:
                missing = missing or answered[1] < len(group)
                if answered[0]:
                    yield answered[0]
                continue
            kept, records = indexed.align(group, view.mailbox.records(uids, indexed.wants))
            missing = missing or len(kept) < len(group)
            lines = indexed.lines(kept, records)
            if lines is not None:
                if lines:
                    yield lines
                continue
        held: dict[int, dict[str, bytes]] = {}
        if plan.cacheable:
            # The items as rendered at delivery where the store keeps them (the parse
            # results otherwise, rendered here and kept in the rendered cache).
            found = {m.info.uid: m for m in view.mailbox.messages(uids, "rendered")}
            held = render.held(found.values())
        else:
            found = {m.info.uid: m for m in view.mailbox.messages(uids, plan.meta)}
        present = [(number, found[u]) for number, u in group if u in found]
        missing = missing or len(present) < len(group)
        if render.only_simple:  # FLAGS UID RFC822.SIZE INTERNALDATE: no file, one buffer
            if present:
                yield render.simple_lines(present)
            continue
        for batch in _batches(present, plan, held):
            datas: list[bytes | None] = [None] * len(batch)
            for kind, reader in (("full", read_messages), ("header", read_headers)):
                wanted = [i for i, (_, _, reads) in enumerate(batch) if reads == kind]
                if wanted:
                    chosen = [batch[i][1] for i in wanted]
                    if _inline(chosen):
                        read = reader(chosen)
                    else:
                        read = await session.in_thread(reader, chosen)
                    for i, data in zip(wanted, read):
                        datas[i] = data
            out: list[bytes] = []
            for (number, message, reads), data in zip(batch, datas):
                if reads is not None and data is None:
                    missing = True
                    continue
                try:
                    info = message.info
                    values = render(info, data, reads == "header", held.get(info.uid))
                except UnknownEncoding:
                    if out:  # the messages before it are answered, as earlier batches were
                        yield b"".join(out)
                    raise no("Cannot decode the part's transfer encoding", "UNKNOWN-CTE") from None
                out.append(response.fetch(number, values))
            if out:
                yield b"".join(out)
    if missing and not uid:
        # A UID FETCH names UIDs, and an absent one is simply not there (RFC 9051 §6.4.8).
        result.status = "NO"
        result.text = "Some of the requested messages no longer exist"
        result.code = b"EXPUNGEISSUED"


def _inline(messages: list[IMessage]) -> bool:
    """Whether these files are read on the reactor thread: a few small ones, which cost less
    to read there (tens of microseconds each from the page cache) than a trip to the thread
    pool and back (thread wake-ups, GIL hand-offs, Deferred callbacks); anything bigger or
    more numerous goes to the pool (DESIGN: big file I/O never blocks the reactor)."""
    # A header block is read up to its end, which may be the whole file: the sizes count.
    if len(messages) > INLINE_FILES:
        return False
    return sum(message.info.size for message in messages) <= INLINE_BYTES


def _implicit_modseq(session: Session, args: Fetch, items: list[FetchItem]) -> None:
    if session.condstore and FetchAtt("MODSEQ") not in items:
        if args.changedsince is not None or FetchAtt("FLAGS") in items:
            items.append(FetchAtt("MODSEQ"))  # RFC 7162 §3.1.4.1, §3.1: with the flags


def _from_flags(
    session: Session,
    command: Command,
    items: list[FetchItem],
    pairs: list[tuple[int, int]],
    vanished: list[bytes],
    current: dict[int, FlagInfo] | None,
) -> Result:
    """FETCH of UID, FLAGS and MODSEQ only (a flag resync): one range read of the flag
    index instead of a look-up per message (none with CHANGEDSINCE: ``current`` has them)."""
    view = session.selected
    assert view is not None and isinstance(command.args, Fetch)
    _implicit_modseq(session, command.args, items)
    if current is None:
        uids = [uid for _, uid in pairs]
        found = view.mailbox.flags(min(uids), max(uids)) if uids else ()
        current = {info.uid: info for info in found}
    untagged = list(vanished)
    missing = False
    for number, uid in pairs:
        info = current.get(uid)
        if info is None:
            missing = True
            continue
        values = []
        for item in items:
            assert isinstance(item, FetchAtt)
            if item.name == "UID":
                values.append(("UID", b"%d" % uid))
            elif item.name == "FLAGS":
                values.append(("FLAGS", view.flags_for(uid, info.flags)))
            else:
                values.append(("MODSEQ", modseq_value(info.modseq)))
        untagged.append(response.fetch(number, values))
    if missing and not command.args.uid:
        return Result(
            "NO", "Some of the requested messages no longer exist", b"EXPUNGEISSUED", untagged
        )
    return Result(text=f"{command.name} completed", untagged=untagged)


def _condstore(
    session: Session, args: Fetch, pairs: list[tuple[int, int]]
) -> tuple[list[tuple[int, int]], list[bytes], dict[int, FlagInfo] | None]:
    """Turn CONDSTORE on; with CHANGEDSINCE keep the messages changed since (RFC 7162
    §3.1.4.1), and with VANISHED report the set's UIDs expunged since (§3.2.6). Returns the
    pairs kept, the VANISHED response, and the changed messages' flags (with CHANGEDSINCE)."""
    view = session.selected
    assert view is not None
    if args.vanished and not session.qresync:
        raise bad("VANISHED needs ENABLE QRESYNC first")  # RFC 7162 §3.2.6
    session.use_condstore()
    since = args.changedsince
    if since is None:
        return pairs, [], None
    changed = {info.uid: info for info in view.mailbox.changed_since(since)}
    pairs = [(number, uid) for number, uid in pairs if uid in changed]
    if not args.vanished:
        return pairs, [], changed
    if args.sequence.saved:
        ranges = [(uid, uid) for uid in view.saved or ()]
    else:  # "*" reaches the highest UID ever given, so a vanished last message counts
        ranges = args.sequence.resolved(max(view.mailbox.info().uidnext - 1, 1))
    return pairs, view.vanished_earlier(since, ranges), changed


class _Renderer:
    """The FETCH values of a message for one command's items: what each item needs is
    worked out once per command."""

    def __init__(self, session: Session, items: list[FetchItem]) -> None:
        view = session.selected
        assert view is not None
        self.view = view
        self.utf8 = session.utf8
        self.items = items
        # FETCH (FLAGS UID RFC822.SIZE INTERNALDATE) and the like: (name, renderer or None
        # for FLAGS) when every item comes from the index record alone.
        self.simple = [
            (item.name, _SIMPLE.get(item.name))
            for item in items
            if isinstance(item, FetchAtt) and (item.name == "FLAGS" or item.name in _SIMPLE)
        ]
        self.only_simple = len(self.simple) == len(items)
        self.cache = session.factory.rendered
        self.cached = [
            item.name
            for item in items
            if isinstance(item, FetchAtt) and item.name in ("ENVELOPE", "BODYSTRUCTURE", "BODY")
        ]

    def held(self, messages: Iterable[IMessage]) -> dict[int, dict[str, bytes]]:
        """uid -> the values of this command's ENVELOPE/BODYSTRUCTURE/BODY items, for the
        messages that have every one of them stored (rendered at delivery) or cached (taken
        now: the LRU may drop them before the messages are rendered)."""
        out: dict[int, dict[str, bytes]] = {}
        get, utf8, stored = self.cache.get, self.utf8, imap_render.item
        for message in messages:
            info = message.info
            if info.rendered:
                values = {name: stored(info.rendered, name, utf8) for name in self.cached}
                if None not in values.values():
                    out[info.uid] = values  # type: ignore[assignment]
                    continue
            values = {name: get((info.object_id, name, utf8)) for name in self.cached}
            if None not in values.values():
                out[info.uid] = values  # type: ignore[assignment]
        return out

    def simple_lines(self, present: list[tuple[int, IMessage]]) -> bytes:
        """The FETCH responses of messages whose items all come from the index record (see
        :attr:`only_simple`), as one buffer: what :func:`response.fetch` of each message's
        values gives, without the per-message value list."""
        flags_for = self.view.flags_for
        labels = [(name.encode("ascii") + b" ", render) for name, render in self.simple]
        out = []
        for number, message in present:
            info = message.info
            body = b" ".join(
                [
                    label + (flags_for(info.uid, info.flags) if render is None else render(info))
                    for label, render in labels
                ]
            )
            out.append(b"* %d FETCH (%s)\r\n" % (number, body))
        return b"".join(out)

    def flags(self, info: MessageInfo) -> bytes:
        return self.view.flags_for(info.uid, info.flags)

    def _cached(
        self, name: str, info: MessageInfo, data: bytes | None, held: dict[str, bytes] | None
    ) -> bytes:
        if held is not None:
            return held[name]
        key = (info.object_id, name, self.utf8)
        value = self.cache.get(key)
        if value is None:
            value = _attribute(name, info, data, self.utf8)
            self.cache.put(key, value)
        return value

    def __call__(
        self,
        info: MessageInfo,
        data: bytes | None,
        header_only: bool,
        held: dict[str, bytes] | None = None,
    ) -> list[tuple[str, bytes]]:
        """``data`` is the message's bytes, or only its header block when ``header_only``, or
        None when no item needs them; ``held``: values from :meth:`held` (then ``info`` may
        lack the parse results)."""
        if self.only_simple:  # FLAGS UID RFC822.SIZE INTERNALDATE and the like
            return [
                (name, self.flags(info) if render is None else render(info))
                for name, render in self.simple
            ]
        values: list[tuple[str, bytes]] = []
        root: Node | None = None
        for item in self.items:
            if isinstance(item, FetchAtt):
                if item.name == "FLAGS":
                    values.append(("FLAGS", self.flags(info)))
                elif item.name in self.cached:
                    values.append((item.name, self._cached(item.name, info, data, held)))
                else:
                    values.append((item.name, _attribute(item.name, info, data, self.utf8)))
                continue
            assert data is not None
            if isinstance(item, BodySection) and _header_only(item):
                spec = item.section
                header = data if header_only else data[: header_length(data)]
                if spec.text != "HEADER":
                    exclude = spec.text == "HEADER.FIELDS.NOT"
                    header = header_fields(header, spec.fields, exclude=exclude)
                values.append((item.label(), _literal(header, item.partial, binary=False)))
                continue
            if root is None and _needs_structure(item):
                root = structure_of(info.bodystructure, data)
            if isinstance(item, BinarySize):
                decoded = binary_part(data, root or {}, item.part)
                size = b"%d" % len(decoded) if decoded is not None else b"NIL"
                values.append((item.label(), size))
                continue
            if item.binary:
                content = binary_part(data, root or {}, item.section.part)
            else:
                content = section(data, root or {}, item.section)
            values.append((item.label(), _literal(content, item.partial, binary=item.binary)))
        return values


#: The items rendered from the index record alone (and FLAGS, by :class:`_Renderer`).
_SIMPLE: dict[str, Callable[[MessageInfo], bytes]] = {
    "UID": lambda info: b"%d" % info.uid,
    "MODSEQ": lambda info: modseq_value(info.modseq),
    "INTERNALDATE": lambda info: response.date_time(info.internaldate),
    "RFC822.SIZE": lambda info: b"%d" % info.size,
    # RFC 8514 §4.1; NIL: saved before save dates were recorded
    "SAVEDATE": lambda info: response.date_time(info.savedate) if info.savedate else b"NIL",
    # RFC 8474 §5.1: the store's object id, shared by copies; §5.2: threads are not computed
    "EMAILID": lambda info: b"(" + info.object_id.encode("ascii") + b")",
    "THREADID": lambda info: b"NIL",
}


def _literal(content: bytes | None, partial: tuple[int, int] | None, *, binary: bool) -> bytes:
    if content is None:
        return b"NIL"
    if partial is not None:
        origin, length = partial
        content = content[origin : origin + length]
    return response.literal(content, binary=binary and b"\x00" in content)


def _attribute(name: str, info: MessageInfo, data: bytes | None, utf8: bool) -> bytes:
    simple = _SIMPLE.get(name)
    if simple is not None:
        return simple(info)
    if name == "ENVELOPE":
        envelope = info.envelope
        if not envelope and data is not None:
            envelope = mime.parse(data).envelope
        return response.envelope(envelope, utf8=utf8)
    if name in ("BODYSTRUCTURE", "BODY"):
        root = structure_of(info.bodystructure, data)
        return response.body_structure(root, extended=name == "BODYSTRUCTURE", utf8=utf8)
    assert data is not None
    if name == "RFC822":
        return response.literal(data)
    if name == "RFC822.HEADER":
        return response.literal(data[: header_length(data)])
    root = structure_of(info.bodystructure, data)
    return response.literal(section(data, root, _TEXT) or b"")  # RFC822.TEXT
