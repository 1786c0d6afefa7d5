"""Received DMARC reports in the index: recorded once, read back by domain and time, tallied;
the delivery wrapper records reports sent to the report address after the commit, and
nothing it meets (a broken report, another domain's report) changes the delivery."""

from __future__ import annotations

import io

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from zope.interface.verify import verifyObject

from mailserver.db import schema
from mailserver.interfaces import IDelivery, IDeliveryTarget
from mailserver.msgauth import report_store
from mailserver.msgauth.report_store import OTHER, ReportStore, report_key, tally
from mailserver.msgauth.report_target import ReportRecordingTarget, served_domain
from mailserver.msgauth.reports import parse_report
from mailserver.store.local import LocalDeliveryTarget
from mailserver.types import Address, Envelope
from tests.conftest import Storage
from tests.msgauth.dmarc_reports import report_message, report_xml

DAY = 86400


@pytest_twisted.ensureDeferred
async def test_recorded_once_and_read_by_time(storage):
    """A report is stored once per (reporter, id); reads select by domain and range end."""
    reports = ReportStore(storage.db)
    first = parse_report(report_xml(report_id="a", begin=0, end=DAY - 1))
    second = parse_report(report_xml(report_id="b", begin=DAY, end=2 * DAY - 1,
                                     rows=[("192.0.2.9", 4, "reject", "fail", "fail")]))
    other = parse_report(report_xml("example.net", report_id="a"))
    assert await reports.record(first, received=1.0, via="smtp") is True
    assert await reports.record(first, received=2.0, via="import") is False
    assert await reports.record(second, received=3.0, via="import") is True
    assert await reports.record(other, received=4.0, via="smtp") is True
    assert reports.has(first) and reports.has(other)
    assert [r.report_id for r in reports.reports("example.org")] == ["a", "b"]
    assert [r.report_id for r in reports.reports("example.org", since=DAY)] == ["b"]
    stored = reports.reports("example.org")[0]
    assert (stored.org_name, stored.via, stored.received, stored.messages) == (
        "reporter.example", "smtp", 1.0, 3)
    assert stored.policy["p"] == "none"


def test_key_layout():
    """domain NUL date_end (u64) + 16 bytes: cursor order is domain, then time."""
    key = report_key("example.org", 5, "org", "id")
    assert key.startswith(b"example.org\0" + (5).to_bytes(8, "big")) and len(key) == 12 + 8 + 16
    assert report_key("example.org", 5, "org", "id2") != key


@pytest_twisted.ensureDeferred
async def test_rows_merged_and_capped(storage, monkeypatch):
    """Rows with the same outcome merge; past MAX_ROWS the smallest are kept as a count."""
    monkeypatch.setattr(report_store, "MAX_ROWS", 2)
    rows = [("192.0.2.1", 5, "none", "pass", "pass"), ("192.0.2.1", 1, "none", "pass", "pass"),
            ("192.0.2.2", 4, "none", "fail", "pass"), ("192.0.2.3", 1, "reject", "fail", "fail")]
    reports = ReportStore(storage.db)
    await reports.record(parse_report(report_xml(rows=rows)), received=0, via="smtp")
    (stored,) = reports.reports("example.org")
    assert [(r.source_ip, r.count) for r in stored.rows] == [("192.0.2.1", 6), ("192.0.2.2", 4)]
    assert stored.omitted_messages == 1 and stored.messages == 11
    total, by_reporter, by_ip = tally([stored])
    assert (total.messages, total.dmarc_pass, total.dkim_pass, total.spf_pass) == (11, 10, 6, 10)
    assert by_ip[OTHER].messages == 1 and by_ip[OTHER].dmarc_pass == 0
    assert by_reporter["reporter.example"].dispositions == {"none": 10, "?": 1}


def test_tally_by_reporter_and_ip():
    a = parse_report(report_xml(org="a.example", rows=[("192.0.2.1", 2, "none", "pass", "fail")]))
    b = parse_report(report_xml(org="b.example", rows=[
        ("192.0.2.1", 3, "quarantine", "fail", "fail"), ("192.0.2.2", 1, "none", "fail", "pass")]))
    stored = [report_store._decode("example.org", report_store._encode(r, 0, "smtp"))
              for r in (a, b)]
    total, by_reporter, by_ip = tally(stored)
    assert (total.messages, total.dmarc_pass, len(total.reports)) == (6, 3, 2)
    assert by_reporter["b.example"].dispositions == {"quarantine": 3, "none": 1}
    assert (by_ip["192.0.2.1"].messages, by_ip["192.0.2.1"].dmarc_pass) == (5, 2)
    assert len(by_ip["192.0.2.1"].reports) == 2


def test_served_domain():
    served = {"example.org"}.__contains__
    assert served_domain("example.org", served)
    assert served_domain("mail.Example.org.", served)
    assert not served_domain("example.net", served)
    assert not served_domain("org", served)


@pytest_twisted.ensureDeferred
async def test_migration_adds_the_sub_db(tmp_path):
    """An index at schema 4 is upgraded to 5 on open, keeping its data."""
    old = Storage(tmp_path)
    old.db.write_sync(lambda txn: txn.put_json(b"meta", b"schema_version", 4))
    old.db.write_sync(lambda txn: txn.put_json(b"meta", b"kept", 1))
    await old.aclose()
    new = Storage(tmp_path)
    try:
        assert new.db.schema_version == schema.SCHEMA_VERSION >= 5
        with new.db.read() as txn:
            assert txn.get_json(b"meta", b"kept") == 1
            assert txn.count(b"dmarc_reports") == 0
    finally:
        await new.aclose()


@pytest.fixture
def served(storage):
    async def setup():
        await storage.directory.add_domain("example.org")
        for user in ("dmarc-reports", "bob"):
            await storage.directory.add_user(f"{user}@example.org", "pw")
            await storage.store.create_account(f"{user}@example.org")

    pytest_twisted.blockon(Deferred.fromCoroutine(setup()))
    return storage


async def deliver(storage, message: bytes, *recipients: str) -> ReportStore:
    from twisted.internet import reactor

    reports = ReportStore(storage.db)
    target = ReportRecordingTarget(
        LocalDeliveryTarget(storage.store, storage.directory), reports, "dmarc-reports",
        storage.directory.has_domain, reactor=reactor)
    verifyObject(IDeliveryTarget, target)
    delivery = target.start(Envelope(sender=Address("dmarc", "reporter.example")))
    verifyObject(IDelivery, delivery)
    for recipient in recipients:
        await delivery.add_recipient(Address(*recipient.split("@")))
    await delivery.body(io.BytesIO(message))
    await delivery.commit()
    return reports


def inbox_count(storage, address: str) -> int:
    return len(list(storage.store.account(address).folder("INBOX").uids()))


@pytest_twisted.ensureDeferred
async def test_report_to_the_report_address_is_recorded(served):
    """After the commit, the report is in the index and the mail in the mailbox, intact."""
    message = report_message(report_xml(), "zip")
    reports = await deliver(served, message, "dmarc-reports@example.org")
    (stored,) = reports.reports("example.org")
    assert (stored.report_id, stored.via, stored.messages) == ("r-1", "smtp", 3)
    inbox = served.store.account("dmarc-reports@example.org").folder("INBOX")
    with inbox.message(next(inbox.uids())).open() as f:
        assert f.read().endswith(message)  # the store adds Return-Path


@pytest_twisted.ensureDeferred
async def test_other_recipients_reports_are_not_recorded(served):
    reports = await deliver(served, report_message(report_xml(), "gzip"), "bob@example.org")
    assert reports.reports("example.org") == []
    assert inbox_count(served, "bob@example.org") == 1


@pytest.mark.parametrize(
    "message",
    [
        report_message(report_xml("example.net"), "gzip"),  # not a domain served here
        report_message(b"<feedback><broken", "xml"),  # unusable report
        b"From: a@reporter.example\r\nSubject: hello\r\n\r\nno report here\r\n",
    ],
)
@pytest_twisted.ensureDeferred
async def test_unusable_reports_are_delivered_not_recorded(served, message):
    """A broken report, a mail without one or another domain's report: delivered, not kept."""
    reports = await deliver(served, message, "dmarc-reports@example.org", "bob@example.org")
    assert reports.reports("example.org") == reports.reports("example.net") == []
    assert inbox_count(served, "dmarc-reports@example.org") == 1
    assert inbox_count(served, "bob@example.org") == 1


@pytest_twisted.ensureDeferred
async def test_other_recipients_deliveries_answer_as_the_store(served):
    """A message for other recipients passes straight through: body and commit answer what
    the store's own delivery answers (the commit its UIDs), and nothing is kept for a
    report."""
    from twisted.internet import reactor

    target = ReportRecordingTarget(
        LocalDeliveryTarget(served.store, served.directory), ReportStore(served.db),
        "dmarc-reports", served.directory.has_domain, reactor=reactor)
    delivery = target.start(Envelope(sender=Address("dmarc", "reporter.example")))
    await delivery.add_recipient(Address("bob", "example.org"))
    assert await delivery.body(io.BytesIO(b"Subject: hi\r\n\r\nbody\r\n")) is None
    assert delivery.message is None
    assert await delivery.commit() == [1]
    assert inbox_count(served, "bob@example.org") == 1
