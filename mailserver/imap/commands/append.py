"""APPEND (RFC 9051 §6.3.12, RFC 4315 APPENDUID, RFC 3516 literal8, RFC 6855 UTF8).

The OK comes only after the store has made the message durable (DESIGN decision 5); the
store's Deferred fires after its fsync. A message appended to the selected mailbox is
announced with EXISTS by the end-of-command synchronisation. A message larger than the
listener's ``spool_threshold`` arrives here as a file on disk, never whole in memory (issue
12), and the store reads it in chunks.
"""

from __future__ import annotations

import io
from typing import BinaryIO

from mailserver.errors import NoSuchFolder
from mailserver.imap import parse_mailbox, response
from mailserver.imap.commands.base import Result, no
from mailserver.imap.grammar import Command
from mailserver.imap.scanner import SpooledLiteral
from mailserver.imap.selected import RECENT
from mailserver.imap.session import Session

__all__ = ["append"]


async def append(session: Session, command: Command) -> Result:
    args = command.args
    assert isinstance(args, parse_mailbox.Append)
    message = args.message
    try:
        return await _append(session, args)
    finally:
        if isinstance(message, SpooledLiteral):
            message.close()  # the store has copied it (or failed): the file goes


async def _append(session: Session, args: parse_mailbox.Append) -> Result:
    assert session.account is not None
    try:
        mailbox = session.account.folder(args.mailbox)
    except NoSuchFolder:
        # RFC 9051 §6.3.12: TRYCREATE tells the client to CREATE and try again.
        raise no("The target mailbox does not exist", "TRYCREATE") from None
    message = args.message
    if isinstance(message, SpooledLiteral):
        # A large literal, already on disk (grammar design rule 4): the store copies it
        # into the maildir in chunks, in its thread pool.
        source: BinaryIO = message.source
        source.seek(0)
    elif not message:
        raise no("An empty message cannot be appended", "CANNOT")
    else:
        source = io.BytesIO(message)
    flags = [flag for flag in args.flags if flag != RECENT]
    date = args.date.timestamp() if args.date is not None else None
    uid = await mailbox.append(source, flags, date)
    code = response.code("APPENDUID", mailbox.info().uidvalidity, uid)
    return Result(text="APPEND completed", code=code)
