"""The DNS records a domain publishes (mailserver.msgauth.records): exact zone-file lines from
the settings, TXT strings of at most 255 bytes, an MTA-STS policy and id the spool's own
RFC 8461 parser accepts, ports from the listeners, and the semantic judging of what DNS has."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from mailserver.config import load
from mailserver.msgauth.keys import DKIMKey, generate_pem
from mailserver.msgauth.records import (
    SERVICES,
    Record,
    Settings,
    Verdict,
    autoconfig_xml,
    judge,
    mta_sts_id,
    mta_sts_policy,
    service_port,
    settings_from_config,
    txt_strings,
    wanted_records,
)
from mailserver.spool.mtasts import parse_policy, parse_txt

RSA = DKIMKey("example.org", "s1", "rsa", generate_pem("rsa"))
ED = DKIMKey("example.org", "s1", "ed25519", generate_pem("ed25519"))
PORTS = {s.label: s.port for s in SERVICES} | {"_pop3._tcp": None}
SETTINGS = Settings(
    domain="example.org",
    mx_host="mail.example.org",
    ipv4=("192.0.2.1",),
    ipv6=("2001:db8::1",),
    dkim=(RSA, ED),
    ports=PORTS,
)


def unquote(zone_data: str) -> bytes:
    """The bytes of a zone line's quoted strings joined (RFC 1035 §5.1 escapes undone)."""
    out = bytearray()
    for string in re.findall(r'"((?:[^"\\]|\\.)*)"', zone_data):
        out += re.sub(
            rb"\\(\d{3}|.)",
            lambda m: bytes([int(m.group(1))]) if m.group(1).isdigit() else m.group(1),
            string.encode("latin-1"),
        )
    return bytes(out)


def by_kind(records: list[Record], kind: str) -> list[Record]:
    return [r for r in records if r.kind == kind]


def test_zone_lines_of_every_kind():
    records = wanted_records(SETTINGS)
    lines = [r.zone_line() for r in records if r.kind != "DKIM"]
    policy_id = mta_sts_id(mta_sts_policy(SETTINGS))
    assert lines == [
        "example.org. IN MX 10 mail.example.org.",
        'example.org. IN TXT "v=spf1 mx ip4:192.0.2.1 ip6:2001:db8::1 -all"',
        "mail.example.org. IN A 192.0.2.1",
        "mail.example.org. IN AAAA 2001:db8::1",
        '_dmarc.example.org. IN TXT "v=DMARC1; p=quarantine; '
        'rua=mailto:dmarc-reports@example.org; adkim=s; aspf=s"',
        f'_mta-sts.example.org. IN TXT "v=STSv1; id={policy_id}"',
        '_smtp._tls.example.org. IN TXT "v=TLSRPTv1; rua=mailto:tls-reports@example.org"',
        "_submission._tcp.example.org. IN SRV 0 1 587 mail.example.org.",
        "_submissions._tcp.example.org. IN SRV 0 1 465 mail.example.org.",
        "_imap._tcp.example.org. IN SRV 0 1 143 mail.example.org.",
        "_imaps._tcp.example.org. IN SRV 0 1 993 mail.example.org.",
        "_pop3._tcp.example.org. IN SRV 0 0 0 .",  # RFC 6186 §3.4: not offered
        "_pop3s._tcp.example.org. IN SRV 0 1 995 mail.example.org.",
    ]


def test_dkim_records_are_the_keys_records_in_255_byte_strings():
    rsa, ed = by_kind(wanted_records(SETTINGS), "DKIM")
    assert (rsa.name, ed.name) == ("s1._domainkey.example.org", "s1-ed25519._domainkey.example.org")
    line = rsa.zone_line()
    assert line.startswith('s1._domainkey.example.org. IN TXT ( "v=DKIM1; k=rsa; p=MIIB')
    assert line.endswith('" )')
    strings = re.findall(r'"([^"]*)"', line)
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)
    assert "".join(strings) == RSA.dns_record()
    assert ed.zone_line() == (
        f's1-ed25519._domainkey.example.org. IN TXT ( "{ED.dns_record()}" )'
    )


def test_options_change_dmarc_tlsrpt_and_mta_sts():
    settings = Settings(
        "example.org", "mx.example.net", dmarc_policy="reject", dmarc_rua="d@example.org",
        tlsrpt_rua="t@example.org", mta_sts_mode="enforce",
    )
    values = {r.kind: r.value for r in wanted_records(settings)}
    assert values["SPF"] == "v=spf1 mx -all"
    assert values["DMARC"] == "v=DMARC1; p=reject; rua=mailto:d@example.org; adkim=s; aspf=s"
    assert values["TLSRPT"] == "v=TLSRPTv1; rua=mailto:t@example.org"
    assert "DMARC-rua" not in values  # reports stay in the organisational domain
    assert values["MX"] == "10 mx.example.net"
    assert mta_sts_policy(settings) == (
        "version: STSv1\r\nmode: enforce\r\nmx: mx.example.net\r\nmax_age: 604800\r\n"
    )


def test_dmarc_reports_elsewhere_need_the_receivers_consent():
    settings = Settings("mail.example.co.uk", "mx.example.net", dmarc_rua="d@reports.example.net")
    (consent,) = by_kind(wanted_records(settings), "DMARC-rua")
    assert consent.zone_line() == (
        'mail.example.co.uk._report._dmarc.reports.example.net. IN TXT "v=DMARC1"'
    )  # RFC 7489 §7.1
    assert judge(consent, ["v=DMARC1;"]).ok
    assert judge(consent, [], exists=False).state == "missing"
    same_org = Settings("mail.example.co.uk", "mx.example.net", dmarc_rua="d@example.co.uk")
    assert not by_kind(wanted_records(same_org), "DMARC-rua")


def test_mta_sts_policy_and_id_pass_the_spools_rfc_8461_parsers():
    for mode in ("testing", "enforce"):
        settings = Settings("example.org", "mail.example.org", mta_sts_mode=mode)
        policy = parse_policy(mta_sts_policy(settings))
        assert (policy.mode, policy.mx, policy.max_age) == (mode, ("mail.example.org",), 604800)
        (txt,) = by_kind(wanted_records(settings), "MTA-STS")
        assert parse_txt([txt.value]) == mta_sts_id(mta_sts_policy(settings))
    testing, enforce = (
        mta_sts_id(mta_sts_policy(Settings("example.org", "m.example.org", mta_sts_mode=m)))
        for m in ("testing", "enforce")
    )
    assert testing != enforce  # a changed policy gets a new id (RFC 8461 §3.1)


@given(st.text(max_size=800))
def test_txt_strings_round_trip_in_255_byte_pieces(text):
    strings = txt_strings(text)
    for string in strings:
        assert len(unquote(string)) <= 255
        assert string.isascii() and "\n" not in string
    assert unquote(" ".join(strings)) == text.encode("utf-8")


@pytest.mark.parametrize(
    ("endpoints", "port"),
    [
        (("tcp:587",), 587),
        (("tcp:1587:interface=192.0.2.1",), 1587),
        (("tcp:port=2525",), 2525),
        (("tcp:2587:interface=127.0.0.1",), 587),  # local only: clients reach a proxy
        (("tcp6:2587:interface=\\:\\:1",), 587),
        (("tcp:2587:interface=localhost", "tcp:10587"), 10587),
        (("systemd:domain=INET:index=0",), 587),
        ((), None),  # not offered
    ],
)
def test_service_port_from_listeners(endpoints, port):
    assert service_port(endpoints, 587) == port


def test_settings_from_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        '[server]\nhostname = "Mail.Example.org."\npublic_ipv4 = ["192.0.2.7"]\n'
        'public_ipv6 = ["2001:DB8:0::7"]\n'
        '[imap]\nlisten = ["tcp:143"]\ntls_listen = []\n'
    )
    settings = settings_from_config(load(str(path)), "Example.ORG.", (RSA,), dmarc_policy="none")
    assert (settings.domain, settings.mx_host) == ("example.org", "mail.example.org")
    assert (settings.ipv4, settings.ipv6) == (("192.0.2.7",), ("2001:db8::7",))
    assert settings.dkim == (RSA,) and settings.dmarc_policy == "none"
    assert settings.ports["_imap._tcp"] == 143
    assert settings.ports["_imaps._tcp"] is None
    assert settings.ports["_submission._tcp"] == 587  # the embedded default is local-only


def test_autoconfig_lists_the_offered_services():
    root = ET.fromstring(autoconfig_xml(SETTINGS))
    provider = root.find("emailProvider")
    assert provider.get("id") == "example.org"
    servers = [
        (s.get("type"), s.findtext("port"), s.findtext("socketType"), s.findtext("hostname"))
        for s in provider
        if s.tag in ("incomingServer", "outgoingServer")
    ]
    assert servers == [
        ("imap", "993", "SSL", "mail.example.org"),
        ("imap", "143", "STARTTLS", "mail.example.org"),
        ("pop3", "995", "SSL", "mail.example.org"),  # plain pop3 is not offered
        ("smtp", "465", "SSL", "mail.example.org"),
        ("smtp", "587", "STARTTLS", "mail.example.org"),
    ]


def wanted(kind: str) -> Record:
    return by_kind(wanted_records(SETTINGS), kind)[0]


def verdict(kind: str, *values, exists: bool = True) -> str:
    return judge(wanted(kind), values, exists).line()


def test_absent_names_and_other_txt_records_are_missing():
    for kind in ("MX", "SPF", "DKIM", "DMARC", "MTA-STS", "TLSRPT", "SRV", "host"):
        assert verdict(kind, exists=False).endswith(": missing"), kind
    assert verdict("SPF", "google-site-verification=abc") == "SPF example.org TXT: missing"
    assert verdict("DMARC", "v=spf1 -all").endswith(": missing")
    failed = Verdict(wanted("MX"), "failed", "MX example.org: SERVFAIL")
    assert failed.line() == "MX example.org MX: failed: MX example.org: SERVFAIL"
    assert not failed.ok


def test_spf_is_compared_as_a_set_of_terms():
    assert verdict("SPF", "v=spf1 ip6:2001:db8::1 +mx ip4:192.0.2.1 -all") == (
        "SPF example.org TXT: ok"
    )
    extra = "V=SPF1 mx ip4:192.0.2.1 ip6:2001:db8::1 include:_spf.example.net -all"
    assert verdict("SPF", extra) == "SPF example.org TXT: ok (also allows include:_spf.example.net)"
    want = '"v=spf1 mx ip4:192.0.2.1 ip6:2001:db8::1 -all"'
    assert verdict("SPF", "v=spf1 mx ip4:192.0.2.1 ip6:2001:db8::1 ~all") == (
        f'SPF example.org TXT: wrong: found "v=spf1 mx ip4:192.0.2.1 ip6:2001:db8::1 ~all", '
        f"want {want}"
    )
    assert verdict("SPF", "v=spf1 mx -all") == (
        f'SPF example.org TXT: wrong: found "v=spf1 mx -all", want {want}'
    )
    assert verdict("SPF", "v=spf1 mx", "v=spf1 -all") == (
        'SPF example.org TXT: wrong: found 2 SPF records (a permerror) "v=spf1 mx" + '
        f'"v=spf1 -all", want {want}'
    )


def test_dmarc_is_compared_by_tag():
    assert verdict(
        "DMARC", "v=DMARC1;aspf=s; adkim=S; p=quarantine; pct=100; "
        "rua=mailto:other@example.net,mailto:DMARC-reports@example.org!10m"
    ).endswith(": ok")
    for text in (
        "v=DMARC1; p=none; rua=mailto:dmarc-reports@example.org; adkim=s; aspf=s",
        "v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@example.org",  # relaxed by default
        "v=DMARC1; p=quarantine; adkim=s; aspf=s",  # no reports to us
    ):
        assert verdict("DMARC", text) == (
            f'DMARC _dmarc.example.org TXT: wrong: found "{text}", want '
            '"v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@example.org; adkim=s; aspf=s"'
        )


def test_dkim_is_compared_by_key():
    record = RSA.dns_record()
    folded = record[:100] + " " + record[100:200] + "\t" + record[200:]
    assert verdict("DKIM", folded).endswith(": ok")  # whitespace in p= is folding
    other = DKIMKey("example.org", "s1", "rsa", generate_pem("rsa")).dns_record()
    found, want = other.split("p=")[1], record.split("p=")[1]
    assert verdict("DKIM", other) == (
        f'DKIM s1._domainkey.example.org TXT: wrong: found "v=DKIM1; k=rsa; '
        f'p={found[:8]}...{found[-12:]}", want "v=DKIM1; k=rsa; p={want[:8]}...{want[-12:]}"'
    )
    assert ": wrong: " in verdict("DKIM", record.replace("k=rsa", "k=ed25519"))
    assert ": wrong: " in verdict("DKIM", "v=DKIM1; k=rsa; p=")  # revoked


def test_mx_must_be_among_the_most_preferred():
    assert verdict("MX", (10, "mail.example.org")).endswith(": ok")
    assert verdict("MX", (20, "backup.example.net"), (10, "MAIL.example.org.")).endswith(": ok")
    assert verdict("MX", (5, "other.example.net"), (10, "mail.example.org")) == (
        "MX example.org MX: wrong: found 5 other.example.net, 10 mail.example.org, "
        "want 10 mail.example.org"
    )


def test_srv_addresses_mta_sts_and_tlsrpt():
    assert verdict("SRV", "5 0 587 Mail.example.org.").endswith(": ok")
    assert verdict("SRV", "0 1 2587 mail.example.org.") == (
        "SRV _submission._tcp.example.org SRV: wrong: found 0 1 2587 mail.example.org., "
        "want 0 1 587 mail.example.org"
    )
    pop3 = by_kind(wanted_records(SETTINGS), "SRV")[4]
    assert judge(pop3, ["0 0 0 ."]).ok
    assert verdict("host", "192.0.2.1", "192.0.2.9").endswith(": ok")
    assert verdict("host", "192.0.2.9").endswith(": wrong: found 192.0.2.9, want 192.0.2.1")
    sts = wanted("MTA-STS")
    assert judge(sts, [sts.value.replace("; ", ";")]).ok
    assert judge(sts, ["v=STSv1; id=20260101"]).state == "wrong"
    assert judge(sts, [sts.value, "v=STSv1; id=2"]).state == "wrong"  # §3.1: exactly one
    both = "v=TLSRPTv1;rua=mailto:x@example.net,mailto:tls-reports@example.org"
    assert verdict("TLSRPT", both).endswith(": ok")
    assert ": wrong: " in verdict("TLSRPT", "v=TLSRPTv1; rua=https://reports.example.net/")


TXT_TEXT = st.one_of(
    st.text(max_size=200),
    st.builds(
        lambda v, rest: f"v={v};{rest}", st.sampled_from(["spf1", "DMARC1", "STSv1", "DKIM1",
                                                         "TLSRPTv1"]), st.text(max_size=100)
    ),
    st.builds(lambda rest: f"v=spf1 {rest}", st.text(max_size=100)),
)


WANTED = wanted_records(SETTINGS)


@hypothesis_settings(deadline=None)
@given(st.lists(TXT_TEXT, max_size=3), st.lists(st.text(max_size=40), max_size=3))
def test_any_published_text_gets_a_verdict_never_an_exception(texts, srv_texts):
    """Whatever a domain publishes, each record is judged ok, missing or wrong."""
    for record in WANTED:
        if record.rdtype == "TXT":
            assert judge(record, texts).state in ("ok", "missing", "wrong")
        elif record.rdtype == "SRV":
            assert judge(record, srv_texts).state in ("ok", "missing", "wrong")
