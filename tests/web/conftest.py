"""The API on a real twisted.web Site on 127.0.0.1, over real storage, for the web tests.

Fixtures:

``api`` (an :class:`ApiServer`): the whole API (``collect_routes()``) over the ``storage``
fixture's LMDB index, directory and maildir store, a real CredentialStore, login Throttle
and AuditLog (built as service.py's ``_security`` does), with rate limits high enough not
to get in the way. Use it as::

    async def test_something(api):
        await api.add_user("alice@example.test", "pw-alice")          # domain added as needed
        token = await api.login("alice@example.test", "pw-alice")
        reply = await api.call("GET", "/me", token=token)              # -> Reply
        assert reply.status == 200 and reply.json["address"] == "alice@example.test"
        raw = await treq.get(api.url("/me"), headers=api.bearer(token), pool=api.pool)

``api.url(path)`` is the absolute URL of ``/api/v1`` + path; ``api.storage`` the Storage
(``.db``, ``.directory``, ``.store``); ``api.context`` the ApiContext (set ``spool``,
``submit``, ``feedback``... on it in a test, or pass them to ``api_server``);
``api.credentials``, ``api.throttle``, ``api.audit`` the security parts.

``api_server`` is the factory behind it: ``await api_server(routes=..., rate=...,
ip_rate=..., ip_burst=..., max_body=..., access_ttl=..., throttle_policy=ThrottlePolicy(...),
**context_attributes)`` starts another server over the same storage (e.g. with a small rate
limit, or a spool).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from mailserver.auth.audit import AuditLog
from mailserver.auth.checkers import MailLogin, PasswordChecker
from mailserver.auth.credentials import CredentialStore
from mailserver.auth.guard import GuardedChecker
from mailserver.auth.roles import Action, Actor, Forbidden, require
from mailserver.auth.throttle import Throttle, ThrottlePolicy
from mailserver.errors import AlreadyExists
from mailserver.types import Role
from mailserver.web.api import ApiContext, api_resource


@dataclass
class Reply:
    """One HTTP reply: status, headers (lower-case names, first value), body, parsed JSON."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def make_context(
    storage: Any, tmp_path: Path, throttle_policy: ThrottlePolicy | None = None, **attributes: Any
) -> ApiContext:
    """An ApiContext over ``storage`` wired as service.py wires it."""
    credentials = CredentialStore(storage.db, reactor, secrets.token_bytes(32), issuer="mx.test")
    throttle = Throttle(reactor, throttle_policy)
    audit = AuditLog(str(tmp_path / "audit.log"), clock=reactor)
    directory = storage.directory
    checker = GuardedChecker(PasswordChecker(directory, credentials), throttle, audit)

    def authenticate(user: str, password: str, *, ip: str = "", otp: str | None = None) -> Any:
        login = MailLogin(user.encode("utf-8"), password.encode("utf-8"), "api", ip, otp)
        return checker.requestAvatarId(login)

    def authorize(user: str, action: str, target: str | None = None) -> None:
        record = directory.get_user(user)
        if record is None:
            raise Forbidden(f"{user} no longer exists")
        require(Actor.of(record), Action(action), target)

    context = ApiContext(
        reactor=reactor,
        credentials=credentials,
        directory=directory,
        authenticate=authenticate,
        authorize=authorize,
        store=storage.store,
        audit=audit,
    )
    context.throttle = throttle  # type: ignore[attr-defined]  # for tests only
    for name, value in attributes.items():
        setattr(context, name, value)
    return context


class ApiServer:
    """A listening Site with the API at ``/api/v1``; see the module docstring."""

    def __init__(self, storage: Any, context: ApiContext, **options: Any) -> None:
        self.storage = storage
        self.context = context
        self.credentials = context.credentials
        self.throttle = getattr(context, "throttle", None)
        self.audit = context.audit
        root = Resource()
        api = Resource()
        api.putChild(b"v1", api_resource(context, **options))
        root.putChild(b"api", api)
        site = Site(root)
        site.displayTracebacks = False
        site.noisy = False
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    def url(self, path: str) -> str:
        """The absolute URL of ``/api/v1`` + ``path``."""
        return f"http://127.0.0.1:{self.port.getHost().port}/api/v1{path}"

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def add_user(
        self, address: str, password: str, roles: Any = None, admin_domains: Any = ()
    ) -> None:
        """A user (its domain added first when needed), with ``roles`` (Role values or
        names) and the domains a domain admin manages."""
        directory = self.storage.directory
        domain = address.rpartition("@")[2]
        if not directory.has_domain(domain):
            try:
                await directory.add_domain(domain)
            except AlreadyExists:
                pass
        wanted = [Role(r) if isinstance(r, str) else r for r in (roles or [Role.USER])]
        await directory.add_user(address, password, wanted)
        if admin_domains:
            await directory.set_roles(address, wanted, admin_domains)

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json_body: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """Send one request; ``json_body`` is sent as JSON, ``data`` as it is."""
        sent = dict(headers or {})
        if token is not None:
            sent.update(self.bearer(token))
        body = data
        if json_body is not None:
            body = json.dumps(json_body).encode("utf-8")
            sent.setdefault("Content-Type", "application/json")
        response = await treq.request(
            method, self.url(path), headers=sent, data=body, pool=self.pool
        )
        content = await response.content()
        names = {
            k.decode("latin-1").lower(): v[0].decode("latin-1")
            for k, v in response.headers.getAllRawHeaders()
        }
        return Reply(response.code, names, content)

    async def login(self, address: str, password: str, totp: str | None = None) -> str:
        """An access token for the account (AssertionError when the log-in fails)."""
        body = {"username": address, "password": password}
        if totp is not None:
            body["totp"] = totp
        reply = await self.call("POST", "/auth/login", json_body=body)
        assert reply.status == 200, reply.body
        return str(reply.json["access_token"])

    async def aclose(self) -> None:
        await self.port.stopListening()
        await self.pool.closeCachedConnections()


@pytest.fixture
def api_server(storage, tmp_path):
    """A factory: ``await api_server(**options_and_context_attributes)`` -> ApiServer."""
    servers: list[ApiServer] = []
    option_names = {
        "routes", "rate", "burst", "ip_rate", "ip_burst", "max_body", "access_ttl",
        "refresh_ttl", "max_clients",
    }
    # make_context's own keyword (throttle_policy) passes through with the attributes.

    async def start(**kwargs: Any) -> ApiServer:
        options = {"rate": None, "ip_rate": None}
        options.update({k: v for k, v in kwargs.items() if k in option_names})
        attributes = {k: v for k, v in kwargs.items() if k not in option_names}
        context = make_context(storage, tmp_path, **attributes)
        server = ApiServer(storage, context, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        pytest_twisted.blockon(ensureDeferred(server.aclose()))
        if server.audit is not None:
            server.audit.close()


@pytest.fixture
def api(api_server):
    """The API with default routes and no rate limits (see the module docstring)."""
    return pytest_twisted.blockon(ensureDeferred(api_server()))
