"""IUserDirectory: users, domains and aliases, with one set of rules and two backends.

:class:`DirectoryRules` holds every rule (validation, subaddressing, alias expansion,
catch-alls, timing-safe password checks) over three small tables; :class:`LmdbDirectory`
keeps the tables in the shared LMDB index and :class:`mailserver.testing.MemoryDirectory` in
dicts, and both pass the same contract tests.

Addresses are looked up case-insensitively: the domain per RFC 5321 §2.4, and the local part
too, as nearly every deployed server does (the user's spelling is kept for display).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

from mailserver.auth.passwords import hash_password, verify_password
from mailserver.db import Database, Snapshot, Txn
from mailserver.db.env import current_generation
from mailserver.db.schema import load
from mailserver.errors import (
    AlreadyExists,
    InvalidName,
    MailError,
    NoSuchDomain,
    NoSuchUser,
)
from mailserver.interfaces import IUserDirectory
from mailserver.message.address import normalize_domain, parse_address, split_subaddress
from mailserver.types import Alias, Domain, Role, User

#: Alias chains deeper than this are cut (loops are cut earlier by a visited set).
MAX_ALIAS_DEPTH = 10
SUBADDRESS_SEPARATOR = "+"


def canonical_domain(name: str) -> str:
    try:
        return normalize_domain(name.strip())
    except ValueError as e:
        raise InvalidName(f"invalid domain: {e}") from None


def canonical_address(address: str) -> str:
    """``local@domain`` lower-cased, validated; InvalidName on bad syntax."""
    try:
        parsed = parse_address(address.strip())
    except ValueError as e:
        raise InvalidName(f"invalid address: {e}") from None
    return f"{parsed.local}@{parsed.domain}".lower()


def deferred(function: Callable[..., Deferred[Any]]) -> Callable[..., Deferred[Any]]:
    """Report a validation error raised before the first Deferred as a failed Deferred, so
    every mutating method fails the same way."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Deferred[Any]:
        return maybeDeferred(function, *args, **kwargs)

    return wrapper


def _user_to_json(user: User) -> dict[str, Any]:
    return {
        "address": user.address,
        "password_hash": user.password_hash,
        "roles": sorted(r.value for r in user.roles),
        "created": user.created,
        "quota_bytes": user.quota_bytes,
        "display_name": user.display_name,
        "admin_domains": sorted(user.admin_domains),
        "pop3_leave_on_server": user.pop3_leave_on_server,
    }


def _user_from_json(raw: dict[str, Any]) -> User:
    return User(
        address=raw["address"],
        password_hash=raw["password_hash"],
        roles=frozenset(Role(r) for r in raw.get("roles", ["user"])),
        created=raw.get("created", 0.0),
        quota_bytes=raw.get("quota_bytes", 0),
        display_name=raw.get("display_name", ""),
        admin_domains=frozenset(raw.get("admin_domains", ())),
        pop3_leave_on_server=raw.get("pop3_leave_on_server"),
    )


@implementer(IUserDirectory)
class DirectoryRules:
    """The directory's behaviour over abstract tables (``domains``, ``users``, ``aliases``):
    subclasses provide :meth:`_get`, :meth:`_scan` and :meth:`_apply`."""

    def __init__(self, reactor: Any, bcrypt_cost: int = 12) -> None:
        self._reactor = reactor
        self.bcrypt_cost = bcrypt_cost

    # -- storage primitives -------------------------------------------------------------

    def _get(self, table: str, key: str) -> Any:
        raise NotImplementedError

    def _scan(self, table: str, prefix: str = "") -> Iterator[tuple[str, Any]]:
        raise NotImplementedError

    def _apply(self, changes: list[tuple[str, str, Any]], check: Any = None) -> Deferred[Any]:
        """Apply (table, key, value-or-None) changes atomically after ``check(get)`` (run in
        the same transaction) passes; None deletes."""
        raise NotImplementedError

    def _in_thread(self, function: Any, *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), function, *args)

    # -- domains ------------------------------------------------------------------------

    @deferred
    def add_domain(self, name: str) -> Deferred[Domain]:
        domain = Domain(canonical_domain(name), time.time())

        def check(get: Any) -> None:
            if get("domains", domain.name) is not None:
                raise AlreadyExists(f"domain {domain.name} exists already")

        d = self._apply([("domains", domain.name, {"created": domain.created})], check)
        return d.addCallback(lambda _: domain)

    @deferred
    def remove_domain(self, name: str) -> Deferred[None]:
        name = canonical_domain(name)
        if self._get("domains", name) is None:
            raise NoSuchDomain(f"domain {name} is not served here")
        left = [a for a, _ in self._scan("users") if a.endswith("@" + name)]
        left += [s for s, _ in self._scan("aliases") if s.endswith("@" + name)]
        if left:
            raise MailError(
                f"domain {name} still has {len(left)} users/aliases: delete them first",
            )
        return self._apply([("domains", name, None)])

    def domains(self) -> list[Domain]:
        return [Domain(name, raw.get("created", 0.0)) for name, raw in self._scan("domains")]

    def has_domain(self, name: str) -> bool:
        try:
            return self._get("domains", canonical_domain(name)) is not None
        except InvalidName:
            return False

    # -- users --------------------------------------------------------------------------

    def _served(self, address: str) -> None:
        domain = address.rpartition("@")[2]
        if not self.has_domain(domain):
            raise NoSuchDomain(f"domain {domain} is not served here: add it first")

    @inlineCallbacks
    def add_user(self, address: str, password: str, roles: Iterable[Role] | None = None) -> Any:
        key = canonical_address(address)
        self._served(key)
        if not password:
            raise InvalidName("the password may not be empty")
        if self._get("users", key) is not None:
            raise AlreadyExists(f"user {key} exists already")
        hashed = yield self._in_thread(hash_password, password, self.bcrypt_cost)
        user = User(
            address=key,
            password_hash=hashed,
            roles=frozenset(roles or (Role.USER,)),
            created=time.time(),
        )

        def check(get: Any) -> None:
            if get("users", key) is not None:
                raise AlreadyExists(f"user {key} exists already")

        yield self._apply([("users", key, _user_to_json(user))], check)
        return user

    @inlineCallbacks
    def set_password(self, address: str, password: str) -> Any:
        user = self.get_user(address)
        if user is None:
            raise NoSuchUser(f"no user {address}")
        if not password:
            raise InvalidName("the password may not be empty")
        hashed = yield self._in_thread(hash_password, password, self.bcrypt_cost)
        raw = _user_to_json(user)
        raw["password_hash"] = hashed
        yield self._apply([("users", user.address, raw)])

    @deferred
    def set_roles(
        self, address: str, roles: Iterable[Role], admin_domains: Iterable[str] = ()
    ) -> Deferred[User]:
        user = self.get_user(address)
        if user is None:
            raise NoSuchUser(f"no user {address}")
        wanted = frozenset(roles) or frozenset({Role.USER})
        domains = frozenset(canonical_domain(d) for d in admin_domains)
        if domains and Role.DOMAIN_ADMIN not in wanted:
            raise InvalidName("admin domains are only for the domain-admin role")
        if Role.DOMAIN_ADMIN in wanted and not domains:
            raise InvalidName("a domain admin needs at least one domain to administer")
        for domain in domains:
            if not self.has_domain(domain):
                raise NoSuchDomain(f"domain {domain} is not served here: add it first")
        raw = _user_to_json(user)
        raw["roles"] = sorted(r.value for r in wanted)
        raw["admin_domains"] = sorted(domains)
        d = self._apply([("users", user.address, raw)])
        return d.addCallback(lambda _: _user_from_json(raw))

    @deferred
    def set_quota(self, address: str, quota_bytes: int) -> Deferred[User]:
        user = self.get_user(address)
        if user is None:
            raise NoSuchUser(f"no user {address}")
        raw = _user_to_json(user)
        raw["quota_bytes"] = int(quota_bytes)
        d = self._apply([("users", user.address, raw)])
        return d.addCallback(lambda _: _user_from_json(raw))

    @deferred
    def set_pop3_leave_on_server(self, address: str, leave: bool | None) -> Deferred[User]:
        user = self.get_user(address)
        if user is None:
            raise NoSuchUser(f"no user {address}")
        raw = _user_to_json(user)
        raw["pop3_leave_on_server"] = None if leave is None else bool(leave)
        d = self._apply([("users", user.address, raw)])
        return d.addCallback(lambda _: _user_from_json(raw))

    @deferred
    def remove_user(self, address: str) -> Deferred[None]:
        user = self.get_user(address)
        if user is None:
            raise NoSuchUser(f"no user {address}")
        return self._apply([("users", user.address, None)])

    def get_user(self, address: str) -> User | None:
        try:
            raw = self._get("users", canonical_address(address))
        except InvalidName:
            return None
        return None if raw is None else _user_from_json(raw)

    def users(self, domain: str | None = None) -> list[User]:
        suffix = None if domain is None else "@" + canonical_domain(domain)
        return [
            _user_from_json(raw)
            for key, raw in self._scan("users")
            if suffix is None or key.endswith(suffix)
        ]

    def check_password(self, address: str, password: str) -> Deferred[bool]:
        user = self.get_user(address)
        stored = None if user is None else user.password_hash
        return self._in_thread(verify_password, password, stored, self.bcrypt_cost)

    # -- aliases ------------------------------------------------------------------------

    def _alias_source(self, source: str) -> str:
        source = source.strip()
        if source.startswith("@"):
            return "@" + canonical_domain(source[1:])
        return canonical_address(source)

    @deferred
    def add_alias(self, source: str, targets: Iterable[str]) -> Deferred[Alias]:
        key = self._alias_source(source)
        self._served(key)
        wanted = tuple(dict.fromkeys(canonical_address(t) for t in targets))
        if not wanted:
            raise InvalidName("an alias needs at least one target")
        if key in wanted:
            raise InvalidName("an alias may not point at itself")
        alias = Alias(key, wanted)
        return self._apply([("aliases", key, list(wanted))]).addCallback(lambda _: alias)

    @deferred
    def remove_alias(self, source: str) -> Deferred[None]:
        key = self._alias_source(source)
        if self._get("aliases", key) is None:
            raise MailError(f"no alias {key}")
        return self._apply([("aliases", key, None)])

    def aliases(self, domain: str | None = None) -> list[Alias]:
        suffix = None if domain is None else "@" + canonical_domain(domain)
        return [
            Alias(key, tuple(targets))
            for key, targets in self._scan("aliases")
            if suffix is None or key.endswith(suffix)
        ]

    def resolve(self, address: str) -> list[str]:
        try:
            key = canonical_address(address)
        except InvalidName:
            return []
        found: dict[str, None] = {}
        self._expand(key, found, set(), 0)
        return list(found)

    def _expand(self, key: str, found: dict[str, None], seen: set[str], depth: int) -> None:
        if key in seen or depth > MAX_ALIAS_DEPTH:
            return
        seen.add(key)
        local, _, domain = key.rpartition("@")
        if not self.has_domain(domain):
            found[key] = None  # a remote target: the router forwards it
            return
        if self._get("users", key) is not None:
            found[key] = None
            return
        targets = self._get("aliases", key)
        if targets is None:
            base, tag = split_subaddress(local, SUBADDRESS_SEPARATOR)
            if tag is not None:
                self._expand(f"{base}@{domain}", found, seen, depth + 1)
                return
            targets = self._get("aliases", "@" + domain)  # the catch-all comes last
        for target in targets or ():
            self._expand(target, found, seen, depth + 1)


#: Look-ups a directory keeps per process before it starts afresh.
MEMO_SIZE = 10_000


class LmdbDirectory(DirectoryRules):
    """The directory in the shared LMDB index (tables ``domains``, ``users``, ``aliases``).

    :meth:`resolve`, :meth:`has_domain` and :meth:`get_user`, the look-ups every SMTP RCPT
    and delivery makes, are kept per process, each with the index's directory generation
    (:func:`mailserver.db.env.generation`) read *before* it was computed; an answer is used
    again only while the generation is unchanged. Every write to the three tables, from
    this process or another (the CLI), changes the generation in the same commit, so a
    kept answer is never older than the latest commit its look-up could see: a deleted
    user or domain is refused at once."""

    def __init__(self, db: Database | Snapshot, reactor: Any, bcrypt_cost: int = 12) -> None:
        super().__init__(reactor, bcrypt_cost)
        self.db = db
        self._memo: dict[tuple[str, str], tuple[bytes | None, Any]] = {}

    def _kept(self, kind: str, key: str, compute: Callable[[str], Any]) -> Any:
        """``compute(key)``, or its earlier answer while the generation is unchanged."""
        now = current_generation(self.db)
        hit = self._memo.get((kind, key))
        if hit is not None and hit[0] == now:
            return hit[1]
        value = compute(key)
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()
        self._memo[(kind, key)] = (now, value)
        return value

    def resolve(self, address: str) -> list[str]:
        return list(self._kept("resolve", address, super().resolve))

    def has_domain(self, name: str) -> bool:
        return bool(self._kept("domain", name, super().has_domain))

    def get_user(self, address: str) -> User | None:
        user: User | None = self._kept("user", address, super().get_user)
        return user

    def _get(self, table: str, key: str) -> Any:
        with self.db.read() as txn:
            return txn.get_json(table.encode(), key.encode())

    def _scan(self, table: str, prefix: str = "") -> Iterator[tuple[str, Any]]:
        with self.db.read() as txn:
            rows = [(k.decode(), load(v)) for k, v in txn.prefix(table.encode(), prefix.encode())]
        return iter(rows)

    def _apply(self, changes: list[tuple[str, str, Any]], check: Any = None) -> Deferred[Any]:
        def op(txn: Txn) -> None:
            if check is not None:
                check(lambda table, key: txn.get_json(table.encode(), key.encode()))
            for table, key, value in changes:
                if value is None:
                    txn.delete(table.encode(), key.encode())
                else:
                    txn.put_json(table.encode(), key.encode(), value)

        return self.db.write(op)
