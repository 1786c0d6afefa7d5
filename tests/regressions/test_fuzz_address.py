"""Found by the fuzz job (``python -m bench.fuzz``, harness ``address``).

1. Splitting the subaddress off ``jg2.+tag`` gave the base ``jg2.``, which is not a
   dot-string, so it was neither a valid local part nor the canonical (quoted) form under
   which a user ``"jg2."`` is stored, and mail to ``jg2.+tag`` missed that user.
2. A domain of IDN labels was measured in UTF-8 octets only: one of 169 octets passed
   although its A-label form, what DNS and peers see, is 307 octets.
"""

from __future__ import annotations

import pytest

from mailserver.message.address import (
    MAX_DOMAIN,
    domain_to_ascii,
    domain_to_unicode,
    normalize_domain,
    parse_address,
    parse_path,
    split_subaddress,
)

#: The input the fuzzer wrote (crash-e28a4b55...).
CRASH = "<jg2.+tag@bücr.le.>"


def test_fuzzer_input_splits_to_a_canonical_base():
    """The base of the fuzzer's path is the quoted form, which parses as a local part."""
    address = parse_path(CRASH)
    assert address is not None and address.local == "jg2.+tag"
    base, tag = split_subaddress(address.local)
    assert (base, tag) == ('"jg2."', "tag")
    assert parse_address(f"{base}@{address.domain}").local == base


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("a.+b", ('"a."', "b")),
        ("a..b+c", ('"a..b"', "c")),
        ("a\x07+c", ("a\x07", "c")),  # no quoted-string holds a control: stays as given
        ("user+tag", ("user", "tag")),
        ('"a b+c"', ('"a b"', "c")),
    ],
)
def test_bases_are_canonical_when_they_can_be(local, expected):
    """A base that is still a dot-string is kept; one that is not is quoted; a base no
    quoted-string is needed for stays as given."""
    assert split_subaddress(local) == expected


#: The second input the fuzzer wrote (crash-1d99c261...): 169 octets of UTF-8, 307 as A-labels.
LONG_IDN = (
    b"<\xc3\x82b.8.1\xc3\xb62.0\xc3\x82.81\xc3\xb62\xc3\x82b.8.1\xc3\xb62.00\xc3\x82.8.2.bb"
    b"\xc3\x82.81\xc3\xb62\xc3\x82b.20\xc3\x82.8.2.bb\xc3\x82.81\xc3\xb62\xc3\x82b.8.1\xc3\xb6"
    b"2.00\xc3\x82.8.2.bb\xc3\x82.81\xc3\xb62\xc3\x82b.8.2\xc3\xb62.0\xc3\x82.8.20\xc3\x82.8.2."
    b"bb\xc3\x82.81\xc3\x82.8.20\xc3\x82.8.2.bb\xc3\x82.81\xc3\xb62193.193.k>"
).decode()


def test_domain_length_counts_its_a_labels():
    """A domain whose U-labels fit in 255 octets but whose A-label form does not is refused
    (RFC 5321 §4.5.3.1.2 limits what peers and DNS see): normalize_domain no longer accepts
    a domain that domain_to_ascii turns into 307 octets."""
    domain = LONG_IDN[1:-1]
    assert len(domain.encode()) <= MAX_DOMAIN
    with pytest.raises(ValueError, match="A-labels"):
        normalize_domain(domain)
    with pytest.raises(ValueError):
        parse_address(f"user@{domain}")


def test_domains_up_to_the_limit_still_pass():
    """253 octets of A-labels (a domain of IDN labels) is still a domain, and both forms agree."""
    label = "bücher"  # xn--bcher-kva: 13 octets
    domain = ".".join([label] * 18)  # 18 * 13 + 17 = 251 octets as A-labels
    assert normalize_domain(domain) == domain
    assert len(domain_to_ascii(domain)) == 251
    assert domain_to_unicode(domain_to_ascii(domain)) == domain
