"""COPY, MOVE, UID COPY and UID MOVE (RFC 9051 §6.4.7-8, RFC 6851, RFC 4315 COPYUID).

The store copies without duplicating bytes (labels) and moves atomically. COPYUID pairs the
source and destination UIDs in order (RFC 4315 §3). For MOVE, COPYUID goes in an untagged OK
before the EXPUNGE responses (RFC 6851 §4.3), which the end-of-command synchronisation sends.
Moving or copying into Junk, or out of it, is the user's spam judgement: it goes to the
listener's :class:`~mailserver.interfaces.IJunkFeedback` (the filter's training hook).
"""

from __future__ import annotations

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger

from mailserver.errors import NoSuchFolder
from mailserver.imap import response
from mailserver.imap.commands.base import Result, no
from mailserver.imap.grammar import Command
from mailserver.imap.parse_fetch import Copy
from mailserver.imap.session import Session
from mailserver.types import SpecialUse

__all__ = ["copy", "junk_judgement"]

log = Logger(namespace="mailserver.imap")


def junk_judgement(source: SpecialUse | None, target: SpecialUse | None) -> bool | None:
    """The user's spam judgement in moving or copying from ``source`` to ``target`` (their
    special uses): into Junk is spam; out of Junk is not, unless into Trash (deleting spam
    says nothing about it); anything else says nothing."""
    if target is SpecialUse.JUNK and source is not SpecialUse.JUNK:
        return True
    if source is SpecialUse.JUNK and target not in (SpecialUse.JUNK, SpecialUse.TRASH):
        return False
    return None


def report_judgement(session: Session, folder: str, uids: list[int], is_spam: bool) -> None:
    """Tell the filter (when the listener has one); never delays or fails the command."""
    feedback = session.factory.feedback
    if feedback is None or session.account is None:
        return
    d = maybeDeferred(feedback.judged, session.account, folder, uids, is_spam)
    d.addErrback(lambda failure: log.failure("junk feedback failed", failure))


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
    source_use = view.mailbox.info().special_use
    pairs = await operation(uids, target.name)
    judgement = junk_judgement(source_use, target.info().special_use)
    if judgement is not None and pairs:
        report_judgement(session, target.name, [new for _, new in pairs], judgement)
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
