"""``mailserver dmarc import|summary|list``: reports already in a mailbox are recorded once,
unusable ones are named and skipped, and the summary tallies messages per reporter and per
source IP; domain admins read their own domains' reports only, and import is audited."""

from __future__ import annotations

import json
import time

import pytest

from tests.cli.conftest import ALICE, PASSWORD
from tests.msgauth.dmarc_reports import report_message, report_xml

DAY = 86400


def recent(days_ago: int) -> tuple[int, int]:
    """(begin, end) of the UTC day ``days_ago`` days before today."""
    end = (int(time.time()) // DAY - days_ago) * DAY - 1
    return end - DAY + 1, end


def deliver(cli, message: bytes, to: str = ALICE) -> None:
    cli.ok("deliver", "--from", "dmarc@reporter.example", to, input=message)


@pytest.fixture
def reports(example):
    """alice's INBOX: two reporters' reports on example.org (one old), a duplicate, a broken
    report, another domain's report and an ordinary mail."""
    begin, end = recent(1)
    deliver(example, report_message(report_xml(
        org="google.com", report_id="g-1", begin=begin, end=end,
        rows=[("192.0.2.1", 90, "none", "pass", "pass"), ("192.0.2.1", 5, "none", "pass", "fail"),
              ("203.0.113.9", 5, "reject", "fail", "fail")], p="reject"), "zip"))
    deliver(example, report_message(report_xml(
        org="yahoo.com", report_id="y-1", begin=begin - 30 * DAY, end=end - 30 * DAY,
        rows=[("192.0.2.1", 10, "none", "fail", "pass")], p="reject"), "gzip"))
    deliver(example, report_message(report_xml(
        org="google.com", report_id="g-1", begin=begin, end=end), "xml"))  # same id: once
    deliver(example, report_message(b"<feedback><report_metadata>", "gzip"))
    deliver(example, report_message(report_xml("elsewhere.example"), "gzip"))
    deliver(example, b"From: bob@example.net\nSubject: lunch\n\nhello\n")
    return example


def test_import_records_each_report_once(reports):
    done = reports("dmarc", "import", ALICE)
    assert done.returncode == 0, done.stderr
    out, err = done.stdout.decode(), done.stderr.decode()
    assert out.strip() == (
        f"{ALICE}: 6 message(s) read; 2 report(s) recorded, 1 already recorded, "
        "1 without a report, 1 unusable, 1 for domains not served here, 0 too large")
    assert "not recorded: not well-formed XML" in err
    assert "a report for elsewhere.example, not a domain served here" in err
    again = reports.ok("dmarc", "import", ALICE)
    assert "0 report(s) recorded, 3 already recorded" in again


def test_summary_per_reporter_and_source_ip(reports):
    reports.ok("dmarc", "import", ALICE)
    out = reports.ok("dmarc", "summary", "example.org")
    lines = out.splitlines()
    assert lines[0].startswith("DMARC reports for example.org, all reports: 2 report(s)")
    assert lines[1] == ("110 message(s): DMARC pass 105 (95%), aligned DKIM pass 95 (86%), "
                        "aligned SPF pass 100 (91%); none=105 reject=5")
    table = {line.split()[0]: line.split() for line in lines[3:] if line and
             not line.startswith(("reporter", "source"))}
    assert table["google.com"][:4] == ["google.com", "1", "100", "95"]
    assert table["yahoo.com"][:4] == ["yahoo.com", "1", "10", "10"]
    assert table["192.0.2.1"][:4] == ["192.0.2.1", "2", "105", "105"]
    assert table["203.0.113.9"][-1] == "reject=5"
    week = reports.ok("dmarc", "summary", "example.org", "--days", "7")
    assert "the last 7 day(s): 1 report(s)" in week and "yahoo.com" not in week
    top = reports.ok("dmarc", "summary", "example.org", "--top", "1")
    assert "203.0.113.9" not in top and "... 1 more source IP(s) with 5 message(s)" in top


def test_list_newest_first(reports):
    reports.ok("dmarc", "import", ALICE)
    lines = reports.ok("dmarc", "list", "example.org").splitlines()
    assert lines[0].split()[:3] == ["range", "end", "(UTC)"]
    assert [line.split()[3] for line in lines[1:]] == ["google.com", "yahoo.com"]
    assert lines[1].split()[4:] == ["g-1", "100", "95", "(95%)", "reject", "import"]


def test_nothing_recorded_yet(example):
    done = example("dmarc", "summary", "example.org")
    assert done.returncode == 0 and done.stdout == b""
    err = done.stderr.decode()
    assert "no DMARC reports for example.org (all reports); reports mailed to " in err
    assert "mailserver alias add dmarc-reports@example.org you@example.org" in err


@pytest.mark.parametrize(
    ("args", "status", "words"),
    [
        (("dmarc", "summary", "nowhere.test"), 1, "not served here"),
        (("dmarc", "list", "not a domain"), 1, "is not a domain name"),
        (("dmarc", "import", "nobody@example.org"), 1, "no mailbox for nobody@example.org"),
        (("dmarc", "import", "not-an-address"), 1, "is not an address"),
    ],
)
def test_clear_errors(example, args, status, words):
    assert words in example.fails(*args, status=status)


def test_bad_days_is_a_usage_error(example):
    done = example("dmarc", "summary", "example.org", "--days", "0")
    assert done.returncode == 2 and b"give a number of days" in done.stderr


def test_domain_admins_read_their_own_domains_only(reports):
    reports.ok("dmarc", "import", ALICE)
    reports.ok("domain", "add", "other.org")
    reports.ok("user", "add", "bob@example.org", "--password-stdin", input=PASSWORD + "\n")
    reports.ok("user", "role", ALICE, "domain-admin", "--domain", "example.org")
    as_alice = ("--as", ALICE)
    assert "google.com" in reports.ok(*as_alice, "dmarc", "summary", "example.org")
    assert "google.com" in reports.ok(*as_alice, "dmarc", "list", "example.org")
    assert "may not" in reports.fails(*as_alice, "dmarc", "summary", "other.org")
    assert "may not" in reports.fails(*as_alice, "dmarc", "import", ALICE)
    assert "may not" in reports.fails("--as", "bob@example.org", "dmarc", "list", "example.org")


def test_import_is_audited_and_reads_are_not(reports):
    reports.ok("dmarc", "import", ALICE)
    reports.ok("dmarc", "summary", "example.org")
    reports.ok("dmarc", "list", "example.org")
    path = reports.data / "audit" / "audit.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    dmarc = [r for r in records if "dmarc" in r["details"]["command"]]
    assert len(dmarc) == 1 and dmarc[0]["event"] == "admin_action"
    assert dmarc[0]["details"]["command"].endswith(f"dmarc import {ALICE}")
