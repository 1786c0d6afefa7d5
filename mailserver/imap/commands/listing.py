"""LIST (with LIST-EXTENDED, LIST-STATUS, CHILDREN and SPECIAL-USE) and LSUB.

Sources: RFC 9051 §6.3.9 (patterns: ``*`` matches anything, ``%`` anything but the
delimiter; ``LIST "" ""`` asks for the delimiter), RFC 5258 (selection options SUBSCRIBED,
REMOTE, RECURSIVEMATCH, SPECIAL-USE; return options; CHILDINFO), RFC 5819 (RETURN (STATUS)),
RFC 3348 (\\HasChildren / \\HasNoChildren, always returned), RFC 6154 §2 (special-use
attributes, always returned), RFC 3501 §6.3.9 (LSUB).

Every parent of a folder exists in the store (creating a folder creates its parents, and
DELETE refuses a folder with children), so no \\Noselect placeholder folders arise. Names
without a mailbox come only from the subscriptions, which are names, not folders (RFC 9051
§6.3.7: a subscribed name stays subscribed after DELETE, and may be subscribed before
CREATE): ``LIST (SUBSCRIBED)`` shows such a name with ``\\NonExistent`` (RFC 5258 §3;
RFC 9051 §7.3.1: it implies \\Noselect), with RECURSIVEMATCH also a missing parent of a
subscribed name (``\\NonExistent`` plus CHILDINFO), and LSUB shows it ``\\Noselect``
(RFC 3501 §6.3.9). ``RETURN (SUBSCRIBED)`` alone lists only existing mailboxes.
"""

from __future__ import annotations

import re

from mailserver.imap import parse_mailbox, response
from mailserver.imap.commands.base import Result
from mailserver.imap.commands.mailbox import status_line
from mailserver.imap.grammar import Command
from mailserver.imap.session import Session
from mailserver.types import DELIMITER

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


def _order(name: str) -> tuple[bool, str]:
    """Listing order: INBOX first, then by name (as IAccount.list_folders)."""
    return name != "INBOX", name


def _ancestors(names: set[str]) -> set[str]:
    found = set()
    for name in names:
        levels = name.split(DELIMITER)
        found.update(DELIMITER.join(levels[:i]) for i in range(1, len(levels)))
    return found


def list_(session: Session, command: Command) -> Result:
    args = command.args
    assert isinstance(args, parse_mailbox.List)
    account = session.account
    assert account is not None
    if args.patterns == ("",) and not args.selection:
        # RFC 9051 §6.3.9: the hierarchy delimiter and the root name.
        line = response.untagged(b"LIST", b"(\\Noselect)", b'"/"', b'""')
        return Result(text="LIST completed", untagged=[line])
    folders = {info.name: info for info in account.list_folders()}
    parents = {name.rsplit(DELIMITER, 1)[0] for name in folders if DELIMITER in name}
    regexes = [pattern_regex(args.reference, p) for p in args.patterns if p]
    selection = set(args.selection)
    subscribed_only = "SUBSCRIBED" in selection
    special_only = "SPECIAL-USE" in selection
    show_subscribed = subscribed_only or "SUBSCRIBED" in args.returns
    recursive = "RECURSIVEMATCH" in selection
    subscribed = set(account.subscriptions()) if show_subscribed else set()
    names = set(folders)
    if subscribed_only:
        # RFC 5258 §3.1: every subscribed name, whether its mailbox exists or not; with
        # RECURSIVEMATCH (§3.5) also the missing parents of a subscribed name.
        names |= subscribed
        if recursive:
            names |= _ancestors(subscribed)

    def selected(name: str) -> bool:
        if subscribed_only and name not in subscribed:
            return False
        info = folders.get(name)
        return not (special_only and (info is None or info.special_use is None))

    chosen = [name for name in names if selected(name)]
    untagged: list[bytes] = []
    for name in sorted(names, key=_order):
        if not _matches(regexes, name):
            continue
        childinfo = False
        if not selected(name):
            # RFC 5258 §3.5: RECURSIVEMATCH lists a name whose descendants match.
            prefix = name + DELIMITER
            if not (recursive and any(c.startswith(prefix) for c in chosen)):
                continue
            childinfo = True
        info = folders.get(name)
        if info is None:
            # RFC 5258 §3: a subscribed name (or its parent) with no mailbox.
            attributes = ["\\NonExistent"]
        else:
            attributes = ["\\HasChildren" if name in parents else "\\HasNoChildren"]
            if info.special_use is not None:
                attributes.append(info.special_use.value)
        if show_subscribed and name in subscribed:
            attributes.append("\\Subscribed")
        parts = [
            b"LIST",
            response.plist(attributes),
            b'"/"',
            session.mailbox_name(name),
        ]
        if childinfo:
            reasons = [o for o in ("SUBSCRIBED", "SPECIAL-USE") if o in selection]
            parts.append(
                b'("CHILDINFO" ' + response.plist(response.quoted(o) for o in reasons) + b")"
            )
        untagged.append(response.untagged(*parts))
        if args.status_items is not None and not childinfo and info is not None:
            # RFC 5819 §2: STATUS for each listed selectable mailbox, after its LIST.
            mailbox = account.folder(name)
            untagged.append(status_line(session, mailbox, args.status_items))
    return Result(text="LIST completed", untagged=untagged)


def lsub(session: Session, command: Command) -> Result:
    """LSUB (IMAP4rev1): the subscribed names matching the pattern."""
    args = command.args
    assert isinstance(args, parse_mailbox.Lsub)
    account = session.account
    assert account is not None
    untagged: list[bytes] = []
    if args.pattern:
        regex = pattern_regex(args.reference, args.pattern)
        existing = {info.name for info in account.list_folders()}
        subscribed = set(account.subscriptions())
        for name in sorted(subscribed | _ancestors(subscribed), key=_order):
            if not regex.match(name):
                continue
            if name in subscribed:
                # RFC 3501 §6.3.9: a subscribed name stays listed after its mailbox is gone;
                # it cannot be selected, so it is flagged \Noselect (RFC 5258 §3: the
                # \NonExistent of LIST implies \Noselect).
                attributes = b"()" if name in existing else b"(\\Noselect)"
            elif any(
                sub.startswith(name + DELIMITER) and not regex.match(sub) for sub in subscribed
            ):
                # RFC 3501 §6.3.9: "%" reaches an unsubscribed parent of a subscribed name:
                # LSUB returns the parent, flagged \Noselect.
                attributes = b"(\\Noselect)"
            else:
                continue
            untagged.append(
                response.untagged(b"LSUB", attributes, b'"/"', session.mailbox_name(name))
            )
    return Result(text="LSUB completed", untagged=untagged)
