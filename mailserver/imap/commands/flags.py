"""STORE, UID STORE, EXPUNGE and UID EXPUNGE (RFC 9051 §6.4.3, §6.4.6, §6.4.9; RFC 4315 §2.1).

EXPUNGE responses are never built here: the store removes the messages, and the end-of-command
synchronisation (:meth:`mailserver.imap.selected.SelectedMailbox.sync`) reports every message
that left the mailbox, this session's and other sessions' alike, in a safe order (as
``VANISHED`` once QRESYNC is enabled).

CONDSTORE (RFC 7162 §3.1.3): ``STORE ... (UNCHANGEDSINCE n)`` leaves alone, atomically, every
message whose modseq is above ``n`` and names them in ``OK [MODIFIED set]``; once CONDSTORE is
on, every changed message is reported with its new MODSEQ, even with ``.SILENT``, and
EXPUNGE ends with ``OK [HIGHESTMODSEQ n]``.
"""

from __future__ import annotations

from mailserver.imap import response
from mailserver.imap.commands.base import Result, no
from mailserver.imap.grammar import Command
from mailserver.imap.parse_fetch import Store, UidExpunge
from mailserver.imap.selected import RECENT, SelectedMailbox, modseq_value
from mailserver.imap.session import Session
from mailserver.types import DELETED, FlagInfo, FlagMode

__all__ = ["expunge", "store", "uid_expunge"]


def _writable(session: Session) -> SelectedMailbox:
    view = session.selected
    assert view is not None
    if view.readonly:
        raise no("The mailbox is selected read-only (EXAMINE)", "READ-ONLY")
    return view


async def store(session: Session, command: Command) -> Result:
    """Change flags; unless ``.SILENT``, answer each message's flags with ``FETCH (FLAGS)``
    (and UID for UID STORE). ``\\Recent`` cannot be changed (RFC 3501 §2.3.2) and is
    ignored."""
    args = command.args
    assert isinstance(args, Store)
    view = _writable(session)
    pairs = view.resolve(args.sequence, args.uid)
    uids = [uid for _, uid in pairs if uid not in view.gone]
    flags = [flag for flag in args.flags if flag != RECENT]
    untagged = view.new_keywords(flags)
    current: dict[int, FlagInfo] = {}
    changed: set[int] = set()
    refused: set[int] = set()
    if args.unchangedsince is not None:
        session.use_condstore()  # RFC 7162 §3.1: a CONDSTORE-enabling command
    if uids:
        mode = FlagMode(args.mode)
        if args.unchangedsince is None:
            done = await view.mailbox.store_flags(uids, flags, mode)
        else:
            done, left = await view.mailbox.conditional_store(
                uids, flags, mode, args.unchangedsince
            )
            refused = set(left)
        view.reported(done)
        changed = {info.uid for info in done}
        current = {info.uid: info for info in view.mailbox.flags(uids[0], uids[-1])}
    for number, uid in pairs:
        info = current.get(uid)
        if info is None or uid in refused:
            continue
        # RFC 7162 §3.1.3: with CONDSTORE a changed message is reported even when .SILENT.
        if args.silent and not (session.condstore and uid in changed):
            continue
        values = [] if args.silent else [("FLAGS", view.flags_for(uid, info.flags))]
        if args.uid or session.qresync:  # RFC 7162 §3.2.3: UID in every FETCH with QRESYNC
            values.append(("UID", b"%d" % uid))
        if session.condstore:
            values.append(("MODSEQ", modseq_value(info.modseq)))
        untagged.append(response.fetch(number, values))
    if not args.uid and any(uid not in current for _, uid in pairs):
        return Result(
            "NO", "Some of the requested messages no longer exist", b"EXPUNGEISSUED", untagged
        )
    if refused:
        numbers = [uid if args.uid else number for number, uid in pairs if uid in refused]
        code = b"MODIFIED " + response.uid_set(numbers)
        return Result(text="Conditional STORE failed", code=code, untagged=untagged)
    return Result(text=f"{command.name} completed", untagged=untagged)


async def expunge(session: Session, command: Command) -> Result:
    """Remove every message flagged ``\\Deleted``."""
    view = _writable(session)
    await view.mailbox.expunge()
    return Result(text="EXPUNGE completed", code=_highestmodseq(session, view))


async def uid_expunge(session: Session, command: Command) -> Result:
    """Remove the messages of the UID set that are flagged ``\\Deleted`` (RFC 4315 §2.1)."""
    args = command.args
    assert isinstance(args, UidExpunge)
    view = _writable(session)
    uids = {uid for _, uid in view.resolve(args.sequence, True)}
    if uids:
        targets = [
            info.uid
            for info in view.mailbox.flags(min(uids), max(uids))
            if info.uid in uids and DELETED in info.flags
        ]
        if targets:
            await view.mailbox.expunge(targets)
    return Result(text="UID EXPUNGE completed", code=_highestmodseq(session, view))


def _highestmodseq(session: Session, view: SelectedMailbox) -> bytes | None:
    """``[HIGHESTMODSEQ n]`` for the tagged OK of an expunge once CONDSTORE is on (RFC 7162
    §3.2.7, §3.2.9): read after the expunge, so it never claims more than the client is told."""
    if not session.condstore:
        return None
    return response.code("HIGHESTMODSEQ", view.mailbox.info().highestmodseq)
