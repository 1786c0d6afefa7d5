"""Who may do what: the one place roles are checked, for the command line and the API.

Three roles (``types.Role``): a **user** manages their own credentials and mail; a **domain
admin** also manages users and aliases of the domains in ``User.admin_domains``; an
**admin** may do everything, including domains, the queue and the audit log. The command
line, run by whoever can read the data directory, acts as :data:`OPERATOR` (an admin).

Callers ask :func:`require` (raises :class:`Forbidden`) or :func:`allowed` (a bool) with an
:class:`Action` and, where it matters, the address or domain acted on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from mailserver.errors import MailError
from mailserver.types import Role, User

__all__ = ["OPERATOR", "Action", "Actor", "Forbidden", "allowed", "require"]


class Forbidden(MailError):
    """The actor's role does not allow the action (HTTP 403 in the API)."""

    code = 550
    enhanced = "5.7.1"
    text = "Not allowed"


class Action(enum.Enum):
    MANAGE_DOMAINS = "manage-domains"  # add/remove served domains
    MANAGE_USERS = "manage-users"  # add/remove users, reset their passwords (target: address)
    MANAGE_ALIASES = "manage-aliases"  # target: alias source or @domain
    MANAGE_QUEUE = "manage-queue"  # list/retry/hold/delete outbound mail
    READ_AUDIT = "read-audit"
    MANAGE_OWN_CREDENTIALS = "manage-own-credentials"  # password, app passwords, TOTP, tokens
    READ_MAIL = "read-mail"  # target: the mailbox owner's address
    MANAGE_FILTER_LISTS = "manage-filter-lists"  # allow/block lists; target: address or domain


#: Actions scoped by domain: a domain admin may do them inside their domains.
_DOMAIN_SCOPED = frozenset(
    {Action.MANAGE_USERS, Action.MANAGE_ALIASES, Action.MANAGE_FILTER_LISTS}
)
#: Actions on one's own account: every user may do them for themselves.
_SELF = frozenset(
    {Action.MANAGE_OWN_CREDENTIALS, Action.READ_MAIL, Action.MANAGE_FILTER_LISTS}
)


@dataclass(frozen=True)
class Actor:
    """Who is acting: an account (``address``) with its roles, or the local operator."""

    address: str | None
    roles: frozenset[Role] = frozenset({Role.USER})
    admin_domains: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, user: User) -> Actor:
        domains = frozenset(d.lower() for d in user.admin_domains)
        return cls(user.address.lower(), user.roles, domains)

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles


#: The command line's actor: whoever can read the data directory already owns everything.
OPERATOR = Actor(None, frozenset({Role.ADMIN}))


def _domain_of(target: str) -> str:
    return target.rpartition("@")[2].lower().rstrip(".")


def allowed(actor: Actor, action: Action, target: str | None = None) -> bool:
    """Whether ``actor`` may do ``action`` (on ``target``: an address, ``@domain`` or domain)."""
    if actor.is_admin:
        return True
    if action in _SELF and target is not None and actor.address == target.lower():
        return True
    if action in _DOMAIN_SCOPED and Role.DOMAIN_ADMIN in actor.roles and target:
        return _domain_of(target) in actor.admin_domains
    return False


def require(actor: Actor, action: Action, target: str | None = None) -> None:
    """Raise :class:`Forbidden` unless :func:`allowed`; the message says what was refused."""
    if not allowed(actor, action, target):
        who = actor.address or "the operator"
        what = action.value + (f" on {target}" if target else "")
        roles = sorted(r.value for r in actor.roles)
        raise Forbidden(f"{who} may not {what}", detail=f"roles={roles}")
