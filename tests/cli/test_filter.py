"""``mailserver filter allow|block|unlist|lists|greylist``: the lists per server, domain and
user, the greylist's counts and pruning, and who may change which list.

The commands run in a subprocess through ``mailserver.cli.main`` with the ``filter`` noun and
its permission rules added when the installed ones lack them (:data:`RUNNER`), so these tests
pass before and after the noun is registered in ``main.NOUNS`` and ``permissions.RULES``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time

import pytest
import pytest_twisted
from twisted.internet import task

from mailserver.cli import filter as filter_cli
from mailserver.cli.storage import CommandError
from mailserver.filter.greylist import GreylistCheck, GreylistSettings
from mailserver.filter.lists import ListCheck, ListStore
from mailserver.message.address import parse_address
from mailserver.types import Action, Envelope, Peer
from tests.cli.conftest import ALICE, PASSWORD, Cli

#: main() with the filter noun and the rule lines proposed for cli/permissions.py.
RUNNER = """
import sys
from mailserver.auth.roles import Action
from mailserver.cli import main, permissions
from mailserver.cli.permissions import Rule

if "mailserver.cli.filter" not in main.NOUNS:
    main.NOUNS.append("mailserver.cli.filter")
lists = Rule((Action.MANAGE_OWN_CREDENTIALS, Action.MANAGE_USERS), "address")
admin = Rule((Action.MANAGE_DOMAINS,))
for verb in ("allow_entry", "block_entry", "unlist_entry", "list_entries"):
    permissions.RULES.setdefault("mailserver.cli.filter." + verb, lists)
for verb in ("greylist_status", "prune_greylist"):
    permissions.RULES.setdefault("mailserver.cli.filter." + verb, admin)
sys.exit(main.main(sys.argv[1:]))
"""


class FilterCli(Cli):
    def __call__(self, *args: str, input: str | bytes | None = None) -> subprocess.CompletedProcess:
        data = input.encode() if isinstance(input, str) else (input or b"")
        return subprocess.run(
            [sys.executable, "-c", RUNNER, "--config", str(self.config), *args],
            input=data,
            capture_output=True,
            timeout=30,
        )


@pytest.fixture
def cli(example) -> FilterCli:
    """example.org with alice, run through :data:`RUNNER`."""
    return FilterCli(example.root)


ADDED = re.compile(r"added \d{4}-\d\d-\d\d \d\d:\d\d by \S+")


def test_server_lists(cli):
    """Block, block again, move to allow, list, unlist; each says what it did."""
    assert cli.ok("filter", "block", "192.0.2.0/24", "--note", "spam run") == (
        "added 192.0.2.0/24 to the server's block list\n"
    )
    assert cli.ok("filter", "block", "192.0.2.0/24") == (
        "192.0.2.0/24 is on the server's block list already\n"
    )
    assert cli.ok("filter", "allow", "192.0.2.0/24") == (
        "moved 192.0.2.0/24 from the server's block list to its allow list\n"
    )
    cli.ok("filter", "block", ".Spam.Example")
    lines = cli.ok("filter", "lists").splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["allow", "192.0.2.0/24"], ["block", ".spam.example"],
    ]
    assert all(ADDED.search(line) for line in lines)
    assert cli.ok("filter", "unlist", "192.0.2.0/24") == (
        "removed 192.0.2.0/24 from the server's allow list\n"
    )
    assert cli.fails("filter", "unlist", "192.0.2.0/24") == (
        "error: 192.0.2.0/24 is on none of the server's lists; "
        "see them with: mailserver filter lists\n"
    )
    cli.ok("filter", "unlist", ".spam.example")
    done = cli("filter", "lists")
    assert done.returncode == 0 and done.stdout == b""
    assert b"note: nothing on the server's lists yet" in done.stderr


@pytest_twisted.ensureDeferred
async def test_domain_and_user_lists_decide_at_rcpt(cli):
    assert cli.ok("filter", "block", "spam.example", "--domain", "Example.ORG") == (
        "added spam.example to example.org's block list\n"
    )
    assert cli.ok("filter", "allow", "Boss@spam.example", "--user", ALICE, "--note", "my boss")
    listing = cli.ok("filter", "lists", "--all").splitlines()
    assert [line.split()[:3] for line in listing] == [
        [ALICE, "allow", "boss@spam.example"], ["example.org", "block", "spam.example"],
    ]
    assert listing[0].endswith(": my boss")
    assert cli.ok("filter", "lists", "--user", ALICE).startswith("allow  boss@spam.example  ")

    storage = cli.storage()
    try:
        check = ListCheck(ListStore(storage.db))
        session = check.session(Peer("198.51.100.1"))
        boss = Envelope(parse_address("boss@spam.example"))
        other = Envelope(parse_address("other@spam.example"))
        assert session.recipient(boss, parse_address(ALICE)).trusted
        refused = session.recipient(other, parse_address(ALICE))
        assert refused.action is Action.REJECT
        assert refused.text == "Sender blocked by the recipient domain's block list"
    finally:
        await storage.aclose()


def test_scopes_must_be_served(cli):
    assert cli.fails("filter", "block", "spam.example", "--domain", "nowhere.test") == (
        "error: domain nowhere.test is not served here; "
        "add it first: mailserver domain add nowhere.test\n"
    )
    done = cli("filter", "block", "spam.example", "--user", "ghost@example.org")
    assert done.returncode == 0
    assert done.stderr.decode() == (
        "note: ghost@example.org is not a user or alias here; its list applies once it is\n"
    )


def test_bad_entries_say_what_to_give(cli):
    assert cli.fails("filter", "block", "192.0.2.1/24") == (
        "error: bad entry: '192.0.2.1/24' has host bits set; did you mean 192.0.2.0/24?\n"
    )
    err = cli.fails("filter", "allow", "not an entry")
    assert err.startswith("error: bad entry: 'not an entry' is not a domain")
    assert "192.0.2.0/24" in err  # the examples
    assert "not a domain name" in cli.fails("filter", "lists", "--domain", "bad domain")


@pytest_twisted.ensureDeferred
async def test_greylist_counts_and_prune(cli):
    storage = cli.storage()
    try:
        clock = task.Clock()
        clock.advance(time.time() - 3 * 86400)
        check = GreylistCheck(storage.db, clock, GreylistSettings())
        envelope = Envelope(parse_address("news@sender.example"))
        for peer in ("192.0.2.1", "198.51.100.1"):
            verdict = await check.session(Peer(peer)).recipient(envelope, parse_address(ALICE))
            assert verdict.action is Action.TEMPFAIL
            clock.advance(3 * 86400)
    finally:
        await storage.aclose()
    assert cli.ok("filter", "greylist") == (
        "triplets waiting for a retry: 1\n"
        "triplets passed: 0\n"
        "client networks: 0 (auto-allowed: 0)\n"
        "sender domains: 0 (known good: 0)\n"
        "expired, not yet pruned: 1\n"
    )
    out = cli.ok("filter", "greylist", "--prune")
    assert out.startswith("pruned 1 expired record(s)\ntriplets waiting for a retry: 1\n")
    assert out.endswith("expired, not yet pruned: 0\n")


def test_who_may_change_which_list(cli):
    """A user: their own lists; a domain admin: their domains' and users' lists; the server's
    lists and the greylist: admins only."""
    bob = "bob@example.org"
    cli.ok("domain", "add", "other.org")
    cli.ok("user", "add", bob, "--password-stdin", input=PASSWORD + "\n")
    cli.ok("user", "role", ALICE, "domain-admin", "--domain", "example.org")
    as_bob, as_alice = ("--as", bob), ("--as", ALICE)

    assert cli.ok(*as_bob, "filter", "block", "spam.example", "--user", bob)
    assert "spam.example" in cli.ok(*as_bob, "filter", "lists", "--user", bob)
    for scope in (("--user", ALICE), ("--domain", "example.org"), ()):
        assert "may not" in cli.fails(*as_bob, "filter", "allow", "x.example", *scope)
    assert "may not" in cli.fails(*as_bob, "filter", "lists", "--all")
    assert "may not" in cli.fails(*as_bob, "filter", "greylist")

    assert cli.ok(*as_alice, "filter", "allow", "x.example", "--domain", "example.org")
    assert cli.ok(*as_alice, "filter", "unlist", "spam.example", "--user", bob)
    assert "may not" in cli.fails(*as_alice, "filter", "allow", "x.example", "--domain",
                                  "other.org")
    assert "may not" in cli.fails(*as_alice, "filter", "block", "192.0.2.1")
    assert "may not" in cli.fails(*as_alice, "filter", "greylist", "--prune")


# -- the parser, in-process (no storage) ----------------------------------------------------


@pytest.fixture
def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="mailserver")
    filter_cli.register(top.add_subparsers())
    return top


def test_scope_options_are_the_permission_target(parser):
    args = parser.parse_args(["filter", "allow", "x.example", "--domain", "example.org"])
    assert (args.handler, args.domain, args.user, args.address) == (
        filter_cli.allow_entry, "example.org", None, "example.org")
    args = parser.parse_args(["filter", "unlist", "x.example", "--user", ALICE])
    assert (args.handler, args.address) == (filter_cli.unlist_entry, ALICE)
    args = parser.parse_args(["filter", "lists", "--all"])
    assert (args.handler, args.all, args.address) == (filter_cli.list_entries, True, None)
    assert parser.parse_args(["filter", "greylist"]).handler is filter_cli.greylist_status
    assert parser.parse_args(["filter", "greylist", "--prune"]).handler is (
        filter_cli.prune_greylist)
    with pytest.raises(SystemExit):
        parser.parse_args(["filter", "block", "x.example", "--domain", "a.org", "--user", ALICE])


def test_bad_arguments_refused_before_storage(parser):
    args = parser.parse_args(["filter", "block", "1.2.3", "--user", "not-an-address"])
    with pytest.raises(CommandError, match="not an address"):
        args.handler(args)
    args = parser.parse_args(["filter", "block", "1.2.3"])
    with pytest.raises(CommandError, match="bad entry: '1.2.3' is not an IP address"):
        args.handler(args)
