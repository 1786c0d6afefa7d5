"""GETQUOTA, GETQUOTAROOT and SETQUOTA (RFC 9208, resources STORAGE and MESSAGE).

Every mailbox of an account shares one quota root, named ``""``: the account's, with the
usage the store keeps in counters (:meth:`~mailserver.interfaces.IAccount.quota`). STORAGE is
in units of 1024 octets (RFC 9208 §3.2.1: usage rounded up, the limit rounded down); MESSAGE
counts messages (§3.2.2). Only resources with a limit are listed, and an account with no limit
at all has no quota root: QUOTAROOT names none and ``GETQUOTA ""`` is ``NO [NONEXISTENT]``
(a quota list may not be empty, §5). Limits are set by the operator (``mailserver user
quota``): QUOTASET is not advertised and SETQUOTA is answered ``NO [NOPERM]`` (§4.1.3).
Writes over quota fail ``NO [OVERQUOTA]`` (§4.3.1, :func:`~.base.result_for_error`).
"""

from __future__ import annotations

from mailserver.imap import parse_mailbox, response
from mailserver.imap.commands.base import Result, no
from mailserver.imap.grammar import Command
from mailserver.imap.session import Session
from mailserver.types import QuotaUsage

__all__ = ["ROOT", "getquota", "getquotaroot", "resources", "setquota"]

#: The name of the one quota root of an account.
ROOT = ""
KIB = 1024


def resources(usage: QuotaUsage) -> list[bytes]:
    """``resource usage limit`` for each limited resource (RFC 9208 §4.2.1)."""
    out = []
    if usage.limit_bytes is not None:
        used = -(-usage.used_bytes // KIB)
        out.append(b"STORAGE %d %d" % (used, usage.limit_bytes // KIB))
    if usage.limit_messages is not None:
        out.append(b"MESSAGE %d %d" % (usage.used_messages, usage.limit_messages))
    return out


def _quota_line(found: list[bytes]) -> bytes:
    return response.untagged(b"QUOTA", response.astring(ROOT), response.plist(found))


def getquota(session: Session, command: Command) -> Result:
    """``* QUOTA "" (STORAGE used limit MESSAGE used limit)`` (RFC 9208 §4.1.1)."""
    args = command.args
    assert isinstance(args, parse_mailbox.GetQuota)
    assert session.account is not None
    found = resources(session.account.quota())
    if args.root != ROOT or not found:
        raise no("No such quota root", "NONEXISTENT")
    return Result(text="GETQUOTA completed", untagged=[_quota_line(found)])


def getquotaroot(session: Session, command: Command) -> Result:
    """``* QUOTAROOT mailbox ""`` and the root's QUOTA (RFC 9208 §4.1.2); a mailbox that
    does not exist is ``NO [NONEXISTENT]``."""
    args = command.args
    assert isinstance(args, parse_mailbox.MailboxArg)
    account = session.account
    assert account is not None
    name = account.folder(args.mailbox).name
    found = resources(account.quota())
    roots = [response.astring(ROOT)] if found else []
    untagged = [response.untagged(b"QUOTAROOT", session.mailbox_name(name), *roots)]
    if found:
        untagged.append(_quota_line(found))
    return Result(text="GETQUOTAROOT completed", untagged=untagged)


def setquota(session: Session, command: Command) -> Result:
    """Users cannot change their own limits (RFC 9208 §4.1.3: NO when not permitted)."""
    assert isinstance(command.args, parse_mailbox.SetQuota)
    raise no("Quotas are set by the administrator", "NOPERM")
