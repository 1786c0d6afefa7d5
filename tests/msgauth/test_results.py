"""Authentication-Results (RFC 8601): building, folding, parsing back, and stripping ours."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailserver.msgauth.results import (
    RESULTS,
    AuthResult,
    authentication_results,
    parse_authentication_results,
    strip_authentication_results,
)

SPF = AuthResult("spf", "pass", (("smtp.mailfrom", "example.org"),))
DKIM = AuthResult(
    "dkim",
    "pass",
    (("header.d", "example.org"), ("header.s", "sel"), ("header.b", "ab/+=cd1")),
)
DMARC = AuthResult("dmarc", "fail", (("header.from", "example.org"),), reason="p=reject")


def test_one_field_one_result_per_line_crlf() -> None:
    """The field is folded one resinfo per line, separated by ';', and ends in CRLF."""
    field = authentication_results("mx.example.net", [SPF, DKIM, DMARC])
    assert field == (
        b"Authentication-Results: mx.example.net;\r\n"
        b"\tspf=pass smtp.mailfrom=example.org;\r\n"
        b'\tdkim=pass header.d=example.org header.s=sel header.b="ab/+=cd1";\r\n'
        b'\tdmarc=fail reason="p=reject" header.from=example.org\r\n'
    )


def test_no_results_is_none() -> None:
    """RFC 8601 §2.2: no-result is written 'none'."""
    assert authentication_results("mx.example.net", []) == (
        b"Authentication-Results: mx.example.net; none\r\n"
    )


def test_unknown_result_word_is_refused() -> None:
    """Only RFC 8601 §2.7 result words make an AuthResult."""
    with pytest.raises(ValueError):
        AuthResult("spf", "ok")


def test_addresses_stay_unquoted_and_odd_values_are_quoted() -> None:
    """A local-part@domain pvalue is written bare; spaces and quotes are quoted and escaped."""
    result = AuthResult("spf", "fail", (("smtp.mailfrom", "a.b@example.org"), ("x.y", 'a "b"')))
    assert result.resinfo() == 'spf=fail smtp.mailfrom=a.b@example.org x.y="a \\"b\\""'


def test_long_resinfo_folds_at_spaces() -> None:
    """No line of a long result is much longer than 78 characters."""
    long = AuthResult("dkim", "fail", tuple((f"header.p{i}", "x" * 20) for i in range(8)))
    field = authentication_results("mx.example.net", [long])
    assert all(len(line) <= 80 for line in field.split(b"\r\n"))
    assert parse_authentication_results(field.split(b":", 1)[1])[1] == [long]


def test_parse_round_trip() -> None:
    """What we write parses back to the same results."""
    field = authentication_results("MX.example.net", [SPF, DKIM, DMARC])
    authserv, results = parse_authentication_results(field.split(b":", 1)[1])
    assert authserv == "mx.example.net"
    assert results == [SPF, DKIM, DMARC]


def test_parse_comments_and_version() -> None:
    """RFC 8601 §2.2 examples: a version after the authserv-id and comments are ignored."""
    value = b" example.com 1; (c) spf=pass (good) smtp.mailfrom=x@example.net"
    authserv, results = parse_authentication_results(value)
    assert authserv == "example.com"
    assert results == [AuthResult("spf", "pass", (("smtp.mailfrom", "x@example.net"),))]


HEADERS = (
    b"Received: from a\r\n\tby b\r\n"
    b"Authentication-Results: mx.example.net; spf=pass\r\n"
    b"Authentication-Results: (forged) MX.Example.NET 1;\r\n\tdkim=pass header.d=bank.test\r\n"
    b"Authentication-Results: other.example; spf=fail\r\n"
    b"authentication-results:mx.example.net;none\r\n"
    b"Subject: hi\r\n"
)


def test_strip_removes_only_ours() -> None:
    """RFC 8601 §5: fields with our authserv-id (any case, folded, with a comment or version)
    are removed; another server's field and everything else stay byte for byte."""
    assert strip_authentication_results(HEADERS, "mx.example.net") == (
        b"Received: from a\r\n\tby b\r\n"
        b"Authentication-Results: other.example; spf=fail\r\n"
        b"Subject: hi\r\n"
    )


def test_strip_keeps_lf_only_blocks() -> None:
    """Bare-LF header blocks are handled the same way."""
    block = HEADERS.replace(b"\r\n", b"\n")
    assert strip_authentication_results(block, "mx.example.net") == (
        b"Received: from a\n\tby b\nAuthentication-Results: other.example; spf=fail\nSubject: hi\n"
    )


values = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=30)
results_strategy = st.builds(
    AuthResult,
    st.sampled_from(["spf", "dkim", "dmarc", "arc", "iprev"]),
    st.sampled_from(sorted(RESULTS)),
    st.lists(
        st.tuples(st.sampled_from(["header.d", "smtp.mailfrom", "header.b"]), values), max_size=4
    ).map(tuple),
    st.one_of(st.just(""), values),
)


@given(st.lists(results_strategy, max_size=5))
def test_any_results_round_trip(results: list[AuthResult]) -> None:
    """Any printable values survive writing and parsing; the field is one field."""
    field = authentication_results("mx.example.net", results)
    assert field.endswith(b"\r\n") and b"\r\n" not in field[:-2].replace(b"\r\n\t", b"")
    authserv, parsed = parse_authentication_results(field.split(b":", 1)[1])
    assert authserv == "mx.example.net"
    assert parsed == results


@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ")), max_size=8))
def test_strip_keeps_every_other_line(lines: list[bytes]) -> None:
    """Any header block: stripping never raises and leaves a subsequence of its lines."""
    block = b"".join(line + b"\r\n" for line in lines)
    out = strip_authentication_results(block, "mx.example.net")
    kept = iter(block.splitlines(keepends=True))
    assert all(any(line == k for k in kept) for line in out.splitlines(keepends=True))


def test_values_cannot_inject_header_lines() -> None:
    """CR, LF and other controls in a value or reason (they can come from DNS or the message)
    never reach the header as line breaks."""
    evil = AuthResult("spf", "fail", (("smtp.mailfrom", "a\r\nX-Evil: 1"),), reason="x\nBcc: y")
    field = authentication_results("mx.example.net", [evil])
    assert field.count(b"\n") == 2 and b"\nX-Evil" not in field and b"\nBcc" not in field


def test_fold_knows_an_escaped_backslash_ends_a_quoted_string() -> None:
    """A value ending in a backslash ("...\\\\") closes its quoted string: the next value's
    spaces are still inside quotes and never folded (found by hypothesis)."""
    result = AuthResult(
        "spf", "fail", (("header.d", "0" * 30 + "\\"), ("header.d", "0" * 40 + " " + "0" * 9))
    )
    field = authentication_results("mx.example.net", [result])
    assert parse_authentication_results(field.split(b":", 1)[1])[1] == [result]
