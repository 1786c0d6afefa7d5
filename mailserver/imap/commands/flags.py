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
from mailserver.imap.selected import RECENT, SelectedMailbox
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
    ignored.

    The messages the store changed are answered with the state it returned (their new
    flags and modseq as committed); only the others (already as asked, left alone by
    UNCHANGEDSINCE, or gone) are read back, a range read per run of them (:func:`_current`).
    """
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
        current = _current(view, pairs, done)
        if args.silent:  # only .SILENT needs to tell changed messages from the rest
            changed = {info.uid for info in done}
    # RFC 7162 §3.2.3: UID in every FETCH with QRESYNC; §3.1.4.1: MODSEQ with CONDSTORE.
    with_uid, with_modseq = args.uid or session.qresync, session.condstore
    template = _fetch_template(args.silent, with_uid, with_modseq)
    flags_for = view.flags_for
    for number, uid in pairs:
        info = current.get(uid)
        if info is None or uid in refused:
            continue
        # RFC 7162 §3.1.3: with CONDSTORE a changed message is reported even when .SILENT.
        if args.silent and not (with_modseq and uid in changed):
            continue
        fields: list[int | bytes] = [number]
        if not args.silent:
            fields.append(flags_for(uid, info.flags))
        if with_uid:
            fields.append(uid)
        if with_modseq:
            fields.append(info.modseq)
        untagged.append(template % tuple(fields))
    if not args.uid and any(uid not in current for _, uid in pairs):
        return Result(
            "NO", "Some of the requested messages no longer exist", b"EXPUNGEISSUED", untagged
        )
    if refused:
        numbers = [uid if args.uid else number for number, uid in pairs if uid in refused]
        code = b"MODIFIED " + response.uid_set(numbers)
        return Result(text="Conditional STORE failed", code=code, untagged=untagged)
    return Result(text=f"{command.name} completed", untagged=untagged)


#: A range read per run of messages costs about this many messages of a walk over them: when
#: the runs to read back after a STORE are more scattered than that, one walk reads them all.
RUN_COST = 4


def _current(
    view: SelectedMailbox, pairs: list[tuple[int, int]], done: list[FlagInfo]
) -> dict[int, FlagInfo]:
    """The state after a STORE of the messages it named: what the store returned for those
    it changed, and for the others their flags read back (absent: expunged meanwhile), one
    range read per run of consecutive message numbers (no other message of the store can
    sit between two numbers of the view: new ones get higher UIDs), or one read over them
    all when the runs are scattered (see :data:`RUN_COST`)."""
    current = {info.uid: info for info in done}
    runs: list[list[int]] = []  # [first uid, last uid, first number, last number]
    for number, uid in pairs:
        if uid in current:
            continue
        if runs and number == runs[-1][3] + 1:
            runs[-1][1] = uid
            runs[-1][3] = number
        else:
            runs.append([uid, uid, number, number])
    if runs and len(runs) * RUN_COST > runs[-1][3] - runs[0][2] + 1:
        runs = [[runs[0][0], runs[-1][1]]]
    for first, last, *_numbers in runs:
        for info in view.mailbox.flags(first, last):
            current.setdefault(info.uid, info)
    return current


def _fetch_template(silent: bool, uid: bool, modseq: bool) -> bytes:
    """``* %d FETCH (FLAGS %s UID %d MODSEQ (%d))`` CRLF with the items a STORE answers
    (the same bytes :func:`mailserver.imap.response.fetch` makes): FLAGS unless ``silent``,
    UID and MODSEQ when asked for."""
    items = [] if silent else [b"FLAGS %s"]
    if uid:
        items.append(b"UID %d")
    if modseq:
        items.append(b"MODSEQ (%d)")
    return b"* %d FETCH (" + b" ".join(items) + b")\r\n"


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
