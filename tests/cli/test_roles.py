"""Roles on the command line: ``user role`` sets them, ``--as ADDRESS`` acts with them, and
every command is checked in one place (mailserver.cli.permissions, over auth.roles): a domain
admin manages only their domains' users and aliases and never an account with as much power,
a user only their own credentials; refusals are one line and audited."""

from __future__ import annotations

import json

import pytest

from mailserver.cli.main import build_parser
from mailserver.cli.permissions import RULES, handler_name
from tests.cli.conftest import ALICE, PASSWORD


@pytest.fixture
def team(example):
    """example.org (alice: domain admin of it) and other.org (carol), bob a plain user."""
    example.ok("domain", "add", "other.org")
    for user in ("bob@example.org", "carol@other.org", "root@example.org"):
        example.ok("user", "add", user, "--password-stdin", input=PASSWORD + "\n")
    assert "domain-admin (example.org)" in example.ok(
        "user", "role", ALICE, "domain-admin", "--domain", "example.org")
    example.ok("user", "role", "root@example.org", "admin")
    return example


def test_user_role_and_list(team):
    listing = team.ok("user", "list")
    assert "alice@example.org  domain-admin (example.org)" in listing
    assert "root@example.org   admin" in listing
    assert "needs" not in team.fails("user", "role", "bob@example.org", "domain-admin")
    assert "--domain" in team.fails("user", "role", "bob@example.org", "user", "--domain",
                                    "example.org")
    assert "not served" in team.fails("user", "role", ALICE, "domain-admin", "--domain",
                                      "nowhere.test")


def test_domain_admin_acts_inside_their_domains_only(team):
    as_alice = ("--as", ALICE)
    team.ok(*as_alice, "user", "add", "dave@example.org", "--password-stdin",
            input=PASSWORD + "\n")
    team.ok(*as_alice, "alias", "add", "sales@example.org", "bob@example.org")
    assert "dave@example.org" in team.ok(*as_alice, "user", "list", "example.org")
    assert "may not" in team.fails(*as_alice, "user", "add", "eve@other.org",
                                   "--password-stdin", input=PASSWORD + "\n")
    assert "may not" in team.fails(*as_alice, "user", "list")  # every domain: admins only
    assert "may not" in team.fails(*as_alice, "alias", "add", "x@other.org", "bob@example.org")
    assert "may not" in team.fails(*as_alice, "domain", "add", "new.org")
    assert "may not" in team.fails(*as_alice, "queue", "list")
    assert "may not" in team.fails(*as_alice, "audit", "tail")
    # no escalation: no admin role handed out, no admin account touched
    assert "admins only" in team.fails(*as_alice, "user", "add", "mallory@example.org",
                                       "--role", "admin", "--password-stdin",
                                       input=PASSWORD + "\n")
    assert "as much power" in team.fails(*as_alice, "user", "passwd", "root@example.org",
                                         "--password-stdin", input="x\n")
    assert "may not" in team.fails(*as_alice, "user", "role", "bob@example.org", "admin")


def test_user_manages_only_their_own_credentials(team):
    as_bob = ("--as", "bob@example.org")
    assert team.ok(*as_bob, "user", "app-password", "add", "bob@example.org", "phone").strip()
    team.ok(*as_bob, "user", "app-password", "list", "bob@example.org")
    assert "may not" in team.fails(*as_bob, "user", "app-password", "list", ALICE)
    assert "may not" in team.fails(*as_bob, "user", "del", ALICE)
    assert "may not" in team.fails(*as_bob, "deliver", ALICE, input=b"Subject: x\r\n\r\nx\r\n")
    team.ok(*as_bob, "config", "check")  # reads no data


def test_admin_and_unknown_actor(team):
    team.ok("--as", "root@example.org", "domain", "add", "third.org")
    team.ok("--as", "root@example.org", "queue", "list")
    assert "no such user" in team.fails("--as", "ghost@example.org", "domain", "list")


def test_refusals_are_audited_with_who(team):
    team.fails("--as", "bob@example.org", "user", "del", ALICE)
    events = [json.loads(line) for line in
              (team.data / "audit" / "audit.jsonl").read_text().splitlines()]
    refused = [e for e in events if e["outcome"] == "failed"]
    assert refused and refused[-1]["who"].startswith("bob@example.org (via the command line")
    assert "user del alice@example.org" in refused[-1]["details"]["command"]


def test_every_command_has_a_rule():
    parser = build_parser()
    handlers = set()

    def walk(p):
        for action in p._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for sub in action.choices.values():
                    walk(sub)
        handler = p.get_default("handler")
        if handler is not None:
            handlers.add(handler_name(handler))

    walk(parser)
    assert handlers and handlers <= set(RULES), sorted(handlers - set(RULES))
