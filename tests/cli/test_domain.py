"""``mailserver domain add|list|del`` through the installed script."""

from __future__ import annotations

from mailserver.cli.main import main


def test_add_list_delete(cli):
    """A domain added is listed, and an unused domain can be deleted again."""
    assert cli.ok("domain", "add", "Example.ORG") == "added domain example.org\n"
    assert cli.ok("domain", "list") == "example.org\n"
    assert cli.ok("domain", "del", "example.org") == "deleted domain example.org\n"


def test_duplicate_add_fails(example):
    """Adding a served domain again fails in one line pointing at 'domain list'."""
    err = example.fails("domain", "add", "example.org")
    assert err == "error: domain example.org exists already; see: mailserver domain list\n"


def test_invalid_name_fails(capsys):
    """A malformed domain name fails in one line that shows a valid example (checked before
    any storage is opened, so this runs in-process)."""
    assert main(["domain", "add", "bad..name"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: 'bad..name' is not a domain name")
    assert "example.org" in err


def test_delete_refused_while_users_remain(example):
    """A domain with users is not deleted; the error names them and the command to run."""
    err = example.fails("domain", "del", "example.org")
    assert "still has 1 user(s) and 0 alias(es) (alice@example.org)" in err
    assert "mailserver user del ADDRESS" in err
