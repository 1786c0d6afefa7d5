"""Who may run which command: the command line's side of :mod:`mailserver.auth.roles`.

Whoever can read the data directory owns everything, so by default the command line acts as
:data:`~mailserver.auth.roles.OPERATOR` (an admin). ``mailserver --as ADDRESS ...`` acts with
that account's roles instead: what a delegated administrator gets through a sudo rule such as
``mailserver --as alice@example.org *``. A domain admin then manages only users and aliases of
their domains, a user only their own credentials.

:data:`RULES` maps every command's handler (``module.function``) to the actions it needs
(any one of them suffices) and the argument naming its target; :func:`authorize` is called by
``main.py`` before every command, so a command with no rule cannot run as anyone but the
operator. The check is :func:`mailserver.auth.roles.require`, the same as the API's.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailserver.auth.directory import LmdbDirectory
from mailserver.auth.roles import OPERATOR, Action, Actor, Forbidden, allowed
from mailserver.cli.common import load_config
from mailserver.db import Snapshot
from mailserver.errors import NoSuchUser
from mailserver.types import Role

__all__ = ["RULES", "Rule", "authorize", "check"]


@dataclass(frozen=True)
class Rule:
    """The actions that allow a command (any one), and the argument holding its target."""

    actions: tuple[Action, ...]
    target: str | None = None


_USERS = Rule((Action.MANAGE_USERS,), "address")
_OWN = Rule((Action.MANAGE_OWN_CREDENTIALS, Action.MANAGE_USERS), "address")
_ADMIN = Rule((Action.MANAGE_DOMAINS,))  # no scoped action: admins only
_QUEUE = Rule((Action.MANAGE_QUEUE,))
_AUDIT = Rule((Action.READ_AUDIT,))
#: Allow/block lists: one's own (--user), a domain admin's domains (--domain), the server
#: scope (no target) for admins only.
_FILTER_LISTS = Rule((Action.MANAGE_FILTER_LISTS,), "address")

#: handler -> Rule; ``None`` = anyone (reads no data: config check/example).
RULES: dict[str, Rule | None] = {
    "mailserver.cli.config_cmd.check_config": None,
    "mailserver.cli.config_cmd.print_example": None,
    "mailserver.cli.domain.add_domain": _ADMIN,
    "mailserver.cli.domain.delete_domain": _ADMIN,
    "mailserver.cli.domain.list_domains": _ADMIN,
    "mailserver.cli.user.add_user": _USERS,
    "mailserver.cli.user.delete_user": _USERS,
    "mailserver.cli.user.set_role": _ADMIN,
    "mailserver.cli.user.set_quota": _USERS,  # users cannot raise their own (RFC 9208 §4.1.3)
    "mailserver.cli.user.set_pop3": _OWN,  # a preference over one's own mail
    "mailserver.cli.user.list_users": Rule((Action.MANAGE_USERS,), "domain"),
    "mailserver.cli.user.change_password": _OWN,
    "mailserver.cli.user.add_app_password": _OWN,
    "mailserver.cli.user.list_app_passwords": _OWN,
    "mailserver.cli.user.revoke_app_password": _OWN,
    "mailserver.cli.user.enable_totp": _OWN,
    "mailserver.cli.user.disable_totp": _OWN,
    "mailserver.cli.user.issue_token": _OWN,
    "mailserver.cli.user.list_tokens": _OWN,
    "mailserver.cli.user.revoke_token": _OWN,
    "mailserver.cli.alias.add_alias": Rule((Action.MANAGE_ALIASES,), "source"),
    "mailserver.cli.alias.delete_alias": Rule((Action.MANAGE_ALIASES,), "source"),
    "mailserver.cli.alias.list_aliases": Rule((Action.MANAGE_ALIASES,), "domain"),
    "mailserver.cli.reindex.run_reindex": _ADMIN,
    "mailserver.cli.deliver.deliver": _ADMIN,
    "mailserver.cli.queue.list_queue": _QUEUE,
    "mailserver.cli.queue.show_entry": _QUEUE,
    "mailserver.cli.queue.retry_entry": _QUEUE,
    "mailserver.cli.queue.hold_entry": _QUEUE,
    "mailserver.cli.queue.release_entry": _QUEUE,
    "mailserver.cli.queue.delete_entry": _QUEUE,
    "mailserver.cli.queue.flush_queue": _QUEUE,
    "mailserver.cli.audit.tail_audit": _AUDIT,
    "mailserver.cli.audit.search_audit": _AUDIT,
    "mailserver.cli.dkim.keygen": _ADMIN,
    "mailserver.cli.dkim.rotate": _ADMIN,
    "mailserver.cli.dkim.remove": _ADMIN,
    "mailserver.cli.dkim.list_keys": _ADMIN,
    # read-only, nothing secret: domain admins publish their own domains' records
    "mailserver.cli.dns.print_records": Rule((Action.MANAGE_USERS,), "domain"),
    "mailserver.cli.dns.check_records": Rule((Action.MANAGE_USERS,), "domain"),
    # domain admins read the DMARC reports on their own domains; importing is for admins
    "mailserver.cli.dmarc.summary": Rule((Action.MANAGE_USERS,), "domain"),
    "mailserver.cli.dmarc.list_reports": Rule((Action.MANAGE_USERS,), "domain"),
    "mailserver.cli.dmarc.import_reports": _ADMIN,
    "mailserver.cli.filter.allow_entry": _FILTER_LISTS,
    "mailserver.cli.filter.block_entry": _FILTER_LISTS,
    "mailserver.cli.filter.unlist_entry": _FILTER_LISTS,
    "mailserver.cli.filter.list_entries": _FILTER_LISTS,
    "mailserver.cli.filter.greylist_status": _ADMIN,
    "mailserver.cli.filter.prune_greylist": _ADMIN,
    # the models are the whole server's (a user's own model learns from their Junk moves)
    "mailserver.cli.spam.train": _ADMIN,
    "mailserver.cli.spam.eval_model": _ADMIN,
    "mailserver.cli.spam.explain": _ADMIN,
    "mailserver.cli.spam.stats": _ADMIN,
    # backups hold every account's mail and the server's secrets; import/export any account's
    "mailserver.cli.backup.run_backup": _ADMIN,
    "mailserver.cli.backup.run_restore": _ADMIN,
    "mailserver.cli.backup.run_verify": _ADMIN,
    "mailserver.cli.replicate.run_replicate": _ADMIN,  # a replica is a backup too
    "mailserver.cli.transfer.run_import": _ADMIN,
    "mailserver.cli.transfer.run_export": _ADMIN,
}


def handler_name(handler: Callable[..., Any] | None) -> str:
    return f"{getattr(handler, '__module__', '')}.{getattr(handler, '__name__', '')}"


def _open_directory(args: argparse.Namespace) -> tuple[Snapshot, LmdbDirectory]:
    config = load_config(args)
    snapshot = Snapshot.open(
        os.path.join(config.server.data_path, "index"),
        map_size=config.store.map_size_mb * 1024 * 1024,
    )
    return snapshot, LmdbDirectory(snapshot, reactor=None)


def authorize(args: argparse.Namespace) -> Actor:
    """The actor of this command, after checking it may run it; Forbidden otherwise.

    Beyond :func:`mailserver.auth.roles.allowed`, nobody but an admin may act on an account
    with more power than their own (a domain admin cannot reset an admin's password) or
    hand out a role above ``user``.
    """
    address = getattr(args, "acting_as", None)
    if address is None:
        return OPERATOR
    snapshot, directory = _open_directory(args)
    try:
        user = directory.get_user(address)
        if user is None:
            raise NoSuchUser(f"--as {address}: no such user")
        who = Actor.of(user)
        name = handler_name(getattr(args, "handler", None))
        if name not in RULES:
            raise Forbidden(f"only the operator may run this command ({name})")
        rule = RULES[name]
        if rule is None or who.is_admin:
            return who
        target = getattr(args, rule.target, None) if rule.target else None
        if not any(allowed(who, action, target) for action in rule.actions):
            what = " or ".join(action.value for action in rule.actions)
            on = f" on {target}" if target else ""
            roles = ", ".join(sorted(role.value for role in who.roles))
            raise Forbidden(f"{who.address} ({roles}) may not {what}{on}")
        if getattr(args, "role", Role.USER.value) != Role.USER.value:
            raise Forbidden(f"{who.address} may not give the {args.role} role: admins only")
        if rule.target == "address" and target and target.lower() != who.address:
            other = directory.get_user(target)
            if other is not None and _rank(other.roles) >= _rank(who.roles):
                raise Forbidden(
                    f"{who.address} may not manage {other.address}: it has as much power"
                )
        return who
    finally:
        snapshot.close()


def _rank(roles: frozenset[Role]) -> int:
    return max(RANK[role] for role in roles) if roles else 0


#: How much power a role gives, for "only act on accounts below you".
RANK = {Role.USER: 0, Role.DOMAIN_ADMIN: 1, Role.ADMIN: 2}


def check(args: argparse.Namespace) -> int:
    """:func:`authorize` as a command step for ``main.py``: 0, or Forbidden/NoSuchUser."""
    authorize(args)
    return 0
