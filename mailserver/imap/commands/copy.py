"""COPY, MOVE, UID COPY and UID MOVE (RFC 9051 §6.4.7-8, RFC 6851, RFC 4315 COPYUID).

The store copies without duplicating bytes (labels) and moves atomically. COPYUID pairs the
source and destination UIDs in order (RFC 4315 §3). For MOVE, COPYUID goes in an untagged OK
before the EXPUNGE responses (RFC 6851 §4.3), which the end-of-command synchronisation sends.
"""

from __future__ import annotations

from mailserver.errors import NoSuchFolder
from mailserver.imap import response
from mailserver.imap.commands.base import Result, no
from mailserver.imap.grammar import Command
from mailserver.imap.parse_fetch import Copy
from mailserver.imap.session import Session

__all__ = ["copy"]


async def copy(session: Session, command: Command) -> Result:
    args = command.args
    assert isinstance(args, Copy)
    view = session.selected
    account = session.account
    assert view is not None and account is not None
    if args.move and view.readonly:
        raise no("The mailbox is selected read-only (EXAMINE)", "READ-ONLY")
    try:
        target = account.folder(args.mailbox)
    except NoSuchFolder:
        raise no("The target mailbox does not exist", "TRYCREATE") from None
    uids = [uid for _, uid in view.resolve(args.sequence, args.uid)]
    if not args.uid and any(uid in view.gone for uid in uids):
        # RFC 2180 §4.4.1: all or nothing. (A UID set just names fewer messages.)
        raise no("Some of the requested messages no longer exist", "EXPUNGEISSUED")
    uids = [uid for uid in uids if uid not in view.gone]
    verb = "MOVE" if args.move else "COPY"
    if not uids:
        return Result(text=f"{verb} completed (no messages)")
    operation = view.mailbox.move if args.move else view.mailbox.copy
    pairs = await operation(uids, target.name)
    session.notify(target.name)
    if args.move:
        session.notify(view.name)
    if not pairs:
        return Result(text=f"{verb} completed (no messages)")
    code = response.code(
        "COPYUID",
        target.info().uidvalidity,
        response.uid_set([source for source, _ in pairs], sort=False),
        response.uid_set([new for _, new in pairs], sort=False),
    )
    if args.move:
        moved = response.untagged_status("OK", "Moved", response_code=code)
        return Result(text=f"{command.name} completed", untagged=[moved])
    return Result(text=f"{command.name} completed", code=code)
