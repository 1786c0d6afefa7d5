"""SPF (RFC 7208) against a real DNS server: the RFC's Appendix A examples, one case per rule
of §4-§6 (tests/msgauth/spf_vectors.py), the §7.4 macro examples, and the parser on any input."""

from __future__ import annotations

import ipaddress

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st

from mailserver.msgauth.results import AuthResult
from mailserver.msgauth.spf import (
    SPFChecker,
    SPFError,
    expand_macros,
    parse_macro_string,
    parse_record,
)
from tests.msgauth.conftest import resolver_for, serve
from tests.msgauth.spf_vectors import BASE, CASES, ORIGINS, Case, merge


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest_twisted.ensureDeferred
async def test_vector(case: Case) -> None:
    """Each RFC 7208 vector gives its expected result (and explanation, when it has one)."""
    server = serve(merge(BASE, case.records), ORIGINS)
    try:
        checker = SPFChecker(resolver_for(server), receiver="mx.example.org")
        sender = case.sender
        if sender is None:
            domain, identity = case.helo, f"postmaster@{case.helo}"
        else:
            domain = sender.rpartition("@")[2]
            identity = sender if "@" in sender else f"postmaster@{sender}"
        verdict = await checker.check_host(case.ip, domain, identity, case.helo)
        assert verdict.result == case.expected, verdict.detail
        if case.explanation is not None:
            assert verdict.explanation == case.explanation
        result = await checker.check(case.ip, sender, case.helo)
        assert result.result == case.expected
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_check_reports_identity() -> None:
    """check() names the checked identity: smtp.mailfrom's domain, or smtp.helo for <>."""
    server = serve(
        merge(
            BASE,
            {
                "example.net": [("TXT", "v=spf1 -all exp=why.example.net")],
                "why.example.net": [("TXT", "see %{d}")],
            },
        ),
        ORIGINS,
    )
    try:
        checker = SPFChecker(resolver_for(server))
        assert await checker.check("192.0.2.1", "Joe@Example.NET", "h.example.org") == AuthResult(
            "spf", "fail", (("smtp.mailfrom", "example.net"),), reason="see example.net"
        )
        helo = await checker.check("192.0.2.1", None, "Example.net")
        assert (helo.result, helo.properties) == ("fail", (("smtp.helo", "example.net"),))
        bad = await checker.check("not-an-ip", "a@example.net", "h")
        assert bad.result == "none"
    finally:
        await server.stop()


# RFC 7208 §7.4: sender strong-bad@email.example.com from 192.0.2.3 / 2001:db8::cb01.
MACROS = [
    ("%{s}", "strong-bad@email.example.com"),
    ("%{o}", "email.example.com"),
    ("%{d}", "email.example.com"),
    ("%{d4}", "email.example.com"),
    ("%{d3}", "email.example.com"),
    ("%{d2}", "example.com"),
    ("%{d1}", "com"),
    ("%{dr}", "com.example.email"),
    ("%{d2r}", "example.email"),
    ("%{l}", "strong-bad"),
    ("%{l-}", "strong.bad"),
    ("%{lr}", "strong-bad"),
    ("%{lr-}", "bad.strong"),
    ("%{l1r-}", "strong"),
    ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
    ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
    ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
    ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
    ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
    ("%%%_%-", "% %20"),
    ("%{S}", "strong-bad%40email.example.com"),
]


@pytest.mark.parametrize(("spec", "expected"), MACROS)
def test_macro_examples(spec: str, expected: str) -> None:
    """RFC 7208 §7.4's IPv4 examples expand exactly as the RFC shows."""
    assert (
        expand_macros(
            parse_macro_string(spec),
            sender="strong-bad@email.example.com",
            domain="email.example.com",
            ip=ipaddress.ip_address("192.0.2.3"),
            helo="mx.example.org",
        )
        == expected
    )


def test_macro_ipv6_example() -> None:
    """RFC 7208 §7.4: the IPv6 client's %{ir}.%{v} is its reversed nibbles and 'ip6'."""
    assert (
        expand_macros(
            parse_macro_string("%{ir}.%{v}._spf.%{d2}"),
            sender="strong-bad@email.example.com",
            domain="email.example.com",
            ip=ipaddress.ip_address("2001:db8::cb01"),
            helo="mx.example.org",
        )
        == "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
    )


def test_exp_only_macros() -> None:
    """c, r and t are for explanations only (§7.2): elsewhere they are a syntax error."""
    with pytest.raises(SPFError):
        parse_macro_string("%{r}")
    text = expand_macros(
        parse_macro_string("%{c} %{r} %{t}", exp=True),
        sender="a@b.example",
        domain="b.example",
        ip=ipaddress.ip_address("2001:db8::1"),
        helo="h",
        receiver="mx.example.org",
        now=1234.5,
    )
    assert text == "2001:db8::1 mx.example.org 1234"


@given(st.text(max_size=60))
def test_parser_never_crashes(text: str) -> None:
    """Any record text either parses or raises SPFError (never another exception)."""
    try:
        parse_record("v=spf1 " + text)
    except SPFError:
        pass
    with pytest.raises(SPFError):
        parse_record("spf2.0/pra " + text)
