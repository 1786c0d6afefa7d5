"""LIST (with LIST-EXTENDED, LIST-STATUS, CHILDREN and SPECIAL-USE) and LSUB.

Sources: RFC 9051 §6.3.9 (patterns: ``*`` matches anything, ``%`` anything but the
delimiter; ``LIST "" ""`` asks for the delimiter), RFC 5258 (selection options SUBSCRIBED,
REMOTE, RECURSIVEMATCH, SPECIAL-USE; return options; CHILDINFO), RFC 5819 (RETURN (STATUS)),
RFC 3348 (\\HasChildren / \\HasNoChildren, always returned), RFC 6154 §2 (special-use
attributes, always returned), RFC 3501 §6.3.9 (LSUB).

Every parent of a folder exists in the store (creating a folder creates its parents, and
DELETE refuses a folder with children), so no \\Noselect placeholder names arise.
"""

from __future__ import annotations

import re

from mailserver.imap import parse_mailbox, response
from mailserver.imap.commands.base import Result
from mailserver.imap.commands.mailbox import status_line
from mailserver.imap.grammar import Command
from mailserver.imap.session import Session
from mailserver.types import DELIMITER, FolderInfo

__all__ = ["list_", "lsub", "pattern_regex"]


def pattern_regex(reference: str, pattern: str) -> re.Pattern[str]:
    """The regular expression of ``reference`` + ``pattern`` (RFC 9051 §6.3.9: the reference
    is prefixed to the pattern). A leading ``INBOX`` matches in any case (RFC 9051 §5.1)."""
    full = reference + pattern
    head = full[:5]
    if head.upper() == "INBOX" and (len(full) == 5 or full[5] in DELIMITER + "*%"):
        full = "INBOX" + full[5:]
    parts = []
    for char in full:
        if char == "*":
            parts.append(".*")
        elif char == "%":
            parts.append("[^" + re.escape(DELIMITER) + "]*")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts) + r"\Z", re.DOTALL)


def _matches(regexes: list[re.Pattern[str]], name: str) -> bool:
    return any(regex.match(name) for regex in regexes)


def list_(session: Session, command: Command) -> Result:
    args = command.args
    assert isinstance(args, parse_mailbox.List)
    assert session.account is not None
    if args.patterns == ("",) and not args.selection:
        # RFC 9051 §6.3.9: the hierarchy delimiter and the root name.
        line = response.untagged(b"LIST", b"(\\Noselect)", b'"/"', b'""')
        return Result(text="LIST completed", untagged=[line])
    folders = session.account.list_folders()
    parents = {info.name.rsplit(DELIMITER, 1)[0] for info in folders if DELIMITER in info.name}
    regexes = [pattern_regex(args.reference, p) for p in args.patterns if p]
    selection = set(args.selection)
    subscribed_only = "SUBSCRIBED" in selection
    special_only = "SPECIAL-USE" in selection
    show_subscribed = subscribed_only or "SUBSCRIBED" in args.returns
    recursive = "RECURSIVEMATCH" in selection

    def selected(info: FolderInfo) -> bool:
        if subscribed_only and not info.subscribed:
            return False
        return not (special_only and info.special_use is None)

    chosen = [info for info in folders if selected(info)]
    untagged: list[bytes] = []
    for info in folders:
        if not _matches(regexes, info.name):
            continue
        childinfo = False
        if not selected(info):
            # RFC 5258 §3.5: RECURSIVEMATCH lists a name whose descendants match.
            prefix = info.name + DELIMITER
            if not (recursive and any(c.name.startswith(prefix) for c in chosen)):
                continue
            childinfo = True
        attributes = ["\\HasChildren" if info.name in parents else "\\HasNoChildren"]
        if info.special_use is not None:
            attributes.append(info.special_use.value)
        if show_subscribed and info.subscribed:
            attributes.append("\\Subscribed")
        parts = [
            b"LIST",
            response.plist(attributes),
            b'"/"',
            session.mailbox_name(info.name),
        ]
        if childinfo:
            reasons = [o for o in ("SUBSCRIBED", "SPECIAL-USE") if o in selection]
            parts.append(
                b'("CHILDINFO" ' + response.plist(response.quoted(o) for o in reasons) + b")"
            )
        untagged.append(response.untagged(*parts))
        if args.status_items is not None and not childinfo:
            # RFC 5819 §2: STATUS for each listed selectable mailbox, after its LIST.
            mailbox = session.account.folder(info.name)
            untagged.append(status_line(session, mailbox, args.status_items))
    return Result(text="LIST completed", untagged=untagged)


def lsub(session: Session, command: Command) -> Result:
    """LSUB (IMAP4rev1): the subscribed names matching the pattern."""
    args = command.args
    assert isinstance(args, parse_mailbox.Lsub)
    assert session.account is not None
    untagged: list[bytes] = []
    if args.pattern:
        regex = pattern_regex(args.reference, args.pattern)
        folders = session.account.list_folders()
        subscribed = [info.name for info in folders if info.subscribed]
        for info in folders:
            if not regex.match(info.name):
                continue
            if info.subscribed:
                attributes = b"()"
            elif any(
                name.startswith(info.name + DELIMITER) and not regex.match(name)
                for name in subscribed
            ):
                # RFC 3501 §6.3.9: "%" reaches an unsubscribed parent of a subscribed name:
                # LSUB returns the parent, flagged \Noselect.
                attributes = b"(\\Noselect)"
            else:
                continue
            name = session.mailbox_name(info.name)
            untagged.append(response.untagged(b"LSUB", attributes, b'"/"', name))
    return Result(text="LSUB completed", untagged=untagged)
