"""``mailserver alias add|del|list`` through the installed script."""

from __future__ import annotations

import pytest_twisted

from mailserver.cli.main import main
from tests.cli.conftest import ALICE


@pytest_twisted.ensureDeferred
async def test_add_list_delete_with_catch_all(example):
    """Aliases, including the '@domain' catch-all, are added, listed and deleted; the
    directory resolves them."""
    assert example.ok("alias", "add", "@Example.org", ALICE) == (
        f"added alias @example.org -> {ALICE}\n"
    )
    assert example.ok("alias", "add", "team@example.org", ALICE, "ext@remote.example") == (
        f"added alias team@example.org -> {ALICE}, ext@remote.example\n"
    )
    assert example.ok("alias", "list", "example.org") == (
        f"@example.org -> {ALICE}\nteam@example.org -> {ALICE}, ext@remote.example\n"
    )
    assert example.ok("alias", "del", "team@example.org") == "deleted alias team@example.org\n"
    storage = example.storage()
    try:
        assert [a.source for a in storage.directory.aliases()] == ["@example.org"]
        assert storage.directory.resolve("anyone@example.org") == [ALICE]
    finally:
        await storage.aclose()


def test_alias_of_a_user_refused(example):
    """An alias with a user's address would never be used, so it is refused."""
    err = example.fails("alias", "add", ALICE, "bob@remote.example")
    assert f"{ALICE} is a user" in err
    assert "mailserver user del" in err


def test_delete_unknown_alias(example):
    """Deleting a missing alias says where to look."""
    err = example.fails("alias", "del", "@example.org")
    assert err == "error: no alias @example.org; see the aliases with: mailserver alias list\n"


def test_alias_to_itself_refused(capsys):
    """An alias may not point at itself (checked in-process, before opening storage)."""
    assert main(["alias", "add", "a@example.org", "A@example.org"]) == 1
    err = capsys.readouterr().err
    assert err == "error: alias a@example.org may not point at itself; give other targets\n"
