"""RFC 5321 paths, mailboxes and domains (``mailserver.message.address``).

Documented outcome: an ``Address`` (None for ``<>``), or ``ValueError``. Invariants (module
docstring): ``parse_address(str(address)) == address``; the normal form of a domain is a
fixed point; subaddress splitting keeps the base a valid local part.
"""

from __future__ import annotations

from bench.fuzz.harness import Target, check
from mailserver.message import address

SEEDS = (
    b"<alice@example.org>",
    b"<@a.example,@b.example:\"bob smith\"@[IPv6:2001:db8::1]>",
    b"<\"us\\\"er\"@[192.0.2.1]>",
    b"<j\xc3\xb6rg+tag@b\xc3\xbccher.example.>",
    b"<xn--bcher-kva.example@XN--BCHER-KVA.example>",
    b"<>",
)


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        parsed = address.parse_path(text)
    except ValueError:
        parsed = None
    if parsed is not None:
        check(address.parse_address(str(parsed)) == parsed, f"{text!r} does not round-trip")
        base, tag = address.split_subaddress(parsed.local)
        if tag is not None:
            check(address.parse_address(f"{base}@{parsed.domain}").local == base, "bad base")
    inner = text[1:-1] if text.startswith("<") else text
    try:
        domain = address.normalize_domain(inner)
    except ValueError:
        return
    check(address.normalize_domain(domain) == domain, f"{inner!r}: normal form not stable")
    ascii_form = address.domain_to_ascii(domain)
    check(ascii_form.isascii(), "domain_to_ascii gave non-ASCII")
    unicode_form = address.domain_to_unicode(ascii_form)
    check(address.domain_to_ascii(unicode_form) == ascii_form, "A-label/U-label round trip")


TARGET = Target("address", one_input, SEEDS)
