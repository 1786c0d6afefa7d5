"""``mailserver user quota ADDRESS SIZE``: a user's own quota (RFC 9208), audited, set by
administrators only, and enforced by local delivery (sysexits: 69 when the message can never
fit, 75 when the mailbox is full for now)."""

from __future__ import annotations

import json

import pytest

from mailserver.cli.storage import CommandError
from mailserver.cli.user import quota_size
from tests.cli.conftest import ALICE, PASSWORD

MESSAGE = b"From: bob@example.net\nSubject: sized\n\n" + b"x" * 1500 + b"\n"


@pytest.mark.parametrize(
    ("text", "size"),
    [("1048576", 1048576), ("500M", 500 << 20), ("2g", 2 << 30), ("4KiB", 4096),
     ("3MB", 3 << 20), ("default", 0), ("Unlimited", -1)],
)  # fmt: skip
def test_sizes(text, size):
    assert quota_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-5", "1.5G", "5X", "many"])
def test_bad_sizes(text):
    with pytest.raises(CommandError):
        quota_size(text)


def test_quota_is_set_shown_and_enforced(example):
    """The limit is stored with the user and reported with the usage the store counts; a
    message larger than the whole quota is refused for good (69), one that does not fit
    now is a temporary failure (75); 'unlimited' lifts the limit and 'default' goes back to
    [store] quota_mb (unlimited here)."""
    out = example.ok("user", "quota", ALICE, "1K")
    assert out == f"{ALICE}: quota 1.0 KiB, using 0 B in 0 message(s)\n"
    err = example.fails("deliver", ALICE, input=MESSAGE, status=69)
    assert "nothing delivered" in err
    example.ok("user", "quota", ALICE, "3K")
    example.ok("deliver", ALICE, input=MESSAGE)
    err = example.fails("deliver", ALICE, input=MESSAGE, status=75)
    assert "try again later" in err
    assert "using 1.5 KiB in 1 message(s)" in example.ok("user", "quota", ALICE, "unlimited")
    example.ok("deliver", ALICE, input=MESSAGE)
    out = example.ok("user", "quota", ALICE, "default")
    assert out.startswith(f"{ALICE}: quota unlimited, using 3.0 KiB in 2 message(s)")


def test_quota_refusals_and_audit(example):
    """Bad input names the fix; an unknown user is refused; a user cannot change their own
    quota; every change is in the audit log."""
    assert "invalid size" in example.fails("user", "quota", ALICE, "lots")
    assert "no user" in example.fails("user", "quota", "nobody@example.org", "1G").lower()
    example.ok("user", "add", "bob@example.org", "--password-stdin", input=PASSWORD + "\n")
    as_bob = ("--as", "bob@example.org")
    assert "may not" in example.fails(*as_bob, "user", "quota", "bob@example.org", "10G")
    example.ok("user", "quota", ALICE, "2G")
    events = [
        json.loads(line)
        for line in (example.data / "audit" / "audit.jsonl").read_text().splitlines()
    ]
    commands = [e["details"].get("command", "") for e in events]
    assert any(f"user quota {ALICE} 2G" in c for c in commands)
