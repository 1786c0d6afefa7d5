"""DMARC (RFC 7489) against a real DNS server: policy discovery at the From domain and the
organisational domain (Public Suffix List), relaxed and strict alignment, sp, pct, and the
results for missing, broken and unreachable records."""

from __future__ import annotations

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st

from mailserver.msgauth.dmarc import (
    DMARCEvaluator,
    DMARCRecord,
    DMARCRecordError,
    organizational_domain,
    parse_record,
)
from mailserver.msgauth.results import AuthResult
from tests.msgauth.conftest import resolver_for, serve

ORIGINS = ("example.com", "example.net", "example.co.uk", "example.org")
RECORDS = {
    "_dmarc.example.com": [("TXT", "v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.com")],
    "_dmarc.strict.example.com": [("TXT", "v=DMARC1; p=reject; aspf=s; adkim=s")],
    "_dmarc.example.net": [("TXT", "v=DMARC1; p=reject; pct=50")],
    "_dmarc.two.example.net": [("TXT", "v=DMARC1; p=none"), ("TXT", "v=DMARC1; p=reject")],
    "_dmarc.nop.example.net": [("TXT", "v=DMARC1; rua=mailto:r@example.net")],
    "_dmarc.bad.example.net": [("TXT", "v=DMARC1; p=block")],
    "_dmarc.other.example.net": [("TXT", "some other text")],
    "_dmarc.example.co.uk": [("TXT", "v=DMARC1; p=quarantine")],
}


def spf(domain: str, result: str = "pass", prop: str = "smtp.mailfrom") -> AuthResult:
    return AuthResult("spf", result, ((prop, domain),))


def dkim(domain: str, result: str = "pass") -> AuthResult:
    return AuthResult("dkim", result, (("header.d", domain), ("header.s", "sel")))


@pytest.fixture
def evaluator():
    server = serve(RECORDS, ORIGINS)
    yield lambda **kw: DMARCEvaluator(resolver_for(server), **kw)
    pytest_twisted.blockon(server.stop())


CASES = [
    # (From domain, SPF, DKIM, result, policy applied) — RFC 7489 section in the id.
    ("example.com", spf("bounce.example.com"), [], "pass", "none"),  # §3.1.2 relaxed SPF
    ("example.com", spf("example.com", prop="smtp.helo"), [], "pass", "none"),  # null sender
    ("example.com", spf("example.com", "softfail"), [], "fail", "reject"),  # §4.2 only pass
    ("example.com", None, [dkim("mail.example.com")], "pass", "none"),  # §3.1.1 relaxed DKIM
    ("example.com", None, [dkim("example.com", "fail")], "fail", "reject"),
    ("example.com", spf("evil.test"), [dkim("evil.test")], "fail", "reject"),  # unaligned
    ("example.com", spf("evil.test"), [dkim("evil.test"), dkim("example.com")], "pass", "none"),
    ("sub.example.com", spf("evil.test"), [], "fail", "quarantine"),  # §6.3 sp at org domain
    ("sub.example.com", spf("example.com"), [], "pass", "none"),
    ("strict.example.com", spf("bounce.strict.example.com"), [], "fail", "reject"),  # aspf=s
    ("strict.example.com", None, [dkim("x.strict.example.com")], "fail", "reject"),  # adkim=s
    ("strict.example.com", spf("strict.example.com"), [], "pass", "none"),
    ("example.co.uk", spf("mail.example.co.uk"), [], "pass", "none"),  # PSL: co.uk is a suffix
    ("example.co.uk", spf("other.co.uk"), [], "fail", "quarantine"),
    ("example.org", spf("evil.test"), [], "none", "none"),  # no record anywhere
    ("nosuch.example.org", spf("evil.test"), [], "none", "none"),
    ("two.example.net", None, [], "permerror", "none"),  # §6.6.3: more than one record
    ("bad.example.net", None, [], "permerror", "none"),  # bad p, no rua
    ("nop.example.net", None, [], "fail", "none"),  # missing p with rua: p=none
    ("other.example.net", None, [], "fail", "reject"),  # not DMARC: org domain's record
    ("x.servfail.test", spf("x.servfail.test"), [], "temperror", "none"),
    # A temporary error of a check that could have aligned is no evidence: temperror.
    ("example.com", spf("example.com", "temperror"), [], "temperror", "none"),
    ("example.com", None, [dkim("mail.example.com", "temperror")], "temperror", "none"),
    ("example.com", None, [AuthResult("dkim", "temperror")], "temperror", "none"),
    (
        "example.com",
        spf("evil.test", "temperror"),
        [dkim("evil.test", "temperror")],
        "fail",
        "reject",
    ),
]


@pytest.mark.parametrize(("domain", "spf_result", "dkim_results", "result", "policy"), CASES)
@pytest_twisted.ensureDeferred
async def test_evaluate(evaluator, domain, spf_result, dkim_results, result, policy) -> None:
    """Each From domain and set of SPF/DKIM results gives the expected DMARC result and the
    policy to apply (pct sampling always inside the percentage here)."""
    outcome = await evaluator(random=lambda: 0.0).evaluate(domain, spf_result, dkim_results)
    assert (outcome.result.result, outcome.policy) == (result, policy), outcome.result.reason
    assert outcome.result.method == "dmarc"
    assert outcome.result.get("header.from") == domain
    assert outcome.reject == (policy == "reject")


@pytest_twisted.ensureDeferred
async def test_pct_samples_failures(evaluator) -> None:
    """§6.6.4: pct=50: a failure outside the sampled half gets the next weaker policy."""
    inside = await evaluator(random=lambda: 0.49).evaluate("example.net", None, [])
    outside = await evaluator(random=lambda: 0.5).evaluate("example.net", None, [])
    assert (inside.policy, outside.policy) == ("reject", "quarantine")
    assert outside.result.reason == "p=reject dis=quarantine"


def test_parse_record_defaults_and_fallbacks() -> None:
    """§6.3: defaults r/r/100; bad optional values fall back; unknown tags are ignored."""
    assert parse_record("v=DMARC1; p=none") == DMARCRecord("none")
    assert parse_record(
        "v=DMARC1;p=Reject; sp=bogus; adkim=s; aspf=x; pct=101; x=y; rua=mailto:a@b.example!10m"
    ) == DMARCRecord("reject", None, "s", "r", 100, ("mailto:a@b.example",))
    for bad in ("p=reject; v=DMARC1", "v=DMARC2; p=reject", "v=DMARC1; p=reject; junk", "v=dmarc1"):
        with pytest.raises(DMARCRecordError):
            parse_record(bad)


def test_organizational_domain() -> None:
    """§3.2 with the bundled Public Suffix List."""
    from publicsuffixlist import PublicSuffixList

    psl = PublicSuffixList()
    assert organizational_domain("a.b.example.com", psl) == "example.com"
    assert organizational_domain("mail.example.co.uk", psl) == "example.co.uk"
    assert organizational_domain("co.uk", psl) == "co.uk"


@given(st.text(max_size=80))
def test_parser_never_crashes(text: str) -> None:
    """Any record text parses or raises DMARCRecordError."""
    try:
        parse_record("v=DMARC1; " + text)
    except DMARCRecordError:
        pass
