"""SPF test vectors written from RFC 7208 (Appendix A's zone and examples, §7.4's macro
examples, and one case for each rule of §4-§6 in the style of the pyspf/OpenSPF suite).

Each :class:`Case` adds ``records`` to :data:`BASE` and evaluates ``check_host()`` for the
client ``ip`` and ``sender`` (MAIL FROM; HELO when None) against ``expected``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# RFC 7208 Appendix A: the example zones.
BASE: dict[str, list[tuple[str, Any]]] = {
    "example.com": [
        ("MX", (10, "mail-a.example.com")),
        ("MX", (20, "mail-b.example.com")),
        ("A", "192.0.2.10"),
        ("A", "192.0.2.11"),
    ],
    "amy.example.com": [("A", "192.0.2.65")],
    "bob.example.com": [("A", "192.0.2.66")],
    "mail-a.example.com": [("A", "192.0.2.129")],
    "mail-b.example.com": [("A", "192.0.2.130")],
    "www.example.com": [("CNAME", "example.com")],
    "example.org": [("MX", (10, "mail-c.example.org"))],
    "mail-c.example.org": [("A", "192.0.2.140")],
    "10.2.0.192.in-addr.arpa": [("PTR", "example.com")],
    "11.2.0.192.in-addr.arpa": [("PTR", "example.com")],
    "65.2.0.192.in-addr.arpa": [("PTR", "amy.example.com")],
    "66.2.0.192.in-addr.arpa": [("PTR", "bob.example.com")],
    "129.2.0.192.in-addr.arpa": [("PTR", "mail-a.example.com")],
    "130.2.0.192.in-addr.arpa": [("PTR", "mail-b.example.com")],
    "140.2.0.192.in-addr.arpa": [("PTR", "mail-c.example.org")],
    "3.2.1.10.in-addr.arpa": [("PTR", "bob.example.com")],  # forward does not match
}

#: Zones the test DNS server serves (names under servfail.test get SERVFAIL, a DNS error).
ORIGINS = ("example.com", "example.org", "example.net", "in-addr.arpa", "ip6.arpa")


@dataclass(frozen=True)
class Case:
    name: str
    section: str
    records: dict[str, list[tuple[str, Any]]]
    ip: str
    sender: str | None
    expected: str
    helo: str = "mail.example.net"
    explanation: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def spf(domain: str, text: str | tuple[str, ...]) -> dict[str, list[tuple[str, Any]]]:
    return {domain: [("TXT", text)]}


def merge(*parts: dict[str, list[tuple[str, Any]]]) -> dict[str, list[tuple[str, Any]]]:
    merged: dict[str, list[tuple[str, Any]]] = {}
    for part in parts:
        for name, records in part.items():
            merged.setdefault(name, []).extend(records)
    return merged


COM = "x@example.com"


def appendix_a1(record: str, allowed: list[str], refused: list[str]) -> list[Case]:
    """RFC 7208 A.1: one record at example.com, hosts it allows and hosts it refuses."""
    cases = [
        Case(f"A.1 {record} allows {ip}", "A.1", spf("example.com", record), ip, COM, "pass")
        for ip in allowed
    ]
    cases += [
        Case(f"A.1 {record} refuses {ip}", "A.1", spf("example.com", record), ip, COM, "fail")
        for ip in refused
    ]
    return cases


A4 = merge(
    spf("example.com", "v=spf1 -include:ip4._spf.%{d} -include:ptr._spf.%{d} +all"),
    spf("ip4._spf.example.com", "v=spf1 -ip4:192.0.2.0/24 +all"),
    spf("ptr._spf.example.com", "v=spf1 -ptr:example.com +all"),
)
A2 = merge(
    spf("example.org", "v=spf1 include:example.com include:example.net -all"),
    spf("la.example.org", "v=spf1 redirect=example.org"),
    spf("example.com", "v=spf1 mx -all"),
    spf("example.net", "v=spf1 ip4:192.0.2.200 -all"),
)


def chain(length: int) -> dict[str, list[tuple[str, Any]]]:
    """example.net includes i1 ... i<length> (each a DNS-querying term)."""
    records = spf("example.net", "v=spf1 include:i1.example.net -all")
    for n in range(1, length):
        records.update(spf(f"i{n}.example.net", f"v=spf1 include:i{n + 1}.example.net -all"))
    records.update(spf(f"i{length}.example.net", "v=spf1 ip4:192.0.2.1 -all"))
    return records


MANY_MX = merge(
    spf("example.net", "v=spf1 mx -all"),
    {"example.net": [("MX", (n, f"mx{n}.example.net")) for n in range(11)]},
)

CASES: list[Case] = [
    *appendix_a1("v=spf1 +all", ["192.0.2.1", "198.51.100.7"], []),
    *appendix_a1("v=spf1 a -all", ["192.0.2.10", "192.0.2.11"], ["192.0.2.65"]),
    *appendix_a1("v=spf1 a:example.org -all", [], ["192.0.2.10", "192.0.2.140"]),
    *appendix_a1("v=spf1 mx -all", ["192.0.2.129", "192.0.2.130"], ["192.0.2.10"]),
    *appendix_a1("v=spf1 mx:example.org -all", ["192.0.2.140"], ["192.0.2.129"]),
    *appendix_a1(
        "v=spf1 mx mx:example.org -all",
        ["192.0.2.129", "192.0.2.130", "192.0.2.140"],
        ["192.0.2.65"],
    ),
    *appendix_a1(
        "v=spf1 mx/30 mx:example.org/30 -all",
        ["192.0.2.131", "192.0.2.141"],
        ["192.0.2.132", "192.0.2.139"],
    ),
    *appendix_a1(
        "v=spf1 ptr -all",
        ["192.0.2.65", "192.0.2.129", "192.0.2.10"],
        ["192.0.2.140", "10.1.2.3", "192.0.2.200"],
    ),
    *appendix_a1("v=spf1 ip4:192.0.2.128/28 -all", ["192.0.2.129"], ["192.0.2.65"]),
    Case(
        "A.2 include chain via redirect passes mx of example.com",
        "A.2",
        A2,
        "192.0.2.129",
        "x@la.example.org",
        "pass",
    ),
    Case("A.2 include of example.net", "A.2", A2, "192.0.2.200", "x@la.example.org", "pass"),
    Case("A.2 neither include matches", "A.2", A2, "192.0.2.65", "x@la.example.org", "fail"),
    Case("A.4 in range and PTR under example.com", "A.4", A4, "192.0.2.65", COM, "pass"),
    Case("A.4 in range without PTR", "A.4", A4, "192.0.2.200", COM, "fail"),
    Case("A.4 PTR not validated, outside range", "A.4", A4, "10.1.2.3", COM, "fail"),
    # §4.3 / §4.4 / §4.5: record discovery.
    Case(
        "no SPF record is none",
        "4.5",
        {"example.net": [("TXT", "hello")]},
        "192.0.2.1",
        "x@example.net",
        "none",
    ),
    Case("NXDOMAIN is none", "4.3", {}, "192.0.2.1", "x@nosuch.example.net", "none"),
    Case("single-label domain is none", "4.3", {}, "192.0.2.1", "x@localhost", "none"),
    Case("empty label is none", "4.3", {}, "192.0.2.1", "x@a..example.net", "none"),
    Case(
        "two SPF records is permerror",
        "4.5",
        merge(spf("example.net", "v=spf1 +all"), spf("example.net", "v=spf1 -all")),
        "192.0.2.1",
        "x@example.net",
        "permerror",
    ),
    Case(
        "v=spf10 is not SPF",
        "4.5",
        spf("example.net", "v=spf10 -all"),
        "192.0.2.1",
        "x@example.net",
        "none",
    ),
    Case(
        "version is case-insensitive",
        "4.5",
        spf("example.net", "V=SPF1 -all"),
        "192.0.2.1",
        "x@example.net",
        "fail",
    ),
    Case(
        "record split over strings",
        "3.3",
        spf("example.net", ("v=spf1 ip4:192.0.2.1", " -all")),
        "192.0.2.1",
        "x@example.net",
        "pass",
    ),
    Case(
        "no match is neutral",
        "4.7",
        spf("example.net", "v=spf1"),
        "192.0.2.1",
        "x@example.net",
        "neutral",
    ),
    Case(
        "~all is softfail",
        "4.6.2",
        spf("example.net", "v=spf1 ~all"),
        "192.0.2.1",
        "x@example.net",
        "softfail",
    ),
    Case(
        "?all is neutral",
        "4.6.2",
        spf("example.net", "v=spf1 ?all"),
        "192.0.2.1",
        "x@example.net",
        "neutral",
    ),
    Case(
        "DNS error is temperror",
        "4.4",
        spf("example.net", "v=spf1 include:x.servfail.test -all"),
        "192.0.2.1",
        "x@example.net",
        "temperror",
    ),
    Case(
        "DNS error in a is temperror",
        "5",
        spf("example.net", "v=spf1 a:x.servfail.test -all"),
        "192.0.2.1",
        "x@example.net",
        "temperror",
    ),
    Case(
        "DNS error on the record is temperror",
        "4.4",
        {},
        "192.0.2.1",
        "x@servfail.test",
        "temperror",
    ),
    # §4.6: syntax is checked for the whole record before evaluation.
    *[
        Case(
            f"syntax error {text!r} is permerror",
            "4.6",
            spf("example.net", text),
            "192.0.2.1",
            "x@example.net",
            "permerror",
        )
        for text in [
            "v=spf1 +all ip4:192.0.2",
            "v=spf1 ip4:192.0.2.1/33 -all",
            "v=spf1 ip6:2001:db8::/129 -all",
            "v=spf1 a/33 -all",
            "v=spf1 a//129 -all",
            "v=spf1 foo:bar -all",
            "v=spf1 a:museum -all",
            "v=spf1 a:example.123 -all",
            "v=spf1 include -all",
            "v=spf1 all:foo",
            "v=spf1 -all foo=%{x}",
            "v=spf1 -all foo=%{l0}",
            "v=spf1 exists:%{c}.example.net -all",
            "v=spf1 -all bad=%",
            "v=spf1 redirect=a.example.net redirect=b.example.net",
            "v=spf1 -all exp=a.example.net exp=b.example.net",
            "v=spf1 ip4:192.0.2.1/024 -all",
        ]
    ],
    Case(
        "unknown modifier is ignored",
        "6",
        spf("example.net", "v=spf1 -all foo=bar.%{d}"),
        "192.0.2.1",
        "x@example.net",
        "fail",
    ),
    # §5: mechanisms.
    Case(
        "include of a domain without SPF is permerror",
        "5.2",
        spf("example.net", "v=spf1 include:example.org -all"),
        "192.0.2.1",
        "x@example.net",
        "permerror",
    ),
    Case(
        "include of fail does not match",
        "5.2",
        merge(
            spf("example.net", "v=spf1 include:a.example.net ?all"),
            spf("a.example.net", "v=spf1 -all"),
        ),
        "192.0.2.1",
        "x@example.net",
        "neutral",
    ),
    Case(
        "include permerror propagates",
        "5.2",
        merge(
            spf("example.net", "v=spf1 include:a.example.net +all"),
            spf("a.example.net", "v=spf1 ip4:bad"),
        ),
        "192.0.2.1",
        "x@example.net",
        "permerror",
    ),
    Case(
        "a follows the client's address family (IPv6)",
        "5.3",
        merge(spf("example.net", "v=spf1 a -all"), {"example.net": [("AAAA", "2001:db8::5")]}),
        "2001:db8::5",
        "x@example.net",
        "pass",
    ),
    Case(
        "a//64 for IPv6",
        "5.3",
        merge(spf("example.net", "v=spf1 a//64 -all"), {"example.net": [("AAAA", "2001:db8::5")]}),
        "2001:db8::ff",
        "x@example.net",
        "pass",
    ),
    Case(
        "IPv4-mapped IPv6 is IPv4",
        "5",
        spf("example.net", "v=spf1 ip4:192.0.2.0/24 -all"),
        "::ffff:192.0.2.9",
        "x@example.net",
        "pass",
    ),
    Case(
        "ip6 network",
        "5.6",
        spf("example.net", "v=spf1 ip6:2001:db8::/32 -all"),
        "2001:db8:1::1",
        "x@example.net",
        "pass",
    ),
    Case(
        "ip4 does not match IPv6",
        "5.6",
        spf("example.net", "v=spf1 ip4:0.0.0.0/0 -all"),
        "2001:db8:1::1",
        "x@example.net",
        "fail",
    ),
    Case(
        "mx with more than ten names is permerror",
        "4.6.4",
        MANY_MX,
        "192.0.2.1",
        "x@example.net",
        "permerror",
    ),
    Case(
        "exists",
        "5.7",
        merge(
            spf("example.net", "v=spf1 exists:%{ir}.bl.example.net -all"),
            {"9.2.0.192.bl.example.net": [("A", "127.0.0.2")]},
        ),
        "192.0.2.9",
        "x@example.net",
        "pass",
    ),
    Case(
        "exists uses A even for IPv6 clients",
        "5.7",
        merge(
            spf("example.net", "v=spf1 exists:%{l}.example.net -all"),
            {"ok.example.net": [("A", "127.0.0.2")]},
        ),
        "2001:db8::1",
        "ok@example.net",
        "pass",
    ),
    Case(
        "%{p} validated name",
        "7.3",
        merge(
            spf("example.net", "v=spf1 exists:%{p}.ok.example.net -all"),
            {"amy.example.com.ok.example.net": [("A", "127.0.0.2")]},
        ),
        "192.0.2.65",
        "x@example.net",
        "pass",
    ),
    # §6: modifiers.
    Case(
        "redirect",
        "6.1",
        merge(
            spf("example.net", "v=spf1 redirect=example.com"), spf("example.com", "v=spf1 a -all")
        ),
        "192.0.2.10",
        "x@example.net",
        "pass",
    ),
    Case(
        "redirect target without record is permerror",
        "6.1",
        spf("example.net", "v=spf1 redirect=example.org"),
        "192.0.2.1",
        "x@example.net",
        "permerror",
    ),
    Case(
        "redirect is ignored when all is present",
        "6.1",
        merge(
            spf("example.net", "v=spf1 -all redirect=example.com"),
            spf("example.com", "v=spf1 +all"),
        ),
        "192.0.2.1",
        "x@example.net",
        "fail",
    ),
    Case(
        "redirect to %{d} subdomain evaluates with the new domain",
        "6.1",
        merge(
            spf("example.net", "v=spf1 redirect=_spf.%{d}"),
            spf("_spf.example.net", "v=spf1 exists:%{d}.x.example.net -all"),
            {"_spf.example.net.x.example.net": [("A", "127.0.0.2")]},
        ),
        "192.0.2.1",
        "x@example.net",
        "pass",
    ),
    Case(
        "exp explanation on fail",
        "6.2",
        merge(
            spf("example.net", "v=spf1 -all exp=why.%{d}"),
            {"why.example.net": [("TXT", "%{i} may not send for %{o} (%{l}) via %{h}")]},
        ),
        "192.0.2.1",
        "joe@example.net",
        "fail",
        explanation="192.0.2.1 may not send for example.net (joe) via mail.example.net",
    ),
    Case(
        "exp lookup failure leaves no explanation",
        "6.2",
        spf("example.net", "v=spf1 -all exp=nowhere.example.net"),
        "192.0.2.1",
        "joe@example.net",
        "fail",
        explanation="",
    ),
    Case(
        "exp with two TXT records is ignored",
        "6.2",
        merge(
            spf("example.net", "v=spf1 -all exp=why.example.net"),
            {"why.example.net": [("TXT", "one"), ("TXT", "two")]},
        ),
        "192.0.2.1",
        "joe@example.net",
        "fail",
        explanation="",
    ),
    # §4.6.4: limits.
    Case("ten DNS terms are allowed", "4.6.4", chain(10), "192.0.2.1", "x@example.net", "pass"),
    Case(
        "eleven DNS terms are permerror",
        "4.6.4",
        chain(11),
        "192.0.2.1",
        "x@example.net",
        "permerror",
    ),
    Case(
        "two void lookups are allowed",
        "4.6.4",
        spf("example.net", "v=spf1 a:n1.example.net a:n2.example.net -all"),
        "192.0.2.1",
        "x@example.net",
        "fail",
    ),
    Case(
        "a third void lookup is permerror",
        "4.6.4",
        spf("example.net", "v=spf1 a:n1.example.net a:n2.example.net mx:n3.example.net -all"),
        "192.0.2.1",
        "x@example.net",
        "permerror",
    ),
    Case(
        "only the first ten PTR names are checked",
        "4.6.4",
        merge(
            spf("example.net", "v=spf1 ptr:example.net -all"),
            {"77.2.0.192.in-addr.arpa": [("PTR", f"p{n}.example.net") for n in range(11)]},
            {f"p{n}.example.net": [("A", "192.0.2.1")] for n in range(10)},
            {"p10.example.net": [("A", "192.0.2.77")]},
        ),
        "192.0.2.77",
        "x@example.net",
        "fail",
    ),
    Case(
        "a validated PTR name among ten matches",
        "5.5",
        merge(
            spf("example.net", "v=spf1 ptr:example.net -all"),
            {"78.2.0.192.in-addr.arpa": [("PTR", f"q{n}.example.net") for n in range(10)]},
            {f"q{n}.example.net": [("A", "192.0.2.1")] for n in range(9)},
            {"q9.example.net": [("A", "192.0.2.78")]},
        ),
        "192.0.2.78",
        "x@example.net",
        "pass",
    ),
    Case(
        "an expanded name over 253 characters loses labels on the left",
        "7.3",
        merge(
            spf("example.net", "v=spf1 exists:%{l}.%{l}.%{l}.%{l}.%{l}.example.net -all"),
            {".".join(["a" * 60] * 3) + ".example.net": [("A", "127.0.0.2")]},
        ),
        "192.0.2.1",
        ("a" * 60) + "@example.net",
        "pass",
    ),
    Case(
        "an IDN sender domain is checked by its A-labels",
        "4.3",
        spf("xn--bcher-kva.example.net", "v=spf1 ip4:192.0.2.1 -all"),
        "192.0.2.1",
        "x@bücher.example.net",
        "pass",
    ),
    # §2.3 / §2.4: identities.
    Case(
        "null sender checks HELO",
        "2.4",
        spf("mail.example.net", "v=spf1 ip4:192.0.2.1 -all"),
        "192.0.2.1",
        None,
        "pass",
    ),
    Case(
        "null sender with an IP-literal HELO is none",
        "2.3",
        {},
        "192.0.2.1",
        None,
        "none",
        helo="[192.0.2.1]",
    ),
    Case(
        "empty local part is postmaster",
        "4.3",
        merge(
            spf("example.net", "v=spf1 exists:%{l}.example.net -all"),
            {"postmaster.example.net": [("A", "127.0.0.2")]},
        ),
        "192.0.2.1",
        "example.net",
        "pass",
    ),
]
