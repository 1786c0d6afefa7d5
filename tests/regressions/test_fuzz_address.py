"""Found by the fuzz job (``python -m bench.fuzz``, harness ``address``): splitting the
subaddress off ``jg2.+tag`` gave the base ``jg2.``, which is not a dot-string, so it was
neither a valid local part nor the canonical (quoted) form under which a user ``"jg2."`` is
stored, and mail to ``jg2.+tag`` missed that user."""

from __future__ import annotations

import pytest

from mailserver.message.address import parse_address, parse_path, split_subaddress

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
