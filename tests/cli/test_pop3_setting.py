"""``mailserver user pop3 ADDRESS keep|delete|default``: a user's own POP3 "leave mail on the
server" choice, kept in the user's directory record, audited, and allowed to the user
themselves as well as administrators."""

from __future__ import annotations

import json

from tests.cli.conftest import ALICE, PASSWORD


def test_keep_delete_default(example):
    """Each mode is stored and reported with what it means ([pop3] leave_on_server is off
    by default, so 'default' deletes)."""
    assert example.ok("user", "pop3", ALICE, "keep") == (
        f"{ALICE}: mail a POP3 client deletes is kept on the server (this account's setting)\n"
    )
    assert example.ok("user", "pop3", ALICE, "delete") == (
        f"{ALICE}: mail a POP3 client deletes is deleted at QUIT (this account's setting)\n"
    )
    assert example.ok("user", "pop3", ALICE, "default") == (
        f"{ALICE}: mail a POP3 client deletes is deleted at QUIT (the [pop3] default)\n"
    )


def test_refusals_and_audit(example):
    """A bad mode or an unknown user is refused; a user may set their own but not another's;
    every change is audited."""
    assert example(*("user", "pop3", ALICE, "sometimes")).returncode != 0
    assert "no user" in example.fails("user", "pop3", "nobody@example.org", "keep").lower()
    example.ok("user", "add", "bob@example.org", "--password-stdin", input=PASSWORD + "\n")
    as_bob = ("--as", "bob@example.org")
    example.ok(*as_bob, "user", "pop3", "bob@example.org", "keep")
    assert "may not" in example.fails(*as_bob, "user", "pop3", ALICE, "keep")
    records = [
        json.loads(line)
        for line in (example.data / "audit" / "audit.jsonl").read_text().splitlines()
    ]
    assert any("pop3" in json.dumps(record) for record in records)
