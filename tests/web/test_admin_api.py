"""The admin endpoints (mailserver/web/api/admin.py and the queue routes of tracking.py),
called as the app calls them (a Call per request) over a real data directory: an admin, a
domain admin of example.org and a plain user; every change audited, every refusal a 403."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred

from mailserver.auth import audit as audit_log
from mailserver.auth.audit import AuditLog
from mailserver.auth.credentials import CredentialStore
from mailserver.auth.roles import Action, Actor, Forbidden, require
from mailserver.errors import MailError
from mailserver.spool.queue import LmdbSpool
from mailserver.store.quota import QuotaRules
from mailserver.types import Address, Envelope, Role
from mailserver.web.api import admin, tracking
from mailserver.web.api.app import collect_routes, problem_for
from mailserver.web.api.context import ApiContext
from mailserver.web.api.routing import Call, Problem, Response, Route

ADMIN = "root@example.org"
DOMAIN_ADMIN = "boss@example.org"
USER = "alice@example.org"
OTHER_ADMIN = "chief@other.test"
MESSAGE = b"From: a@example.org\r\nMessage-ID: <q1@example.org>\r\nSubject: out\r\n\r\nbody\r\n"


class Env:
    """A data directory with three callers, a spool and an audit log, plus a way to call
    routes as the app does."""

    def __init__(self, storage: Any, tmp_path: Path) -> None:
        self.storage = storage
        self.directory = storage.directory
        self.audit = AuditLog(str(tmp_path / "audit" / "audit.jsonl"))
        self.spool = LmdbSpool(storage.db, str(tmp_path / "spool"), reactor, fsync=False)
        self.credentials = CredentialStore(storage.db, reactor, b"k" * 32)
        self.context = ApiContext(
            reactor=reactor,
            credentials=self.credentials,
            directory=self.directory,
            authenticate=lambda *a, **k: Deferred(),
            authorize=self.authorize,
            store=storage.store,
            audit=self.audit,
            spool=self.spool,
        )
        self.routes = {(r.method, r.pattern): r for r in admin.ROUTES + tracking.ROUTES}

    def authorize(self, user: str, action: str, target: str | None) -> None:
        found = self.directory.get_user(user)
        if found is None:
            raise Forbidden(f"no user {user}")
        require(Actor.of(found), Action(action), target)

    async def call(self, method: str, pattern: str, user: str, *, params: dict | None = None,
                   query: dict | None = None, json: Any = None) -> tuple[int, Any]:
        """(status, body) as the app would send them; a Problem as (status, document)."""
        route: Route = self.routes[(method, pattern)]
        call = Call(None, self.context, user, frozenset({"api"}), dict(params or {}),
                    {k: [v] for k, v in (query or {}).items()}, json, "192.0.2.7")
        try:
            result = route.handler(call)
            if isinstance(result, Deferred):
                result = await result
        except Problem as problem:
            return problem.status, problem.document()
        except MailError as error:
            problem = problem_for(error)
            return problem.status, problem.document()
        if isinstance(result, Response):
            return result.status, result.body
        return route.status, result

    def records(self) -> list[Any]:
        return list(audit_log.read(self.audit.path))


@pytest.fixture
def env(storage, tmp_path):
    e = Env(storage, tmp_path)
    d = storage.directory
    # as service.open_storage wires it: the user's own quota_bytes over the default
    storage.store.quota_rules = QuotaRules(
        override=lambda address: getattr(d.get_user(address), "quota_bytes", 0))
    for name in ("example.org", "other.test"):
        pytest_twisted.blockon(d.add_domain(name))
    for address, role in ((ADMIN, Role.ADMIN), (DOMAIN_ADMIN, Role.USER), (USER, Role.USER),
                          (OTHER_ADMIN, Role.USER)):
        pytest_twisted.blockon(d.add_user(address, "secret", [role]))
        pytest_twisted.blockon(storage.store.create_account(address))
    pytest_twisted.blockon(d.set_roles(DOMAIN_ADMIN, [Role.DOMAIN_ADMIN], ["example.org"]))
    pytest_twisted.blockon(d.set_roles(OTHER_ADMIN, [Role.DOMAIN_ADMIN], ["other.test"]))
    yield e
    e.audit.close()


def test_every_route_is_tagged_admin_and_unique():
    """The admin routes are in the OpenAPI tag "admin" and no method+path repeats."""
    routes = admin.ROUTES + tracking.ROUTES
    assert {r.tag for r in routes} == {"admin"}
    assert len({(r.method, r.pattern) for r in routes}) == len(routes)


# -- domains ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_admin_adds_lists_and_deletes_a_domain_audited(env):
    """POST 201, listed by GET, DELETE 204; both changes audited with who and the IP."""
    status, body = await env.call("POST", "/admin/domains", ADMIN, json={"name": "New.Test"})
    assert (status, body["name"]) == (201, "new.test")
    status, body = await env.call("GET", "/admin/domains", ADMIN)
    assert status == 200 and "new.test" in [d["name"] for d in body["domains"]]
    status, _ = await env.call("DELETE", "/admin/domains/{domain}", ADMIN,
                               params={"domain": "new.test"})
    assert status == 204 and not env.directory.has_domain("new.test")
    lines = [(r.event, r.who, r.where, r.outcome, r.details["action"], r.details["target"])
             for r in env.records()]
    assert lines == [
        ("admin_action", ADMIN, "192.0.2.7", "ok", "domain.add", "new.test"),
        ("admin_action", ADMIN, "192.0.2.7", "ok", "domain.delete", "new.test"),
    ]


@pytest_twisted.ensureDeferred
async def test_domain_conflicts_are_409_and_unknown_404(env):
    """A domain twice is 409; a domain with users left is 409 naming them; unknown 404."""
    status, body = await env.call("POST", "/admin/domains", ADMIN, json={"name": "example.org"})
    assert status == 409
    status, body = await env.call("DELETE", "/admin/domains/{domain}", ADMIN,
                                  params={"domain": "example.org"})
    assert status == 409 and USER in body["remaining"]
    status, _ = await env.call("DELETE", "/admin/domains/{domain}", ADMIN,
                               params={"domain": "nowhere.test"})
    assert status == 404
    status, _ = await env.call("POST", "/admin/domains", ADMIN, json={"name": "bad..name"})
    assert status == 400


@pytest_twisted.ensureDeferred
async def test_domains_are_for_admins_only_and_refusals_audited(env):
    """A domain admin and a user get 403 naming the action; the refused change is audited."""
    for who in (DOMAIN_ADMIN, USER):
        status, body = await env.call("GET", "/admin/domains", who)
        assert status == 403 and "manage-domains" in body["detail"]
        status, body = await env.call("POST", "/admin/domains", who, json={"name": "x.test"})
        assert status == 403 and "manage-domains" in body["detail"]
    assert not env.directory.has_domain("x.test")
    refused = [(r.who, r.outcome, r.details["action"]) for r in env.records()]
    assert refused == [(DOMAIN_ADMIN, "refused", "domain.add"), (USER, "refused", "domain.add")]


# -- users --------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_domain_admin_creates_a_user_with_a_mailbox_in_their_domain(env):
    """POST /admin/users makes the directory user and the store account (as `user add`)."""
    status, body = await env.call("POST", "/admin/users", DOMAIN_ADMIN, json={
        "address": "Bob@Example.org", "password": "Sekr1t-value", "quota_bytes": 1 << 20})
    assert status == 201
    assert body == {"address": "bob@example.org", "roles": ["user"], "admin_domains": [],
                    "quota_bytes": 1 << 20, "created": body["created"], "display_name": ""}
    assert env.storage.store.has_account("bob@example.org")
    assert await env.directory.check_password("bob@example.org", "Sekr1t-value")
    assert "Sekr1t-value" not in Path(env.audit.path).read_text()
    record = env.records()[-1]
    assert (record.who, record.details["action"], record.details["target"]) == (
        DOMAIN_ADMIN, "user.add", "bob@example.org")


@pytest_twisted.ensureDeferred
async def test_domain_admin_outside_their_domain_is_refused(env):
    """Creating, changing, deleting or listing users of another domain is 403."""
    status, body = await env.call("POST", "/admin/users", DOMAIN_ADMIN,
                                  json={"address": "x@other.test", "password": "pw"})
    assert status == 403 and "manage-users on x@other.test" in body["detail"]
    assert env.directory.get_user("x@other.test") is None
    status, _ = await env.call("DELETE", "/admin/users/{address}", DOMAIN_ADMIN,
                               params={"address": OTHER_ADMIN})
    assert status == 403 and env.directory.get_user(OTHER_ADMIN) is not None
    status, _ = await env.call("GET", "/admin/users", DOMAIN_ADMIN, query={"domain": "other.test"})
    assert status == 403
    status, _ = await env.call("GET", "/admin/users/{address}/quota", DOMAIN_ADMIN,
                               params={"address": OTHER_ADMIN})
    assert status == 403


@pytest_twisted.ensureDeferred
async def test_user_listing_is_scoped(env):
    """An admin sees everyone; a domain admin without ?domain= their domains; a user nothing."""
    _, body = await env.call("GET", "/admin/users", ADMIN)
    assert [u["address"] for u in body["users"]] == sorted([ADMIN, DOMAIN_ADMIN, USER, OTHER_ADMIN])
    _, body = await env.call("GET", "/admin/users", DOMAIN_ADMIN)
    assert [u["address"] for u in body["users"]] == sorted([ADMIN, DOMAIN_ADMIN, USER])
    assert all("password_hash" not in u for u in body["users"])
    status, _ = await env.call("GET", "/admin/users", USER)
    assert status == 403


@pytest_twisted.ensureDeferred
async def test_patch_password_and_quota_audited_without_the_secret(env):
    """A domain admin resets a user's password and quota; the audit line has no password."""
    status, body = await env.call("PATCH", "/admin/users/{address}", DOMAIN_ADMIN,
                                  params={"address": USER},
                                  json={"password": "n3w-pass", "quota_bytes": 5000})
    assert status == 200 and body["quota_bytes"] == 5000
    assert await env.directory.check_password(USER, "n3w-pass")
    events = [(r.event, r.details.get("target")) for r in env.records()]
    assert events == [("password_changed", USER), ("admin_action", USER)]
    assert "n3w-pass" not in Path(env.audit.path).read_text()


@pytest_twisted.ensureDeferred
async def test_no_escalation_through_patch(env):
    """Roles are admins' business; a domain admin cannot touch an admin's account or
    their own roles; a user cannot use admin routes at all. Nothing changes on refusal."""
    attempts = [
        (DOMAIN_ADMIN, USER, {"roles": ["admin"]}, "manage-domains"),
        (DOMAIN_ADMIN, DOMAIN_ADMIN, {"roles": ["admin"]}, "manage-domains"),
        (DOMAIN_ADMIN, ADMIN, {"password": "pwned"}, "as much power"),
        (USER, USER, {"quota_bytes": -1}, "manage-users"),
        (USER, USER, {"roles": ["admin"]}, "manage-users"),
    ]
    for who, target, change, why in attempts:
        status, body = await env.call("PATCH", "/admin/users/{address}", who,
                                      params={"address": target}, json=change)
        assert status == 403 and why in body["detail"], (who, target, change)
    assert env.directory.get_user(USER).roles == frozenset({Role.USER})
    assert env.directory.get_user(DOMAIN_ADMIN).roles == frozenset({Role.DOMAIN_ADMIN})
    assert await env.directory.check_password(ADMIN, "secret")
    assert env.directory.get_user(USER).quota_bytes == 0
    assert {r.outcome for r in env.records()} == {"refused"}


@pytest_twisted.ensureDeferred
async def test_a_password_and_a_forbidden_role_change_nothing(env):
    """Everything is checked before anything is changed."""
    status, _ = await env.call("PATCH", "/admin/users/{address}", DOMAIN_ADMIN,
                               params={"address": USER},
                               json={"password": "other", "roles": ["admin"]})
    assert status == 403 and await env.directory.check_password(USER, "secret")


@pytest_twisted.ensureDeferred
async def test_admin_sets_roles(env):
    """An admin makes a user domain admin of example.org; bad role shapes are 400."""
    status, body = await env.call("PATCH", "/admin/users/{address}", ADMIN,
                                  params={"address": USER},
                                  json={"roles": ["domain-admin"],
                                        "admin_domains": ["example.org"]})
    assert status == 200 and body["roles"] == ["domain-admin"]
    assert body["admin_domains"] == ["example.org"]
    record = env.records()[-1]
    assert record.details["roles"] == ["domain-admin"] and record.who == ADMIN
    status, body = await env.call("PATCH", "/admin/users/{address}", ADMIN,
                                  params={"address": ADMIN}, json={"roles": ["user"]})
    assert status == 409 and env.directory.get_user(ADMIN).roles == frozenset({Role.ADMIN})
    for bad in ({"roles": ["domain-admin"]}, {"roles": ["king"]},
                {"roles": ["user"], "admin_domains": ["example.org"]}, {"nothing": 1}, {}):
        status, _ = await env.call("PATCH", "/admin/users/{address}", ADMIN,
                                   params={"address": USER}, json=bad)
        assert status == 400, bad


@pytest_twisted.ensureDeferred
async def test_delete_user_removes_mail_and_credentials(env):
    """DELETE removes the user, their app passwords and tokens, and their mailbox."""
    await env.credentials.add_app_password(USER, "phone")
    await env.credentials.issue_token(USER, {"api"}, 3600, "t")
    status, _ = await env.call("DELETE", "/admin/users/{address}", DOMAIN_ADMIN,
                               params={"address": USER})
    assert status == 204
    assert env.directory.get_user(USER) is None and not env.storage.store.has_account(USER)
    assert env.credentials.list_app_passwords(USER) == []
    assert env.credentials.list_tokens(USER) == []
    status, _ = await env.call("DELETE", "/admin/users/{address}", ADMIN, params={"address": USER})
    assert status == 404
    status, _ = await env.call("DELETE", "/admin/users/{address}", ADMIN, params={"address": ADMIN})
    assert status == 409


@pytest_twisted.ensureDeferred
async def test_user_conflicts(env):
    """An existing user or an alias address is 409, an unserved domain 404, a bad address 400."""
    await env.directory.add_alias("sales@example.org", [USER])
    cases = [("alice@example.org", 409), ("sales@example.org", 409),
             ("x@nowhere.test", 404), ("not an address", 400)]
    for address, expected in cases:
        status, _ = await env.call("POST", "/admin/users", ADMIN,
                                   json={"address": address, "password": "pw"})
        assert status == expected, address


@pytest_twisted.ensureDeferred
async def test_quota_reports_rfc9208_numbers(env):
    """Usage from the store's counters, STORAGE in KiB rounded up, limits from quota_bytes."""
    await env.directory.set_quota(USER, 10 * 1024)
    inbox = env.storage.store.account(USER).folder("INBOX")
    await inbox.append(BytesIO(b"Subject: x\r\n\r\n" + b"a" * 1500))
    status, body = await env.call("GET", "/admin/users/{address}/quota", DOMAIN_ADMIN,
                                  params={"address": USER})
    assert status == 200
    assert body["used_messages"] == 1 and body["limit_bytes"] == 10 * 1024
    assert body["resources"]["STORAGE"] == {"usage": 2, "limit": 10}
    assert body["resources"]["MESSAGE"] == {"usage": 1, "limit": None}


# -- aliases ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_aliases_within_the_domain(env):
    """A domain admin adds, lists and deletes an alias of their domain, not of another."""
    status, body = await env.call("POST", "/admin/aliases", DOMAIN_ADMIN, json={
        "source": "Sales@example.org", "targets": [USER, "ext@remote.test"]})
    assert status == 201 and body == {"source": "sales@example.org",
                                      "targets": [USER, "ext@remote.test"]}
    _, body = await env.call("GET", "/admin/aliases", DOMAIN_ADMIN)
    assert body["aliases"] == [{"source": "sales@example.org",
                                "targets": [USER, "ext@remote.test"]}]
    status, _ = await env.call("POST", "/admin/aliases", DOMAIN_ADMIN,
                               json={"source": "@other.test", "targets": [USER]})
    assert status == 403
    status, _ = await env.call("POST", "/admin/aliases", DOMAIN_ADMIN,
                               json={"source": "sales@example.org", "targets": [USER]})
    assert status == 409
    status, _ = await env.call("DELETE", "/admin/aliases/{source}", DOMAIN_ADMIN,
                               params={"source": "sales@example.org"})
    assert status == 204 and env.directory.aliases("example.org") == []
    status, _ = await env.call("DELETE", "/admin/aliases/{source}", DOMAIN_ADMIN,
                               params={"source": "sales@example.org"})
    assert status == 404
    actions = [(r.details["action"], r.outcome) for r in env.records()]
    assert actions == [("alias.add", "ok"), ("alias.add", "refused"), ("alias.delete", "ok")]


# -- queue --------------------------------------------------------------------------------


async def enqueue(spool: LmdbSpool, message: bytes = MESSAGE, sender: Address | None = None,
                  recipient: str = "x@remote.test") -> str:
    delivery = spool.start(Envelope(sender=sender or Address("a", "example.org")))
    local, domain = recipient.split("@")
    await delivery.add_recipient(Address(local, domain))
    await delivery.body(BytesIO(message))
    return await delivery.commit()


@pytest_twisted.ensureDeferred
async def test_queue_list_show_hold_retry_release_delete(env):
    """Each queue verb through ISpool, audited as queue_action; a held entry cannot be retried."""
    first = await enqueue(env.spool)
    second = await enqueue(env.spool)
    status, body = await env.call("GET", "/admin/queue", ADMIN, query={"limit": "1"})
    assert status == 200 and [e["queue_id"] for e in body["entries"]] == [first]
    assert body["next"] == first
    _, body = await env.call("GET", "/admin/queue", ADMIN, query={"after": first})
    assert [e["queue_id"] for e in body["entries"]] == [second] and body["next"] is None
    status, body = await env.call("GET", "/admin/queue/{id}", ADMIN, params={"id": first.lower()})
    assert status == 200 and body["message_id"] == "<q1@example.org>"
    assert body["recipients"][0]["state"] == "pending"
    ident = {"id": first}
    _, body = await env.call("POST", "/admin/queue/{id}/hold", ADMIN, params=ident)
    assert body["held"] and env.spool.get(first).held
    status, _ = await env.call("POST", "/admin/queue/{id}/retry", ADMIN, params=ident)
    assert status == 409
    _, body = await env.call("POST", "/admin/queue/{id}/release", ADMIN, params=ident)
    assert not body["held"]
    status, body = await env.call("POST", "/admin/queue/{id}/retry", ADMIN, params=ident)
    assert status == 200 and body["next_attempt"] <= reactor.seconds()
    status, _ = await env.call("DELETE", "/admin/queue/{id}", ADMIN, params=ident)
    assert status == 204 and env.spool.get(first) is None
    status, _ = await env.call("GET", "/admin/queue/{id}", ADMIN, params=ident)
    assert status == 404
    status, _ = await env.call("GET", "/admin/queue/{id}", ADMIN, params={"id": "xyz"})
    assert status == 400
    actions = [(r.event, r.details["action"], r.details["target"]) for r in env.records()]
    assert actions == [("queue_action", verb, first)
                       for verb in ("hold", "release", "retry", "delete")]


@pytest_twisted.ensureDeferred
async def test_queue_needs_manage_queue(env):
    """A domain admin or a user may not see or touch the queue; nothing changes."""
    queued = await enqueue(env.spool)
    for who in (DOMAIN_ADMIN, USER):
        status, body = await env.call("GET", "/admin/queue", who)
        assert status == 403 and "manage-queue" in body["detail"]
        status, _ = await env.call("DELETE", "/admin/queue/{id}", who, params={"id": queued})
        assert status == 403
    assert env.spool.get(queued) is not None


# -- audit --------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_audit_newest_first_filtered_and_paged(env):
    """GET /admin/audit: newest first, by user and event (patterns), paged by before."""
    for n in range(5):
        env.audit.record("login_ok", who=USER, where="198.51.100.1", outcome="ok", n=n)
    env.audit.record("login_failed", who=DOMAIN_ADMIN, where="198.51.100.2", outcome="failed")
    _, body = await env.call("GET", "/admin/audit", ADMIN, query={"limit": "3"})
    assert [r["event"] for r in body["records"]] == ["login_failed", "login_ok", "login_ok"]
    assert body["next_before"] is not None
    _, body = await env.call("GET", "/admin/audit", ADMIN,
                             query={"user": "ALICE@*", "event": "login_*", "limit": "2"})
    assert [r["details"]["n"] for r in body["records"]] == [4, 3]
    _, body = await env.call("GET", "/admin/audit", ADMIN,
                             query={"user": USER, "before": str(body["next_before"])})
    assert all(r["details"]["n"] < 3 for r in body["records"])
    for who in (DOMAIN_ADMIN, USER):
        status, body = await env.call("GET", "/admin/audit", who)
        assert status == 403 and "read-audit" in body["detail"]


def test_audit_reader_survives_rotation_and_bad_lines(tmp_path):
    """Rotated files are read after the current one; a torn line is skipped."""
    log = AuditLog(str(tmp_path / "a.jsonl"), max_bytes=400, keep=5)
    for n in range(12):
        log.record("admin_action", who="x", where="cli", outcome="ok", n=n)
    log.close()
    with open(tmp_path / "a.jsonl", "ab") as f:
        f.write(b'{"torn": \n')
    found = admin.read_audit(str(tmp_path / "a.jsonl"), 100, None, None, None)
    assert [r["details"]["n"] for r in found] == list(range(11, -1, -1))


# -- through HTTP -------------------------------------------------------------------------


@pytest.fixture
def http(api_server, tmp_path, storage):
    """The whole API (with tracking's routes) on a real Site, with a spool."""
    spool = LmdbSpool(storage.db, str(tmp_path / "http-spool"), reactor, fsync=False)
    routes = collect_routes()
    served = {(r.method, r.pattern) for r in routes}
    routes += [r for r in tracking.ROUTES if (r.method, r.pattern) not in served]
    return pytest_twisted.blockon(ensureDeferred(api_server(routes=routes, spool=spool)))


async def _tokens(http: Any) -> dict[str, str]:
    await http.add_user(ADMIN, "pw-root", [Role.ADMIN])
    await http.add_user(DOMAIN_ADMIN, "pw-boss", [Role.DOMAIN_ADMIN], ["example.org"])
    await http.add_user(USER, "pw-alice")
    await http.storage.directory.add_domain("other.test")
    for address in (ADMIN, DOMAIN_ADMIN, USER):
        await http.storage.store.create_account(address)
    return {who: await http.login(who, pw) for who, pw in
            ((ADMIN, "pw-root"), (DOMAIN_ADMIN, "pw-boss"), (USER, "pw-alice"))}


@pytest_twisted.ensureDeferred
async def test_http_admin_flow_with_problems_and_audit(http):
    """Over HTTP: a domain admin creates a user (201, Location), is refused outside their
    domain (403 problem+json), a missing field is the app's 422; the audit line carries the
    caller and 127.0.0.1."""
    tokens = await _tokens(http)
    reply = await http.call("POST", "/admin/users", token=tokens[DOMAIN_ADMIN],
                            json_body={"address": "bob@example.org", "password": "pw-bob"})
    assert reply.status == 201 and reply.json["address"] == "bob@example.org"
    assert reply.headers["location"].endswith("/admin/users/bob@example.org")
    assert await http.login("bob@example.org", "pw-bob")
    reply = await http.call("POST", "/admin/users", token=tokens[DOMAIN_ADMIN],
                            json_body={"address": "eve@other.test", "password": "pw"})
    assert reply.status == 403
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert "manage-users on eve@other.test" in reply.json["detail"]
    reply = await http.call("POST", "/admin/users", token=tokens[DOMAIN_ADMIN],
                            json_body={"address": "x@example.org"})
    assert reply.status == 422
    added = [r for r in audit_log.read(http.audit.path) if r.event == "admin_action"]
    assert [(r.who, r.where, r.outcome, r.details["target"]) for r in added] == [
        (DOMAIN_ADMIN, "127.0.0.1", "ok", "bob@example.org"),
        (DOMAIN_ADMIN, "127.0.0.1", "refused", "eve@other.test"),
    ]


@pytest_twisted.ensureDeferred
async def test_http_encoded_paths_and_user_refusals(http):
    """A catch-all source travels as %40domain; a plain user gets 403 on every admin route."""
    tokens = await _tokens(http)
    reply = await http.call("POST", "/admin/aliases", token=tokens[ADMIN],
                            json_body={"source": "@example.org", "targets": [USER]})
    assert reply.status == 201
    reply = await http.call("DELETE", "/admin/aliases/%40example.org", token=tokens[ADMIN])
    assert reply.status == 204 and http.storage.directory.aliases() == []
    reply = await http.call("GET", f"/admin/users/{USER}/quota", token=tokens[ADMIN])
    assert reply.status == 200 and reply.json["address"] == USER
    for method, path in (("GET", "/admin/domains"), ("GET", "/admin/users"),
                         ("GET", "/admin/aliases"), ("GET", "/admin/queue"),
                         ("GET", "/admin/audit"), ("GET", "/admin/track?message_id=%3Ca%40b%3E"),
                         ("DELETE", f"/admin/users/{DOMAIN_ADMIN}")):
        reply = await http.call(method, path, token=tokens[USER])
        assert reply.status == 403, (method, path)
    reply = await http.call("GET", "/admin/domains")
    assert reply.status == 401


@pytest_twisted.ensureDeferred
async def test_http_queue_and_tracking(http):
    """A queued message is listed, tracked by its queue id and deleted over HTTP."""
    tokens = await _tokens(http)
    queued = await enqueue(http.context.spool)
    reply = await http.call("GET", "/admin/queue", token=tokens[ADMIN])
    assert [e["queue_id"] for e in reply.json["entries"]] == [queued]
    reply = await http.call("GET", f"/admin/track?queue_id={queued}", token=tokens[ADMIN])
    assert reply.status == 200 and reply.json["message_id"] == "<q1@example.org>"
    assert reply.json["queue"]["entries"][0]["queue_id"] == queued
    reply = await http.call("POST", f"/admin/queue/{queued}/hold", token=tokens[ADMIN])
    assert reply.status == 200 and reply.json["held"]
    reply = await http.call("DELETE", f"/admin/queue/{queued}", token=tokens[ADMIN])
    assert reply.status == 204 and http.context.spool.get(queued) is None


@pytest_twisted.ensureDeferred
async def test_openapi_document_lists_the_admin_routes(http):
    """The served OpenAPI document has every admin path under the admin tag."""
    reply = await http.call("GET", "/openapi.json")
    paths = reply.json["paths"]
    for path in ("/admin/domains", "/admin/users/{address}", "/admin/users/{address}/quota",
                 "/admin/aliases/{source}", "/admin/queue/{id}/retry", "/admin/audit",
                 "/admin/track"):
        assert path in paths, path
    assert paths["/admin/track"]["get"]["tags"] == ["admin"]
