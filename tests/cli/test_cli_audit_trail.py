"""Every command line action that changes something leaves one audit line (who, where
"cli", outcome, the command); read-only commands leave none; no secret is ever written."""

from __future__ import annotations

import json

from tests.cli.conftest import ALICE, PASSWORD


def lines(cli) -> list[dict]:
    path = cli.data / "audit" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_changes_are_audited_and_reads_are_not(cli):
    cli.ok("domain", "add", "example.org")
    cli.ok("user", "add", ALICE, "--password-stdin", input=PASSWORD + "\n")
    cli.ok("user", "passwd", ALICE, "--password-stdin", input="another-secret\n")
    cli.ok("user", "list")
    cli.ok("domain", "list")
    cli.fails("user", "add", "bob@nowhere.test", "--password-stdin", input="pw\n")
    cli.ok("alias", "add", "postmaster@example.org", ALICE)
    records = lines(cli)
    assert [r["event"] for r in records] == [
        "admin_action", "admin_action", "password_changed", "admin_action", "admin_action",
    ]
    assert [r["outcome"] for r in records] == ["ok", "ok", "ok", "failed", "ok"]
    assert all(r["where"] == "cli" and r["who"].endswith("(operator)") for r in records)
    assert records[1]["details"]["command"].endswith(f"user add {ALICE} --password-stdin")
    text = (cli.data / "audit" / "audit.jsonl").read_text()
    assert PASSWORD not in text and "another-secret" not in text
    # and the audit command reads them back
    assert "password_changed" in cli.ok("audit", "search", "--event", "password_changed")
