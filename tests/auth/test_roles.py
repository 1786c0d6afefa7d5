"""Roles: user, domain admin (only their domains), admin; the operator is an admin."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailserver.auth.roles import OPERATOR, Action, Actor, Forbidden, allowed, require
from mailserver.types import Role, User

ALICE = Actor("alice@example.org")
DOMAIN_ADMIN = Actor("dana@example.org", frozenset({Role.USER, Role.DOMAIN_ADMIN}),
                     frozenset({"example.org"}))
ADMIN = Actor("root@example.org", frozenset({Role.ADMIN}))


def test_user_manages_only_their_own_account():
    assert allowed(ALICE, Action.MANAGE_OWN_CREDENTIALS, "Alice@example.org")
    assert allowed(ALICE, Action.READ_MAIL, "alice@example.org")
    assert not allowed(ALICE, Action.READ_MAIL, "bob@example.org")
    for action in (Action.MANAGE_USERS, Action.MANAGE_DOMAINS, Action.MANAGE_QUEUE,
                   Action.READ_AUDIT, Action.MANAGE_ALIASES):
        assert not allowed(ALICE, action, "bob@example.org")


def test_domain_admin_is_limited_to_their_domains():
    assert allowed(DOMAIN_ADMIN, Action.MANAGE_USERS, "bob@example.org")
    assert allowed(DOMAIN_ADMIN, Action.MANAGE_ALIASES, "@EXAMPLE.org")
    assert not allowed(DOMAIN_ADMIN, Action.MANAGE_USERS, "eve@other.test")
    assert not allowed(DOMAIN_ADMIN, Action.MANAGE_DOMAINS, "example.org")
    assert not allowed(DOMAIN_ADMIN, Action.MANAGE_QUEUE)
    assert not allowed(DOMAIN_ADMIN, Action.READ_MAIL, "bob@example.org")


def test_admin_and_operator_may_do_everything():
    for actor in (ADMIN, OPERATOR):
        for action in Action:
            assert allowed(actor, action, "anyone@anywhere.test")


def test_require_says_what_was_refused():
    with pytest.raises(Forbidden, match="alice@example.org may not manage-queue"):
        require(ALICE, Action.MANAGE_QUEUE)
    require(ADMIN, Action.MANAGE_QUEUE)


def test_actor_from_user():
    user = User("Dana@Example.org", "hash", frozenset({Role.DOMAIN_ADMIN}),
                admin_domains=frozenset({"Example.org"}))
    actor = Actor.of(user)
    assert allowed(actor, Action.MANAGE_USERS, "x@example.org")


@given(st.sampled_from(list(Action)), st.emails())
def test_plain_users_never_act_on_others(action, target):
    if target.lower() == ALICE.address:
        return
    assert not allowed(ALICE, action, target)
