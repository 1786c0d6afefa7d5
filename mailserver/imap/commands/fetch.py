"""FETCH and UID FETCH (RFC 9051 §6.4.5, §6.4.8, §7.5.2; RFC 3516 BINARY).

Metadata (FLAGS, UID, INTERNALDATE, RFC822.SIZE, ENVELOPE, BODYSTRUCTURE) comes from the
index; message bytes are read only for the items that need them, in the thread pool, a batch
at a time. A fetch of a body section without ``.PEEK`` sets ``\\Seen`` first (not in a
read-only mailbox) and then reports the new FLAGS with the message (RFC 9051 §6.4.5).
A message that another session expunged keeps its number until the client may be told
(see :mod:`mailserver.imap.selected`); it is left out and the command ends
``NO [EXPUNGEISSUED]`` (RFC 2180 §4.1.2, RFC 5530).

CONDSTORE (RFC 7162 §3.1.4): ``MODSEQ`` is an item, ``(CHANGEDSINCE n)`` keeps only the
messages changed after ``n`` and adds MODSEQ, and once CONDSTORE is on every FETCH with FLAGS
carries MODSEQ too. ``UID FETCH ... (CHANGEDSINCE n VANISHED)`` first reports the UIDs of the
set expunged after ``n`` as ``VANISHED (EARLIER)`` (QRESYNC, §3.2.6).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mailserver.errors import MailError, NoSuchMessage
from mailserver.imap import response
from mailserver.imap.commands.base import Result, bad, no
from mailserver.imap.commands.sections import (
    UnknownEncoding,
    binary_part,
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
from mailserver.message import mime
from mailserver.types import SEEN, FlagMode

__all__ = ["fetch", "read_messages"]

#: Messages whose bytes are read in one trip to the thread pool.
BATCH = 64
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
    if args.changedsince is not None or FetchAtt("MODSEQ") in items:
        pairs, vanished = _condstore(session, args, pairs)
    messages: list[tuple[int, IMessage]] = []
    missing = False
    for number, uid in pairs:
        try:
            messages.append((number, view.mailbox.message(uid)))
        except NoSuchMessage:
            missing = True
    flags = {message.info.uid: message.info.flags for _, message in messages}
    seen_now: set[int] = set()
    if not view.readonly and any(_sets_seen(item) for item in items):
        unseen = [uid for uid, current in flags.items() if SEEN not in current]
        if unseen:
            changed = await view.mailbox.store_flags(unseen, [SEEN], FlagMode.ADD)
            view.reported(changed)
            for change in changed:
                flags[change.uid] = change.flags
                seen_now.add(change.uid)
            session.notify(view.name)
    if seen_now:
        if FetchAtt("FLAGS") not in items:
            items.append(FetchAtt("FLAGS"))
        # Look those messages up again: a provider may keep where the bytes are by flags
        # (maildir file names).
        refreshed: list[tuple[int, IMessage]] = []
        for number, message in messages:
            if message.info.uid in seen_now:
                try:
                    message = view.mailbox.message(message.info.uid)
                except NoSuchMessage:
                    missing = True
                    continue
            refreshed.append((number, message))
        messages = refreshed
    if session.condstore and FetchAtt("MODSEQ") not in items:
        if args.changedsince is not None or FetchAtt("FLAGS") in items:
            items.append(FetchAtt("MODSEQ"))  # RFC 7162 §3.1.4.1, §3.1: with the flags
    want_bytes = any(_needs_bytes(item) for item in items)
    want_structure = any(
        isinstance(item, FetchAtt) and item.name in ("BODYSTRUCTURE", "BODY") for item in items
    )
    want_envelope = FetchAtt("ENVELOPE") in items
    untagged: list[bytes] = []
    for start in range(0, len(messages), BATCH):
        batch = messages[start : start + BATCH]
        needed = [
            want_bytes
            or (want_structure and "body_offset" not in m.info.bodystructure)
            or (want_envelope and not m.info.envelope)
            for _, m in batch
        ]
        datas: list[bytes | None] = [None] * len(batch)
        if any(needed):
            wanted = [m for (_, m), need in zip(batch, needed) if need]
            read = iter(await session.in_thread(read_messages, wanted))
            datas = [next(read) if need else None for need in needed]
        for (number, message), data, need in zip(batch, datas, needed):
            uid = message.info.uid
            if need and data is None:
                missing = True
                continue
            try:
                values = _render(session, items, message, data, flags[uid])
            except UnknownEncoding:
                raise no("Cannot decode the part's transfer encoding", "UNKNOWN-CTE") from None
            untagged.append(response.fetch(number, values))
    untagged = vanished + untagged
    if missing and not args.uid:
        # A UID FETCH names UIDs, and an absent one is simply not there (RFC 9051 §6.4.8).
        return Result(
            "NO", "Some of the requested messages no longer exist", b"EXPUNGEISSUED", untagged
        )
    return Result(text=f"{command.name} completed", untagged=untagged)


def _condstore(
    session: Session, args: Fetch, pairs: list[tuple[int, int]]
) -> tuple[list[tuple[int, int]], list[bytes]]:
    """Turn CONDSTORE on; with CHANGEDSINCE keep the messages changed since (RFC 7162
    §3.1.4.1), and with VANISHED report the set's UIDs expunged since (§3.2.6)."""
    view = session.selected
    assert view is not None
    if args.vanished and not session.qresync:
        raise bad("VANISHED needs ENABLE QRESYNC first")  # RFC 7162 §3.2.6
    session.use_condstore()
    since = args.changedsince
    if since is None:
        return pairs, []
    changed = {info.uid for info in view.mailbox.changed_since(since)}
    pairs = [(number, uid) for number, uid in pairs if uid in changed]
    if not args.vanished:
        return pairs, []
    if args.sequence.saved:
        ranges = [(uid, uid) for uid in view.saved or ()]
    else:  # "*" reaches the highest UID ever given, so a vanished last message counts
        ranges = args.sequence.resolved(max(view.mailbox.info().uidnext - 1, 1))
    return pairs, view.vanished_earlier(since, ranges)


def _render(
    session: Session,
    items: list[FetchItem],
    message: IMessage,
    data: bytes | None,
    flags: frozenset[str],
) -> list[tuple[str, bytes]]:
    view = session.selected
    assert view is not None
    info = message.info
    utf8 = session.utf8
    values: list[tuple[str, bytes]] = []
    for item in items:
        if isinstance(item, FetchAtt):
            values.append((item.name, _attribute(item.name, view, info, data, flags, utf8)))
            continue
        root = structure_of(info.bodystructure, data)
        assert data is not None
        if isinstance(item, BinarySize):
            decoded = binary_part(data, root, item.part)
            values.append((item.label(), b"%d" % len(decoded) if decoded is not None else b"NIL"))
            continue
        if item.binary:
            content = binary_part(data, root, item.section.part)
        else:
            content = section(data, root, item.section)
        values.append((item.label(), _literal(content, item.partial, binary=item.binary)))
    return values


def _literal(content: bytes | None, partial: tuple[int, int] | None, *, binary: bool) -> bytes:
    if content is None:
        return b"NIL"
    if partial is not None:
        origin, length = partial
        content = content[origin : origin + length]
    return response.literal(content, binary=binary and b"\x00" in content)


def _attribute(
    name: str, view: Any, info: Any, data: bytes | None, flags: frozenset[str], utf8: bool
) -> bytes:
    if name == "FLAGS":
        return bytes(view.flags_for(info.uid, flags))
    if name == "UID":
        return b"%d" % info.uid
    if name == "MODSEQ":
        return modseq_value(info.modseq)
    if name == "INTERNALDATE":
        return response.date_time(info.internaldate)
    if name == "SAVEDATE":  # RFC 8514 §4.1; NIL: saved before save dates were recorded
        return response.date_time(info.savedate) if info.savedate else b"NIL"
    if name == "EMAILID":  # RFC 8474 §5.1: the store's object id, shared by copies
        return b"(" + info.object_id.encode("ascii") + b")"
    if name == "THREADID":  # RFC 8474 §5.2: threads are not computed
        return b"NIL"
    if name == "RFC822.SIZE":
        return b"%d" % info.size
    if name == "ENVELOPE":
        envelope = info.envelope
        if not envelope and data is not None:
            envelope = mime.parse(data).envelope
        return response.envelope(envelope, utf8=utf8)
    if name in ("BODYSTRUCTURE", "BODY"):
        root = structure_of(info.bodystructure, data)
        return response.body_structure(root, extended=name == "BODYSTRUCTURE", utf8=utf8)
    assert data is not None
    root = structure_of(info.bodystructure, data)
    if name == "RFC822":
        return response.literal(data)
    if name == "RFC822.HEADER":
        return response.literal(section(data, root, _HEADER) or b"")
    return response.literal(section(data, root, _TEXT) or b"")  # RFC822.TEXT
