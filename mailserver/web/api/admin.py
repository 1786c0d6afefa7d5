"""The admin endpoints of the REST API: domains, users, aliases, quotas and the audit log
(tag ``admin``). The outbound queue and message tracking are in
:mod:`mailserver.web.api.tracking`, under the same rules.

Design rules:

1. **The same rules as the command line.** Every route asks :meth:`Call.require` with the
   action the CLI's ``RULES`` table names for the same verb (``manage-domains`` for domains
   and roles, ``manage-users`` on the address for users and quotas, ``manage-aliases`` on
   the source for aliases, ``manage-queue``, ``read-audit``), so a domain admin manages the
   users and aliases of their domains and nothing else. Beyond the role check, as in
   ``mailserver --as``: a non-admin may not act on an account with as much power as their
   own (:data:`RANK`), and roles are changed by admins only (no escalation). The last
   admin cannot take away their own admin role through the API (409): the command line,
   run by the operator, still can.
2. **Everything is checked before anything is changed**, so a PATCH with a password and a
   role it may not set changes neither.
3. **Every change is audited** (``context.audit``, when there is one) with ``who`` (the
   caller), ``where`` (the client IP), the outcome and ``action``/``target`` details, the
   way ``mailserver.cli.auditing`` records the same commands (``admin_action``,
   ``queue_action``, ``password_changed``). A change refused by the role check is recorded
   as ``refused`` before the 403 goes out. Secrets (passwords) are never recorded.
4. **Expected failures are problems with a clear message** (404 unknown, 409 conflict, 400
   bad value), never a traceback: the directory's plain ``MailError`` for "no alias" or
   "domain still used" would otherwise surface as a temporary 503, so those are checked
   first.
5. **This package imports no implementation** (import-linter): the directory, store, spool,
   credentials and audit log arrive as plain attributes of the ApiContext. Blocking work
   (reading the audit files, opening spooled messages) runs in the reactor's thread pool;
   directory and spool reads are LMDB reads and stay on the reactor.

The code of these rules (checks, audit lines, canonical names) is in
:mod:`mailserver.web.api.admin_rules`, the audit log route in
:mod:`mailserver.web.api.admin_audit`; this module keeps the domain, user and alias routes
and :data:`ROUTES`, and re-exports the names that lived here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mailserver.types import Role, User
from mailserver.web.api.admin_audit import (  # noqa: F401
    AUDIT_LIMIT,
    AUDIT_LIMIT_MAX,
    list_audit,
    read_audit,
)
from mailserver.web.api.admin_rules import (  # noqa: F401
    ADMIN_ACTION,
    MANAGE_ALIASES,
    MANAGE_DOMAINS,
    MANAGE_QUEUE,
    MANAGE_USERS,
    PASSWORD_CHANGED,
    QUEUE_ACTION,
    RANK,
    READ_AUDIT,
    _actor,
    _below_caller,
    _body,
    _one,
    audit,
    canonical_address,
    canonical_domain,
    in_thread,
    queue_id,
    require,
    run,
)
from mailserver.web.api.routing import Call, Problem, Response, Route

__all__ = [
    "RANK",
    "ROUTES",
    "audit",
    "canonical_address",
    "canonical_domain",
    "in_thread",
    "queue_id",
    "require",
    "run",
]


def _alias_source(text: Any) -> str:
    text = str(text).strip()
    if text.startswith("@"):
        return "@" + canonical_domain(text[1:])
    return canonical_address(text, "alias source")


def _user_json(user: User) -> dict[str, Any]:
    """A directory user without its password hash."""
    return {
        "address": user.address,
        "roles": sorted(role.value for role in user.roles),
        "admin_domains": sorted(user.admin_domains),
        "quota_bytes": user.quota_bytes,
        "created": user.created,
        "display_name": user.display_name,
    }


def _require_domain(call: Call, domain: str) -> None:
    if not call.context.directory.has_domain(domain):
        raise Problem(404, "No such domain",
                      f"domain {domain} is not served here; add it first: POST /admin/domains")


# -- domains -------------------------------------------------------------------------------


def list_domains(call: Call) -> Any:
    call.require(MANAGE_DOMAINS)
    domains = sorted(call.context.directory.domains(), key=lambda d: d.name)
    return {"domains": [{"name": d.name, "created": d.created} for d in domains]}


@run
async def add_domain(call: Call) -> Any:
    name = canonical_domain(_body(call).get("name", ""))
    await require(call, MANAGE_DOMAINS, None, ADMIN_ACTION, "domain.add")
    if call.context.directory.has_domain(name):
        raise Problem(409, "Domain exists", f"domain {name} exists already")
    domain = await call.context.directory.add_domain(name)
    await audit(call, ADMIN_ACTION, "ok", action="domain.add", target=name)
    return Response(201, {"name": domain.name, "created": domain.created},
                    headers={"Location": f"/api/v1/admin/domains/{name}"})


@run
async def delete_domain(call: Call) -> Any:
    name = canonical_domain(call.params["domain"])
    await require(call, MANAGE_DOMAINS, None, ADMIN_ACTION, "domain.delete")
    directory = call.context.directory
    _require_domain(call, name)
    left = sorted(u.address for u in directory.users(name))
    left += sorted(a.source for a in directory.aliases(name))
    if left:
        shown = ", ".join(left[:5]) + (", ..." if len(left) > 5 else "")
        raise Problem(409, "Domain in use",
                      f"domain {name} still has {len(left)} user(s)/alias(es) ({shown}); "
                      "delete them first", remaining=left[:100])
    await directory.remove_domain(name)
    await audit(call, ADMIN_ACTION, "ok", action="domain.delete", target=name)
    return Response(204)


# -- users ---------------------------------------------------------------------------------


def _scoped_domains(call: Call, action: str) -> list[str] | None:
    """The domains a listing covers: ``?domain=`` (checked), all (None) for whoever may act
    without a target, else the caller's own admin domains."""
    domain = _one(call, "domain")
    if domain is not None:
        domain = canonical_domain(domain)
        call.require(action, domain)
        _require_domain(call, domain)
        return [domain]
    me = _actor(call)
    if me is not None and Role.ADMIN not in me.roles and me.admin_domains:
        for own in sorted(me.admin_domains):
            call.require(action, own)
        return sorted(me.admin_domains)
    call.require(action)
    return None


def list_users(call: Call) -> Any:
    directory = call.context.directory
    domains = _scoped_domains(call, MANAGE_USERS)
    users = directory.users() if domains is None else [
        u for d in domains for u in directory.users(d)
    ]
    return {"users": [_user_json(u) for u in sorted(users, key=lambda u: u.address)]}


def _quota_value(value: Any) -> int:
    """``quota_bytes``: a byte count, 0 for the configured default, -1 for unlimited."""
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise Problem(400, "Invalid quota",
                      "quota_bytes is a byte count, 0 (the default) or -1 (unlimited)")
    return value


def _password(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise Problem(400, "Invalid password", "the password must be a non-empty string")
    return value


@run
async def add_user(call: Call) -> Any:
    """The directory user and their mailbox, as ``mailserver user add`` (rolled back when
    the mailbox cannot be made)."""
    body = _body(call)
    address = canonical_address(body.get("address", ""))
    password = _password(body.get("password"))
    quota = _quota_value(body["quota_bytes"]) if "quota_bytes" in body else None
    await require(call, MANAGE_USERS, address, ADMIN_ACTION, "user.add")
    directory, store = call.context.directory, call.context.need("store")
    domain = address.rpartition("@")[2]
    _require_domain(call, domain)
    if directory.get_user(address) is not None:
        raise Problem(409, "User exists", f"user {address} exists already")
    if any(alias.source == address for alias in directory.aliases(domain)):
        raise Problem(409, "Address is an alias",
                      f"{address} is an alias; delete it first: DELETE /admin/aliases/{address}")
    await directory.add_user(address, password, [Role.USER])
    reused = store.has_account(address)
    try:
        if not reused:
            await store.create_account(address)
        if quota is not None:
            await directory.set_quota(address, quota)
    except Exception:
        await directory.remove_user(address)  # no user without a mailbox
        raise
    await audit(call, ADMIN_ACTION, "ok", action="user.add", target=address,
                 mailbox="reused" if reused else "created")
    user = directory.get_user(address)
    return Response(201, _user_json(user), headers={"Location": f"/api/v1/admin/users/{address}"})


def _existing_user(call: Call, address: str) -> User:
    user = call.context.directory.get_user(address)
    if user is None:
        raise Problem(404, "No such user", f"no user {address}")
    return user


async def _forget_credentials(credentials: Any, address: str) -> None:
    """App passwords, TOTP and tokens of a deleted user, through the CredentialStore's own
    methods (``auth.credentials.forget_user`` does it in one transaction, out of reach)."""
    if credentials is None:
        return
    for app in credentials.list_app_passwords(address):
        await credentials.revoke(address, app.id)
    for token in credentials.list_tokens(address):
        await credentials.revoke_token_id(address, token.id)
    if credentials.totp_enabled(address) or credentials.totp_pending(address):
        await credentials.disable_totp(address)


@run
async def delete_user(call: Call) -> Any:
    """Delete the user, their second credentials and (unless ``?keep_mail=true``) mail."""
    address = canonical_address(call.params["address"])
    keep = (_one(call, "keep_mail") or "false").lower() in ("1", "true", "yes")
    await require(call, MANAGE_USERS, address, ADMIN_ACTION, "user.delete")
    await _below_caller(call, address, ADMIN_ACTION, "user.delete")
    if call.user is not None and address == call.user.lower():
        raise Problem(409, "Cannot delete yourself", "delete your own account as another admin")
    directory, store = call.context.directory, call.context.need("store")
    has_mail = store.has_account(address)
    if directory.get_user(address) is None and (keep or not has_mail):
        raise Problem(404, "No such user", f"no user {address}")
    if directory.get_user(address) is not None:
        await directory.remove_user(address)
        await _forget_credentials(call.context.credentials, address)
    if has_mail and not keep:
        await store.delete_account(address)
    await audit(call, ADMIN_ACTION, "ok", action="user.delete", target=address,
                 mail="kept" if keep else ("deleted" if has_mail else "none"))
    return Response(204)


def _roles_change(body: dict[str, Any]) -> tuple[list[Role], list[str]] | None:
    """``roles`` (+ ``admin_domains``) of a PATCH, validated as ``mailserver user role``."""
    if "roles" not in body:
        if "admin_domains" in body:
            raise Problem(400, "Invalid roles", "admin_domains goes with roles")
        return None
    names = body["roles"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise Problem(400, "Invalid roles", "roles is a non-empty list of role names")
    try:
        roles = [Role(name) for name in names]
    except ValueError:
        choices = ", ".join(role.value for role in Role)
        raise Problem(400, "Invalid roles", f"roles are {choices}") from None
    domains = [canonical_domain(d) for d in body.get("admin_domains") or []]
    if Role.DOMAIN_ADMIN in roles and not domains:
        raise Problem(400, "Invalid roles", "a domain-admin needs admin_domains")
    if domains and Role.DOMAIN_ADMIN not in roles:
        raise Problem(400, "Invalid roles", "admin_domains is only for the domain-admin role")
    return roles, domains


@run
async def patch_user(call: Call) -> Any:
    """Change the password, quota and/or roles; all checks pass before any change."""
    address = canonical_address(call.params["address"])
    body = _body(call)
    unknown = sorted(set(body) - {"password", "quota_bytes", "roles", "admin_domains"})
    if unknown:
        raise Problem(400, "Invalid body", f"unknown field(s): {', '.join(unknown)}")
    password = _password(body["password"]) if "password" in body else None
    quota = _quota_value(body["quota_bytes"]) if "quota_bytes" in body else None
    roles = _roles_change(body)
    if password is None and quota is None and roles is None:
        raise Problem(400, "Invalid body", "give password, quota_bytes or roles")
    await require(call, MANAGE_USERS, address, ADMIN_ACTION, "user.change")
    if roles is not None:  # `mailserver user role` is for admins only: no escalation
        await require(call, MANAGE_DOMAINS, None, ADMIN_ACTION, "user.role")
    await _below_caller(call, address, ADMIN_ACTION, "user.change")
    directory = call.context.directory
    _existing_user(call, address)
    if roles is not None:
        for domain in roles[1]:
            _require_domain(call, domain)
        admins = [u.address for u in directory.users() if Role.ADMIN in u.roles]
        if admins == [address] and Role.ADMIN not in roles[0]:
            raise Problem(409, "Last admin", f"{address} is the only admin; make another "
                          "admin first")
    changed = []
    if password is not None:
        await directory.set_password(address, password)
        await audit(call, PASSWORD_CHANGED, "ok", target=address)
        changed.append("password")
    if quota is not None:
        await directory.set_quota(address, quota)
        changed.append("quota")
    if roles is not None:
        await directory.set_roles(address, roles[0], roles[1])
        changed.append("roles")
    if quota is not None or roles is not None:
        details: dict[str, Any] = {}
        if quota is not None:
            details["quota_bytes"] = quota
        if roles is not None:
            details["roles"] = sorted(r.value for r in roles[0])
            details["admin_domains"] = roles[1]
        await audit(call, ADMIN_ACTION, "ok", action="user.change", target=address, **details)
    return _user_json(_existing_user(call, address))


def get_quota(call: Call) -> Any:
    """Usage and limits from the store's counters; ``resources`` as RFC 9208 §5 counts them
    (STORAGE in units of 1024 octets, rounded up; MESSAGE in messages)."""
    address = canonical_address(call.params["address"])
    call.require(MANAGE_USERS, address)
    store = call.context.need("store")
    if not store.has_account(address):
        raise Problem(404, "No such mailbox", f"{address} has no mailbox")
    usage = store.account(address).quota()
    resources: dict[str, Any] = {
        "STORAGE": {
            "usage": -(-usage.used_bytes // 1024),
            "limit": None if usage.limit_bytes is None else usage.limit_bytes // 1024,
        },
        "MESSAGE": {"usage": usage.used_messages, "limit": usage.limit_messages},
    }
    user = call.context.directory.get_user(address)
    return {
        "address": address,
        "used_bytes": usage.used_bytes,
        "used_messages": usage.used_messages,
        "limit_bytes": usage.limit_bytes,
        "limit_messages": usage.limit_messages,
        "quota_bytes": None if user is None else user.quota_bytes,
        "resources": resources,
    }


# -- aliases -------------------------------------------------------------------------------


def list_aliases(call: Call) -> Any:
    directory = call.context.directory
    domains = _scoped_domains(call, MANAGE_ALIASES)
    aliases = directory.aliases() if domains is None else [
        a for d in domains for a in directory.aliases(d)
    ]
    return {"aliases": [{"source": a.source, "targets": list(a.targets)}
                        for a in sorted(aliases, key=lambda a: a.source)]}


def _find_alias(call: Call, source: str) -> tuple[str, ...] | None:
    for alias in call.context.directory.aliases(source.rpartition("@")[2]):
        if alias.source == source:
            return tuple(alias.targets)
    return None


@run
async def add_alias(call: Call) -> Any:
    body = _body(call)
    source = _alias_source(body.get("source", ""))
    raw = body.get("targets")
    if not isinstance(raw, list) or not raw:
        raise Problem(400, "Invalid targets", "targets is a non-empty list of addresses")
    targets = list(dict.fromkeys(canonical_address(t, "target") for t in raw))
    if source in targets:
        raise Problem(400, "Invalid targets", f"alias {source} may not point at itself")
    await require(call, MANAGE_ALIASES, source, ADMIN_ACTION, "alias.add")
    directory = call.context.directory
    _require_domain(call, source.rpartition("@")[2])
    if directory.get_user(source) is not None:
        raise Problem(409, "Address is a user", f"{source} is a user; an alias would never be used")
    existing = _find_alias(call, source)
    if existing is not None:
        raise Problem(409, "Alias exists", f"alias {source} exists already (-> "
                      f"{', '.join(existing)}); delete it first")
    unknown = [t for t in targets
               if directory.has_domain(t.rpartition("@")[2]) and not directory.resolve(t)]
    alias = await directory.add_alias(source, targets)
    await audit(call, ADMIN_ACTION, "ok", action="alias.add", target=source, targets=targets)
    body_out: dict[str, Any] = {"source": alias.source, "targets": list(alias.targets)}
    if unknown:
        body_out["warnings"] = [f"{t} is not a user or alias here yet" for t in unknown]
    return Response(201, body_out, headers={"Location": f"/api/v1/admin/aliases/{source}"})


@run
async def delete_alias(call: Call) -> Any:
    source = _alias_source(call.params["source"])
    await require(call, MANAGE_ALIASES, source, ADMIN_ACTION, "alias.delete")
    if _find_alias(call, source) is None:
        raise Problem(404, "No such alias", f"no alias {source}")
    await call.context.directory.remove_alias(source)
    await audit(call, ADMIN_ACTION, "ok", action="alias.delete", target=source)
    return Response(204)


# -- routes --------------------------------------------------------------------------------

_TAG = "admin"


def _route(method: str, pattern: str, handler: Callable[[Call], Any], summary: str,
           **more: Any) -> Route:
    return Route(method, pattern, handler, summary, tag=_TAG, **more)


_LIMIT = {"type": "integer", "minimum": 1}
_STR = {"type": "string"}

ROUTES: list[Route] = [
    _route("GET", "/admin/domains", list_domains, "List the served domains (admins)"),
    _route("POST", "/admin/domains", add_domain, "Serve a domain (admins)", status=201,
           body={"type": "object", "required": ["name"], "properties": {"name": _STR}}),
    _route("DELETE", "/admin/domains/{domain}", delete_domain,
           "Stop serving a domain without users or aliases (admins)", status=204),
    _route("GET", "/admin/users", list_users,
           "List users (of ?domain=, or of the caller's domains)", query={"domain": _STR}),
    _route("POST", "/admin/users", add_user, "Create a user and their mailbox", status=201,
           body={"type": "object", "required": ["address", "password"],
                 "properties": {"address": _STR, "password": _STR,
                                "quota_bytes": {"type": "integer", "minimum": -1}}}),
    _route("DELETE", "/admin/users/{address}", delete_user,
           "Delete a user, their credentials and (unless keep_mail) their mail", status=204,
           query={"keep_mail": {"type": "boolean"}}),
    _route("PATCH", "/admin/users/{address}", patch_user,
           "Change a user's password, quota or (admins) roles",
           body={"type": "object",
                 "properties": {"password": _STR,
                                "quota_bytes": {"type": "integer", "minimum": -1},
                                "roles": {"type": "array", "items": _STR},
                                "admin_domains": {"type": "array", "items": _STR}}}),
    _route("GET", "/admin/users/{address}/quota", get_quota,
           "A user's quota usage and limits (RFC 9208 STORAGE and MESSAGE)"),
    _route("GET", "/admin/aliases", list_aliases,
           "List aliases (of ?domain=, or of the caller's domains)", query={"domain": _STR}),
    _route("POST", "/admin/aliases", add_alias, "Create an alias", status=201,
           body={"type": "object", "required": ["source", "targets"],
                 "properties": {"source": _STR,
                                "targets": {"type": "array", "items": _STR, "minItems": 1}}}),
    _route("DELETE", "/admin/aliases/{source}", delete_alias, "Delete an alias", status=204),
    _route("GET", "/admin/audit", list_audit, "Audit records, newest first",
           query={"limit": _LIMIT, "user": _STR, "event": _STR, "before": {"type": "number"}}),
]
