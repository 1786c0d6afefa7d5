"""What every admin route does the same way (the design rules of
:mod:`mailserver.web.api.admin`): the action and event names, canonical addresses, domains
and queue ids (400 when malformed), the role check with refusals audited, the :data:`RANK`
rule (a non-admin acts only on accounts below their own power), one audit line per change,
request bodies and query arguments, and coroutine handlers run as Route handlers.

:mod:`mailserver.web.api.tracking` uses them too; every name is re-exported by
:mod:`mailserver.web.api.admin`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.threads import deferToThreadPool

from mailserver.message.address import normalize_domain, parse_address
from mailserver.types import Role, User
from mailserver.web.api.routing import Call, Problem

#: How much power a role gives, for "only act on accounts below you" (as the CLI's RANK).
RANK = {Role.USER: 0, Role.DOMAIN_ADMIN: 1, Role.ADMIN: 2}

# The actions of mailserver.auth.roles.Action (this package may not import it).
MANAGE_DOMAINS = "manage-domains"
MANAGE_USERS = "manage-users"
MANAGE_ALIASES = "manage-aliases"
MANAGE_QUEUE = "manage-queue"
READ_AUDIT = "read-audit"

# The events of mailserver.auth.audit, same reason.
ADMIN_ACTION = "admin_action"
QUEUE_ACTION = "queue_action"
PASSWORD_CHANGED = "password_changed"

_QUEUE_ID = re.compile(r"[0-9A-Fa-f]{1,64}")


def run(handler: Callable[[Call], Awaitable[Any]]) -> Callable[[Call], Deferred[Any]]:
    """A coroutine handler as the Deferred-returning handler a Route takes."""

    @functools.wraps(handler)
    def wrapper(call: Call) -> Deferred[Any]:
        return ensureDeferred(handler(call))

    return wrapper


def canonical_address(text: Any, what: str = "address") -> str:
    """``local@domain`` lower-cased (as the directory keys it); 400 when malformed."""
    try:
        parsed = parse_address(str(text).strip())
    except ValueError as error:
        raise Problem(400, f"Invalid {what}", f"{text!r} is not an address: {error}") from None
    return f"{parsed.local}@{parsed.domain}".lower()


def canonical_domain(text: Any) -> str:
    try:
        return normalize_domain(str(text).strip())
    except ValueError as error:
        raise Problem(400, "Invalid domain", f"{text!r} is not a domain: {error}") from None


def queue_id(text: Any) -> str:
    """A queue id (hex digits) upper-cased; 400 otherwise."""
    if not isinstance(text, str) or not _QUEUE_ID.fullmatch(text.strip()):
        raise Problem(400, "Invalid queue id", f"{text!r} is not a queue id (hex digits)")
    return text.strip().upper()


def in_thread(call: Call, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
    reactor = call.context.reactor
    return deferToThreadPool(reactor, reactor.getThreadPool(), function, *args)


async def audit(call: Call, event: str, outcome: str, **details: Any) -> None:
    """One audit line for this call (rule 3); a missing log records nothing."""
    log = getattr(call.context, "audit", None)
    if log is not None:
        await log.submit(event, who=call.user, where=call.client_ip or None,
                         outcome=outcome, protocol="api", **details)


async def require(
    call: Call, action: str, target: str | None, event: str = "", what: str = ""
) -> None:
    """``call.require``; with ``event``, a refusal is audited as ``refused`` first."""
    try:
        call.require(action, target)
    except Problem as problem:
        if event and getattr(problem, "status", 403) == 403:
            await audit(call, event, "refused", action=what, target=target or "")
        raise


def _actor(call: Call) -> User | None:
    return None if call.user is None else call.context.directory.get_user(call.user)


def _rank(user: User | None) -> int:
    return max((RANK[role] for role in user.roles), default=0) if user else 0


async def _below_caller(call: Call, address: str, event: str, what: str) -> None:
    """Rule 1: a non-admin may not manage an account with as much power as their own."""
    me = _actor(call)
    if me is None or Role.ADMIN in me.roles or address == me.address:
        return
    other = call.context.directory.get_user(address)
    if other is not None and _rank(other) >= _rank(me):
        await audit(call, event, "refused", action=what, target=address)
        raise Problem(403, "Forbidden",
                      f"{me.address} may not manage {other.address}: it has as much power")


def _body(call: Call) -> dict[str, Any]:
    if not isinstance(call.json, dict):
        raise Problem(400, "Invalid body", "the request body must be a JSON object")
    return call.json


def _one(call: Call, name: str) -> str | None:
    """Query argument ``name``; an empty value counts as absent."""
    return call.arg(name) or None
