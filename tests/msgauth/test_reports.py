"""DMARC aggregate report parsing (RFC 7489 §7.2, Appendix C): the example report, every way
it is attached, and hostile input, which always ends in a ReportError with a reason."""

from __future__ import annotations

import gzip
import io
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailserver.msgauth import reports
from mailserver.msgauth.reports import (
    AuthDKIM,
    AuthSPF,
    NoReport,
    ReportError,
    decompress,
    find_report,
    parse_report,
)
from tests.msgauth.dmarc_reports import (
    EXAMPLE,
    gzipped,
    report_message,
    report_xml,
    zipped,
)


def test_the_example_report():
    """Every field of the specification's example report comes out, defaults filled in."""
    report = parse_report(EXAMPLE)
    meta = report.metadata
    assert (meta.org_name, meta.email, meta.report_id) == (
        "acme.com", "noreply-dmarc-support@acme.com", "9391651994964116463")
    assert (meta.date_begin, meta.date_end) == (1335571200, 1335657599)
    assert meta.extra_contact_info == "http://acme.com/dmarc/support"
    policy = report.policy
    assert (policy.domain, policy.adkim, policy.aspf, policy.p, policy.sp, policy.pct) == (
        "example.com", "r", "r", "none", "none", 100)
    (record,) = report.records
    assert (record.source_ip, record.count, record.disposition) == ("72.150.241.94", 2, "none")
    assert (record.dkim, record.spf, record.header_from) == ("fail", "pass", "example.com")
    assert record.auth_dkim == (AuthDKIM("example.com", "fail"),)
    assert record.auth_spf == (AuthSPF("example.com", "pass"),)
    assert record.dmarc_pass and report.messages == 2


def test_defaults_and_namespaces():
    """adkim/aspf default to r, sp to p, pct to 100; a namespace prefix is ignored."""
    xml = (b'<d:feedback xmlns:d="urn:ietf:params:xml:ns:dmarc-2.0"><d:report_metadata>'
           b"<d:org_name>o</d:org_name><d:report_id>1</d:report_id><d:date_range>"
           b"<d:begin>1</d:begin><d:end>2</d:end></d:date_range></d:report_metadata>"
           b"<d:policy_published><d:domain>Example.ORG.</d:domain><d:p>reject</d:p>"
           b"</d:policy_published><d:record><d:row><d:source_ip>2001:DB8::1</d:source_ip>"
           b"<d:count>1</d:count><d:policy_evaluated><d:disposition>reject</d:disposition>"
           b"<d:dkim>fail</d:dkim><d:spf>fail</d:spf></d:policy_evaluated></d:row>"
           b"<d:identifiers><d:header_from>example.org</d:header_from></d:identifiers>"
           b"</d:record></d:feedback>")
    report = parse_report(xml)
    assert report.policy.domain == "example.org"
    assert (report.policy.adkim, report.policy.aspf, report.policy.sp, report.policy.pct) == (
        "r", "r", "reject", 100)
    assert report.records[0].source_ip == "2001:db8::1"
    assert not report.records[0].dmarc_pass and report.metadata.email == ""


@pytest.mark.parametrize("kind", ["gzip", "zip", "xml"])
def test_found_in_a_message(kind):
    """The report is found in a mail whether gzipped, zipped or plain XML."""
    xml = report_xml(rows=[("192.0.2.1", 5, "none", "pass", "fail"),
                           ("198.51.100.7", 2, "quarantine", "fail", "fail")])
    report = find_report(report_message(xml, kind))
    assert report.policy.domain == "example.org"
    assert [(r.source_ip, r.count) for r in report.records] == [
        ("192.0.2.1", 5), ("198.51.100.7", 2)]
    assert report.messages == 7


def test_report_as_the_whole_body():
    """Some reporters send the gzip as the message body itself, with no multipart."""
    message = (b"From: r@reporter.example\r\nTo: dmarc-reports@example.org\r\n"
               b"Content-Type: application/gzip\r\nContent-Transfer-Encoding: base64\r\n\r\n")
    import base64
    message += base64.encodebytes(gzipped(report_xml()))
    assert find_report(message).metadata.report_id == "r-1"


def test_magic_bytes_win_over_labels():
    """A gzip labelled octet-stream with a .zip name is still gunzipped."""
    assert decompress(gzipped(b"<x/>"), "application/octet-stream", "r.zip") == b"<x/>"
    assert decompress(zipped(b"<x/>"), "application/gzip", "r.gz") == b"<x/>"


def test_no_report():
    """A message with no gzip/zip/XML part is NoReport (a ReportError)."""
    message = b"From: a@b.example\r\nSubject: hi\r\n\r\nJust text.\r\n"
    with pytest.raises(NoReport):
        find_report(message)


def test_billion_laughs_refused():
    """Entity declarations never get parsed: the DOCTYPE itself is refused."""
    laughs = b'<!ENTITY a0 "lol">' + b"".join(
        b'<!ENTITY a%d "%s">' % (i, b"&a%d;" % (i - 1) * 10) for i in range(1, 10))
    xml = b'<?xml version="1.0"?><!DOCTYPE feedback [' + laughs + b"]><feedback>&a9;</feedback>"
    with pytest.raises(ReportError, match="DOCTYPE"):
        parse_report(xml)
    with pytest.raises(ReportError, match="DOCTYPE"):
        find_report(report_message(xml, "gzip"))


def test_external_entity_refused():
    xml = (b'<?xml version="1.0"?><!DOCTYPE f SYSTEM "file:///etc/passwd">'
           b"<feedback>&xxe;</feedback>")
    with pytest.raises(ReportError, match="DOCTYPE"):
        parse_report(xml)


def test_undeclared_entity_is_broken_xml():
    with pytest.raises(ReportError, match="not well-formed"):
        parse_report(b"<feedback>&nope;</feedback>")


def test_gzip_bomb_stops_at_the_cap(monkeypatch):
    """Decompression stops one byte past the cap: a bomb is refused without being inflated."""
    monkeypatch.setattr(reports, "MAX_XML", 1 << 20)
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)
    assert len(bomb) < 100_000
    with pytest.raises(ReportError, match="decompresses to more than"):
        decompress(bomb, "application/gzip")


def test_zip_bomb_stops_at_the_cap(monkeypatch):
    monkeypatch.setattr(reports, "MAX_XML", 1 << 20)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("r.xml", b" " * (64 << 20))
    with pytest.raises(ReportError, match="decompresses to more than"):
        decompress(buffer.getvalue(), "application/zip")


def test_zip_with_too_many_members():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for n in range(reports.MAX_ZIP_MEMBERS + 1):
            archive.writestr(f"r{n}.xml", b"<feedback/>")
    with pytest.raises(ReportError, match="members"):
        decompress(buffer.getvalue())


def test_zip_picks_the_xml_member():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", b"hello")
        archive.writestr("report.xml", b"<feedback/>")
    assert decompress(buffer.getvalue()) == b"<feedback/>"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x1f\x8b\x08\x00garbage", "broken gzip"),
        (gzipped(report_xml())[:40], "broken gzip"),
        (b"PK\x03\x04garbage", "broken zip"),
        (zipped(report_xml())[:60], "broken zip"),
    ],
)
def test_broken_archives(data, reason):
    with pytest.raises(ReportError, match=reason):
        decompress(data)


def test_labelled_gzip_without_gzip_bytes():
    with pytest.raises(ReportError, match="without the gzip magic"):
        decompress(b"<feedback/>", "application/gzip")


@pytest.mark.parametrize(
    ("xml", "reason"),
    [
        (b"<feedback><report_metadata>", "not well-formed"),
        (b"", "not well-formed"),
        (b"<report/>", "root element is <report>"),
        (report_xml().replace(b"<report_id>r-1</report_id>", b""), "report_id> is missing"),
        (report_xml().replace(b"<domain>example.org</domain><adkim>", b"<adkim>"),
         "policy_published: <domain> is missing"),
        (report_xml().replace(b"<source_ip>192.0.2.1</source_ip>", b""), "source_ip"),
        (report_xml().replace(b"192.0.2.1", b"not-an-ip"), "is no IP address"),
        (report_xml().replace(b"<count>3</count>", b"<count>-3</count>"), "not a number"),
        (report_xml().replace(b"<count>3</count>", b"<count>99999999999</count>"),
         "out of range"),
        (report_xml(begin=10, end=5), "end is before begin"),
        (report_xml().replace(b"<pct>100</pct>", b"<pct>101</pct>"), "out of range"),
        (report_xml().split(b"<record>")[0] + b"</feedback>", "no <record>"),
        (report_xml().replace(b"<identifiers>", b"<x>").replace(b"</identifiers>", b"</x>"),
         "<identifiers> is missing"),
        (report_xml(org="a" * 2000), "longer than"),
        (b"<feedback>" + b"<a>" * 20 + b"</a>" * 20 + b"</feedback>", "nested deeper"),
        (b'<?xml version="1.0" encoding="x-nonsense"?><feedback/>', "XML"),
    ],
)
def test_malformed_reports(xml, reason):
    """Each malformed report is refused with a reason naming the problem."""
    with pytest.raises(ReportError, match=reason):
        parse_report(xml)


def test_too_many_records(monkeypatch):
    monkeypatch.setattr(reports, "MAX_RECORDS", 3)
    xml = report_xml(rows=[(f"192.0.2.{n}", 1, "none", "pass", "pass") for n in range(4)])
    with pytest.raises(ReportError, match="more than 3 records"):
        parse_report(xml)


_xml_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
                    max_size=30)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_any_bytes_parse_or_fail_cleanly(data):
    """Any bytes give a report or a ReportError, through every entry point."""
    for function in (parse_report, decompress, find_report):
        try:
            function(data)
        except ReportError as error:
            assert error.reason


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_reports_parse_or_fail_cleanly(data):
    """Reports with a field's text replaced, or bytes cut out, never raise anything else."""
    xml = report_xml(rows=[("192.0.2.1", 3, "none", "pass", "fail")])
    choice = data.draw(st.sampled_from(["replace", "cut", "gzip-cut"]))
    if choice == "replace":
        old = data.draw(st.sampled_from([b"r-1", b"example.org", b"192.0.2.1", b"3", b"none",
                                         b"1790000000", b"reporter.example", b"100"]))
        new = data.draw(_xml_text).encode()
        mutated = xml.replace(old, new)
    else:
        source = xml if choice == "cut" else gzipped(xml)
        start = data.draw(st.integers(0, len(source)))
        stop = data.draw(st.integers(start, len(source)))
        mutated = source[:start] + source[stop:]
    try:
        report = parse_report(decompress(mutated))
    except ReportError as error:
        assert error.reason
    else:
        assert report.records and all(r.count >= 0 for r in report.records)
