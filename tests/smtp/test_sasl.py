"""SASL PLAIN and LOGIN exchanges (RFC 4954, RFC 4616): parsing and refusal of bad input."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailserver.smtp.sasl import (
    Cancelled,
    LoginExchange,
    PlainExchange,
    SASLError,
    decode,
    new_exchange,
)


def test_plain_with_and_without_initial_response():
    assert PlainExchange().step(None) == b""
    creds = PlainExchange().step(b"\0alice@example.org\0secret")
    assert (creds.username, creds.password) == (b"alice@example.org", b"secret")
    creds = PlainExchange().step(b"alice@example.org\0alice@example.org\0pw")
    assert creds.username == b"alice@example.org"


@pytest.mark.parametrize("bad", [b"", b"\0\0", b"user\0pw", b"\0user\0", b"other\0alice\0pw",
                                 b"\0\xff\0pw"])
def test_plain_refuses_malformed_or_proxy_logins(bad):
    with pytest.raises(SASLError):
        PlainExchange().step(bad)


def test_login_asks_user_then_password():
    exchange = LoginExchange()
    assert exchange.step(None) == b"Username:"
    assert exchange.step(b"alice@example.org") == b"Password:"
    creds = exchange.step(b"pw")
    assert (creds.username, creds.password) == (b"alice@example.org", b"pw")
    with pytest.raises(SASLError):
        LoginExchange().step(b"")


def test_decode_cancel_empty_and_garbage():
    assert decode(b"=") == b""
    assert decode(base64.b64encode(b"x")) == b"x"
    with pytest.raises(Cancelled):
        decode(b"*")
    for bad in (b"!!!", b"abc", b"A" * 20000):
        with pytest.raises(SASLError):
            decode(bad)


def test_mechanism_names():
    assert isinstance(new_exchange("plain"), PlainExchange)
    assert isinstance(new_exchange("LOGIN"), LoginExchange)
    assert new_exchange("CRAM-MD5") is None


@given(st.binary(max_size=300))
def test_any_plain_response_gives_credentials_or_sasl_error(data):
    try:
        result = PlainExchange().step(data)
    except SASLError:
        return
    assert result.username and result.password


@given(st.binary(max_size=200))
def test_decode_never_raises_anything_else(line):
    try:
        decode(line)
    except SASLError:
        pass
