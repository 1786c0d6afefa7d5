"""Tests for RFC 5321 mailboxes and paths, IDNA domains and subaddresses."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mailserver.message.address import (
    domain_to_ascii,
    domain_to_unicode,
    normalize_domain,
    parse_address,
    parse_path,
    quote_local,
    split_subaddress,
    unquote_local,
)
from mailserver.types import Address
from tests.strategies import smtp as sst


@pytest.mark.parametrize(
    ("text", "local", "domain"),
    [
        ("user@example.org", "user", "example.org"),
        ("User.Name@Example.ORG", "User.Name", "example.org"),
        ("user@example.org.", "user", "example.org"),
        ("a!#$%&'*+/=?^_`{|}~-z@x.org", "a!#$%&'*+/=?^_`{|}~-z", "x.org"),
        ('"john doe"@example.org', '"john doe"', "example.org"),
        ('"john"@example.org', "john", "example.org"),
        ('"a\\"b"@example.org', '"a\\"b"', "example.org"),
        ('"a\\b"@example.org', "ab", "example.org"),
        ('"x@y"@example.org', '"x@y"', "example.org"),
        ("üser@bücher.de", "üser", "bücher.de"),
        ("用户@例子.广告", "用户", "例子.广告"),
        ("user@BÜCHER.de", "user", "bücher.de"),
        ("user@xn--bcher-kva.de", "user", "xn--bcher-kva.de"),
        ("user@[127.0.0.1]", "user", "[127.0.0.1]"),
        ("user@[IPv6:2001:DB8:0::1]", "user", "[IPv6:2001:db8::1]"),
        ("user@[ipv6:::1]", "user", "[IPv6:::1]"),
        ("user@localhost", "user", "localhost"),
    ],
)
def test_parse_address_valid(text, local, domain):
    """A valid mailbox parses to its canonical local part and normalised domain."""
    assert parse_address(text) == Address(local, domain)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty address"),
        ("user", "missing '@'"),
        ("user@", "empty domain"),
        ("@example.org", "empty local part"),
        ("a..b@example.org", "invalid local part"),
        (".a@example.org", "invalid local part"),
        ("a.@example.org", "invalid local part"),
        ("a b@example.org", "invalid local part"),
        ('"unterminated@example.org', "quoted local part"),
        ('"a"b@example.org', "missing '@'"),
        ('"tab\there"@example.org', "quoted local part"),
        ("user@example..org", "empty domain label"),
        ("user@-example.org", "invalid domain label"),
        ("user@example-.org", "invalid domain label"),
        ("user@exa_mple.org", "invalid domain label"),
        ("user@xn--zz.org", "invalid IDNA A-label"),
        ("user@[1.2.3]", "invalid IPv4"),
        ("user@[256.1.1.1]", "invalid IPv4"),
        ("user@[IPv6:1::2::3]", "invalid IPv6"),
        ("user@[tag:foo]", "unsupported address literal"),
        ("user@" + "a" * 64 + ".org", "63 octets"),
        ("user@a。b", "IDNA full stop"),
        ("<user@example.org>", "invalid local part"),
    ],
)
def test_parse_address_invalid(text, message):
    """An invalid mailbox raises ValueError with a short message naming the problem."""
    with pytest.raises(ValueError, match=message):
        parse_address(text)


def test_local_part_limit():
    """A local part of 64 octets is accepted and one of 65 is refused (RFC 5321 §4.5.3.1.1)."""
    assert parse_address("a" * 64 + "@x.org").local == "a" * 64
    with pytest.raises(ValueError, match="64 octets"):
        parse_address("a" * 65 + "@x.org")
    with pytest.raises(ValueError, match="64 octets"):
        parse_address("é" * 33 + "@x.org")  # 66 octets in UTF-8


def test_domain_limit():
    """A domain of 255 octets is accepted and one of 256 is refused (RFC 5321 §4.5.3.1.2)."""
    domain = ".".join(["a" * 63] * 4)[:255]
    assert len(domain) == 255
    assert parse_address("u@" + domain).domain == domain
    with pytest.raises(ValueError, match="255 octets"):
        parse_address("u@" + domain + "a")


def test_path_limit():
    """A path of 256 octets is accepted and one of 257 is refused (RFC 5321 §4.5.3.1.3)."""
    domain = ".".join(["d" * 62] * 4)[:249]
    path = "<user@" + domain + ">"
    assert len(path) == 256
    assert parse_path(path) == Address("user", domain)
    with pytest.raises(ValueError, match="256 octets"):
        parse_path("<users@" + domain + ">")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<>", None),
        ("<user@example.org>", Address("user", "example.org")),
        ("<@a.example,@b.example:user@c.example>", Address("user", "c.example")),
        ("<@relay.example:user@c.example>", Address("user", "c.example")),
        ('<"a:b"@example.org>', Address('"a:b"', "example.org")),
        ("<user@[IPv6:::1]>", Address("user", "[IPv6:::1]")),
    ],
)
def test_parse_path_valid(text, expected):
    """A reverse or forward path parses to its mailbox; the null path gives None and a
    source route is dropped."""
    assert parse_path(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user@example.org", "angle brackets"),
        ("<user@example.org", "angle brackets"),
        ("<", "angle brackets"),
        ("", "angle brackets"),
        ("<@a.example user@c.example>", "source route without ':'"),
        ("<@a..b:user@c.example>", "empty domain label"),
        ("<a.example:user@c.example>", "invalid local part"),
        ("<@a,b:user@c.example>", "invalid source route"),
        ("< user@example.org>", "invalid local part"),
    ],
)
def test_parse_path_invalid(text, message):
    """An invalid path raises ValueError with a short message."""
    with pytest.raises(ValueError, match=message):
        parse_path(text)


def test_domain_to_ascii_and_back():
    """Domains convert between U-labels and A-labels with the IDNA codec."""
    assert domain_to_ascii("Bücher.DE.") == "xn--bcher-kva.de"
    assert domain_to_ascii("example.org") == "example.org"
    assert domain_to_ascii("[127.0.0.1]") == "[127.0.0.1]"
    assert domain_to_unicode("xn--bcher-kva.de") == "bücher.de"
    assert domain_to_unicode("bücher.de") == "bücher.de"


@pytest.mark.parametrize("domain", ["", "a..b", "xn--zz.de", "-a.de", "a" * 64 + ".de", "."])
def test_domain_conversion_rejects_invalid(domain):
    """Converting an invalid domain raises ValueError."""
    with pytest.raises(ValueError):
        domain_to_ascii(domain)
    with pytest.raises(ValueError):
        domain_to_unicode(domain)


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("user+tag", ("user", "tag")),
        ("user+tag+more", ("user", "tag+more")),
        ("user+", ("user", "")),
        ("+x", ("+x", None)),
        ("user", ("user", None)),
        ('"john doe+tag"', ('"john doe"', "tag")),
        ('"john+doe"', ("john", "doe")),
    ],
)
def test_split_subaddress(local, expected):
    """A local part splits at the first separator unless the base would be empty."""
    assert split_subaddress(local) == expected


def test_split_subaddress_custom_separator():
    """The separator is a parameter; an empty separator is refused."""
    assert split_subaddress("user-tag", "-") == ("user", "tag")
    assert split_subaddress("user+tag", "-") == ("user+tag", None)
    with pytest.raises(ValueError):
        split_subaddress("user", "")


def test_quote_and_unquote_local():
    """quote_local gives the canonical SMTP form and unquote_local its plain text."""
    assert quote_local("john.doe") == "john.doe"
    assert quote_local("john doe") == '"john doe"'
    assert quote_local('a"b\\c') == '"a\\"b\\\\c"'
    assert unquote_local('"a\\"b\\\\c"') == 'a"b\\c'
    assert unquote_local("plain") == "plain"
    with pytest.raises(ValueError):
        quote_local("bell\x07")


@given(st.text(max_size=80))
@settings(max_examples=400)
def test_parse_address_raises_only_value_error(text):
    """parse_address on arbitrary text returns an Address or raises ValueError."""
    try:
        result = parse_address(text)
    except ValueError:
        return
    assert isinstance(result, Address)


@given(st.text(alphabet=st.sampled_from('<>@,:."\\[]abc-+ é'), max_size=40))
@settings(max_examples=400)
def test_parse_path_raises_only_value_error(text):
    """parse_path on arbitrary path-like text returns an Address or None, or raises ValueError."""
    try:
        result = parse_path(text)
    except ValueError:
        return
    assert result is None or isinstance(result, Address)


@given(local=sst.dot_strings | sst.quoted_locals, domain=sst.domains)
@settings(max_examples=300)
def test_address_round_trip(local, domain):
    """str() of a valid canonical Address parses back to the same Address."""
    assume(len(local.encode()) <= 64)
    address = Address(local, domain)
    assert parse_address(str(address)) == address
    assert parse_path(f"<{address}>") == address


def test_kept_domain_forms_answer_as_the_first_time():
    """normalize_domain answers a repeated domain as it did the first time (the same normal
    form), and a refused domain is refused again every time."""
    first = [normalize_domain(name) for name in ("Example.ORG.", "bücher.example", "[1.2.3.4]")]
    again = [normalize_domain(name) for name in ("Example.ORG.", "bücher.example", "[1.2.3.4]")]
    assert first == again == ["example.org", "bücher.example", "[1.2.3.4]"]
    for _ in range(2):
        with pytest.raises(ValueError):
            normalize_domain("bad_label.example")
