"""APPEND (RFC 9051 §6.3.12, RFC 4315 APPENDUID, RFC 3516 literal8, RFC 6855 UTF8).

The OK comes only after the store has made the message durable (DESIGN decision 5); the
store's Deferred fires after its fsync. A message appended to the selected mailbox is
announced with EXISTS by the end-of-command synchronisation.
"""

from __future__ import annotations

import io

from mailserver.errors import NoSuchFolder
from mailserver.imap import parse_mailbox, response
from mailserver.imap.commands.base import Result, no
from mailserver.imap.grammar import Command
from mailserver.imap.selected import RECENT
from mailserver.imap.session import Session

__all__ = ["append"]


async def append(session: Session, command: Command) -> Result:
    args = command.args
    assert isinstance(args, parse_mailbox.Append)
    assert session.account is not None
    try:
        mailbox = session.account.folder(args.mailbox)
    except NoSuchFolder:
        # RFC 9051 §6.3.12: TRYCREATE tells the client to CREATE and try again.
        raise no("The target mailbox does not exist", "TRYCREATE") from None
    if not args.message:
        raise no("An empty message cannot be appended", "CANNOT")
    flags = [flag for flag in args.flags if flag != RECENT]
    date = args.date.timestamp() if args.date is not None else None
    uid = await mailbox.append(io.BytesIO(args.message), flags, date)
    code = response.code("APPENDUID", mailbox.info().uidvalidity, uid)
    return Result(text="APPEND completed", code=code)
