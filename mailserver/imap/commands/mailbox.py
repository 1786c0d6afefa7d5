"""SELECT, EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, STATUS, CLOSE and UNSELECT
(RFC 9051 §6.3 and §6.4.1-2, RFC 3691 UNSELECT, RFC 6154 §3 CREATE USE)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mailserver.errors import MailError, NoSuchMessage
from mailserver.imap import parse_mailbox, response, snapshots
from mailserver.imap.commands.base import Result, bad, no, result_for_error
from mailserver.imap.grammar import Command
from mailserver.imap.selected import SelectedMailbox
from mailserver.imap.session import Session
from mailserver.interfaces import IMailbox
from mailserver.types import DELETED, DELIMITER, FolderInfo, SpecialUse

__all__ = [
    "close",
    "create",
    "delete",
    "rename",
    "select",
    "status",
    "status_line",
    "subscribe",
    "unselect",
    "unsubscribe",
]

#: RFC 6154 §2: \All and \Flagged are virtual mailboxes; a folder cannot be one.
_VIRTUAL = frozenset({SpecialUse.ALL, SpecialUse.FLAGGED})
_CLOSED = response.untagged_status("OK", "Previous mailbox is now closed", response_code=b"CLOSED")


def select(session: Session, command: Command) -> Result:
    """SELECT / EXAMINE: the mailbox's state, then ``OK [READ-WRITE]`` or ``[READ-ONLY]``.

    A previously selected mailbox is closed first, without expunging, and the client is told
    with ``OK [CLOSED]`` (RFC 9051 §6.3.2); when the new one cannot be selected the session is
    left in the authenticated state. ``(CONDSTORE)`` enables CONDSTORE (RFC 7162 §3.1.8);
    ``(QRESYNC (...))`` also reports what changed since the client's modseq (§3.2.5).
    """
    args = command.args
    assert isinstance(args, parse_mailbox.Select)
    if args.qresync is not None and not session.qresync:
        raise bad("QRESYNC must be enabled first (ENABLE QRESYNC)")  # RFC 7162 §3.2.5
    if args.condstore or args.qresync is not None:
        session.use_condstore()
    untagged: list[bytes] = []
    if session.selected is not None:
        session.deselect()
        untagged.append(_CLOSED)
    assert session.account is not None
    try:
        mailbox = session.account.folder(args.mailbox)
        info = mailbox.info()
        view = _open(session, mailbox, info, args.readonly)
        view.open(info)
    except MailError as error:  # no such folder, an invalid name, the store failing
        refused = result_for_error(error)
        refused.untagged = untagged + refused.untagged
        return refused
    untagged += view.flag_responses()
    untagged.append(response.untagged(b"%d" % view.exists, b"EXISTS"))
    if not session.rev2:
        untagged.append(response.untagged(b"%d" % len(view.recent), b"RECENT"))
        if view.first_unseen is not None:  # RFC 3501 §6.3.1 (erratum 3032)
            untagged.append(
                response.untagged_status(
                    "OK", "First unseen", response_code=b"UNSEEN %d" % view.first_unseen
                )
            )
    untagged += [
        response.untagged_status(
            "OK", "UIDs valid", response_code=response.code("UIDVALIDITY", info.uidvalidity)
        ),
        response.untagged_status(
            "OK", "Predicted next UID", response_code=response.code("UIDNEXT", info.uidnext)
        ),
    ]
    if info.highestmodseq:
        untagged.append(
            response.untagged_status(
                "OK",
                "Highest",
                response_code=response.code("HIGHESTMODSEQ", info.highestmodseq),
            )
        )
    if info.mailbox_id:  # RFC 8474 §4.2
        code = response.code("MAILBOXID", [info.mailbox_id])
        untagged.append(response.untagged_status("OK", "Mailbox id", response_code=code))
    if session.rev2:  # RFC 9051 §6.3.2: the mailbox's name as the server spells it
        untagged.append(
            response.untagged(b"LIST", b"()", b'"/"', session.mailbox_name(mailbox.name))
        )
    qresync = args.qresync
    if qresync is not None and qresync.uidvalidity == info.uidvalidity:
        # RFC 7162 §3.2.5.1: a different UIDVALIDITY means a plain SELECT (CONDSTORE).
        known = [(1, info.uidnext - 1)]
        if qresync.known_uids is not None:
            known = qresync.known_uids.resolved(info.uidnext - 1)
        untagged += view.vanished_earlier(qresync.modseq, known, qresync.seq_match)
        untagged += view.changes_since(qresync.modseq, known)
    session.select(view)
    code = b"READ-ONLY" if args.readonly else b"READ-WRITE"
    return Result(text=f"{command.name} completed", code=code, untagged=untagged)


def _open(
    session: Session, mailbox: IMailbox, info: FolderInfo, readonly: bool
) -> SelectedMailbox:
    return SelectedMailbox(
        mailbox,
        readonly,
        claims=session.factory.recent,
        recent_key=session.recent_key(mailbox.name, info.uidvalidity),
        rev1=not session.rev2,
        condstore=session.condstore,
        qresync=session.qresync,
        snapshots=session.factory.snapshots,
        user=session.user,
    )


async def create(session: Session, command: Command) -> Result:
    """CREATE, with ``(USE (\\Sent))`` for a special-use folder (RFC 6154 §3). A trailing
    delimiter only declares the name a parent (RFC 9051 §6.3.4): it is dropped. The tagged
    OK carries the new mailbox's MAILBOXID (RFC 8474 §4.1). \\All and \\Flagged name
    virtual mailboxes, which this server does not keep: refused with USEATTR."""
    args = command.args
    assert isinstance(args, parse_mailbox.Create)
    assert session.account is not None
    name = args.mailbox
    while name.endswith(DELIMITER) and len(name) > 1:
        name = name[:-1]
    special: SpecialUse | None = None
    if args.special_use:
        if len(args.special_use) > 1:
            raise no("A mailbox has at most one special use here", "USEATTR")
        try:
            special = SpecialUse(args.special_use[0])
        except ValueError:
            special = None
        if special is None or special in _VIRTUAL:
            raise no(f"Unsupported special use {args.special_use[0]}", "USEATTR")
    info = await session.account.create_folder(name, special)
    mailbox_id = getattr(info, "mailbox_id", "")
    code = response.code("MAILBOXID", [mailbox_id]) if mailbox_id else None
    return Result(text="CREATE completed", code=code)


async def delete(session: Session, command: Command) -> Result:
    """DELETE. A mailbox with children is refused (``NO [HASCHILDREN]``, RFC 5530): the store
    cannot keep a \\Noselect name for them. Deleting the selected mailbox closes it."""
    args = command.args
    assert isinstance(args, parse_mailbox.MailboxArg)
    account = session.account
    assert account is not None
    name = account.folder(args.mailbox).name
    prefix = name + DELIMITER
    if any(info.name.startswith(prefix) for info in account.list_folders()):
        raise no("Mailbox has children; delete them first", "HASCHILDREN")
    await account.delete_folder(name)
    untagged: list[bytes] = []
    if session.selected is not None and session.selected.name == name:
        session.deselect()
        untagged.append(_CLOSED)
    return Result(text="DELETE completed", untagged=untagged)


async def rename(session: Session, command: Command) -> Result:
    """RENAME keeps UIDVALIDITY and UIDs; renaming INBOX moves its messages (RFC 9051
    §6.3.6)."""
    args = command.args
    assert isinstance(args, parse_mailbox.Rename)
    account = session.account
    assert account is not None
    old = account.folder(args.old).name
    await account.rename_folder(old, args.new)
    selected = session.selected
    if selected is not None and old != "INBOX":
        if selected.name == old or selected.name.startswith(old + DELIMITER):
            selected.name = account.folder(args.new).name + selected.name[len(old) :]
    return Result(text="RENAME completed")


async def subscribe(session: Session, command: Command) -> Result:
    return await _subscription(session, command, True)


async def unsubscribe(session: Session, command: Command) -> Result:
    return await _subscription(session, command, False)


async def _subscription(session: Session, command: Command, subscribed: bool) -> Result:
    """SUBSCRIBE / UNSUBSCRIBE change the account's list of names, not a folder: a name
    with no mailbox may be subscribed (RFC 9051 §6.3.7 lets a server check that it exists;
    we do not, so a client may subscribe before CREATE), and UNSUBSCRIBE of a name that is
    not subscribed succeeds (§6.3.8). A name no mailbox could have gets NO."""
    args = command.args
    assert isinstance(args, parse_mailbox.MailboxArg)
    assert session.account is not None
    if subscribed:
        await session.account.subscribe(args.mailbox)
    else:
        await session.account.unsubscribe(args.mailbox)
    return Result(text=f"{command.name} completed")


def status_line(session: Session, mailbox: IMailbox, items: tuple[str, ...]) -> bytes:
    """``* STATUS name (MESSAGES n ...)`` for ``items`` (RFC 9051 §6.3.11, §7.3.3)."""
    info = mailbox.info()
    values: list[bytes] = []
    for item in items:
        if item == "MESSAGES":
            value = info.exists
        elif item == "UIDNEXT":
            value = info.uidnext
        elif item == "UIDVALIDITY":
            value = info.uidvalidity
        elif item == "UNSEEN":
            value = info.unseen
        elif item == "SIZE":
            value = info.size
        elif item == "HIGHESTMODSEQ":
            value = info.highestmodseq
        elif item == "APPENDLIMIT":
            value = session.policy.max_literal
        elif item == "DELETED":
            value = sum(1 for f in mailbox.flags() if DELETED in f.flags)
        elif item == "DELETED-STORAGE":  # RFC 9208 §4.1.4, in octets
            value = _deleted_storage(mailbox)
        elif item == "MAILBOXID":  # RFC 8474 §4.3
            values.append(b"MAILBOXID (" + info.mailbox_id.encode("ascii") + b")")
            continue
        elif item == "RECENT":
            key = session.recent_key(mailbox.name, info.uidvalidity)
            value = session.factory.recent.count(key, _uids(session, mailbox, info))
        else:
            raise bad(f"STATUS {item} is not supported")
        values.append(item.encode("ascii") + b" %d" % value)
    return response.untagged(b"STATUS", session.mailbox_name(mailbox.name), response.plist(values))


def _uids(session: Session, mailbox: IMailbox, info: FolderInfo) -> Sequence[int]:
    """The folder's UIDs: from the listener's snapshot of it when that is current (a STATUS
    of a folder selected or examined meanwhile, unchanged since), else read."""
    key = snapshots.key_of(session.user, mailbox.name, info)
    snapshot = session.factory.snapshots.get(key, snapshots.state_of(info))
    return snapshot.uids if snapshot is not None else list(mailbox.uids())


def _deleted_storage(mailbox: IMailbox) -> int:
    """The octets an EXPUNGE would free: the sizes of the messages flagged \\Deleted."""
    total = 0
    for flags in mailbox.flags():
        if DELETED in flags.flags:
            try:
                total += mailbox.message(flags.uid).info.size
            except NoSuchMessage:  # expunged meanwhile
                continue
    return total


def status(session: Session, command: Command) -> Result:
    args = command.args
    assert isinstance(args, parse_mailbox.Status)
    assert session.account is not None
    mailbox = session.account.folder(args.mailbox)
    if "HIGHESTMODSEQ" in args.items:
        session.use_condstore()  # RFC 7162 §3.1: a CONDSTORE-enabling command
    return Result(text="STATUS completed", untagged=[status_line(session, mailbox, args.items)])


async def close(session: Session, command: Command) -> Any:
    """CLOSE: expunge silently (unless read-only), then leave the selected state (RFC 9051
    §6.4.1)."""
    selected = session.selected
    assert selected is not None
    session.deselect()
    if not selected.readonly:
        await selected.mailbox.expunge()
    return Result(text="CLOSE completed")


def unselect(session: Session, command: Command) -> Result:
    """UNSELECT: leave the selected state without expunging (RFC 3691, RFC 9051 §6.4.2)."""
    session.deselect()
    return Result(text="UNSELECT completed")
