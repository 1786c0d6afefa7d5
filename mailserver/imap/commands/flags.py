"""STORE, UID STORE, EXPUNGE and UID EXPUNGE (RFC 9051 §6.4.3, §6.4.6, §6.4.9; RFC 4315 §2.1).

EXPUNGE responses are never built here: the store removes the messages, and the end-of-command
synchronisation (:meth:`mailserver.imap.selected.SelectedMailbox.sync`) reports every message
that left the mailbox, this session's and other sessions' alike, in a safe order.
"""

from __future__ import annotations

from mailserver.imap import response
from mailserver.imap.commands.base import Result, bad, no
from mailserver.imap.grammar import Command
from mailserver.imap.parse_fetch import Store, UidExpunge
from mailserver.imap.selected import RECENT, SelectedMailbox
from mailserver.imap.session import Session
from mailserver.types import DELETED, FlagMode

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
    if args.unchangedsince is not None:
        raise bad("UNCHANGEDSINCE needs CONDSTORE, which is not supported")
    view = _writable(session)
    pairs = view.resolve(args.sequence, args.uid)
    uids = [uid for _, uid in pairs if uid not in view.gone]
    flags = [flag for flag in args.flags if flag != RECENT]
    untagged = view.new_keywords(flags)
    current: dict[int, frozenset[str]] = {}
    if uids:
        changed = await view.mailbox.store_flags(uids, flags, FlagMode(args.mode))
        view.reported(changed)
        if changed:
            session.notify(view.name)
        current = {info.uid: info.flags for info in view.mailbox.flags(uids[0], uids[-1])}
    if not args.silent:
        for number, uid in pairs:
            if uid not in current:
                continue
            values = [("FLAGS", view.flags_for(uid, current[uid]))]
            if args.uid:
                values.append(("UID", b"%d" % uid))
            untagged.append(response.fetch(number, values))
    if not args.uid and any(uid not in current for _, uid in pairs):
        return Result(
            "NO", "Some of the requested messages no longer exist", b"EXPUNGEISSUED", untagged
        )
    return Result(text=f"{command.name} completed", untagged=untagged)


async def expunge(session: Session, command: Command) -> Result:
    """Remove every message flagged ``\\Deleted``."""
    view = _writable(session)
    removed = await view.mailbox.expunge()
    if removed:
        session.notify(view.name)
    return Result(text="EXPUNGE completed")


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
        if targets and await view.mailbox.expunge(targets):
            session.notify(view.name)
    return Result(text="UID EXPUNGE completed")
