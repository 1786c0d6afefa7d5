"""SASL PLAIN and LOGIN exchanges (RFC 4954, RFC 4616): parsing and refusal of bad input."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from zope.interface.verify import verifyObject

from mailserver.smtp.sasl import (
    ALL_MECHANISMS,
    MECHANISMS,
    BearerToken,
    Cancelled,
    IBearerToken,
    LoginExchange,
    MailLogin,
    OAuthBearerExchange,
    PlainExchange,
    Rejected,
    SASLError,
    decode,
    new_exchange,
    with_context,
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


# -- credentials ---------------------------------------------------------------------------


def test_plain_and_login_give_mail_logins_that_take_a_context():
    """PLAIN and LOGIN give MailLogin (an IUsernamePassword); with_context adds the protocol
    and client address, keeping user and password."""
    creds = PlainExchange().step(b"\0alice@example.org\0pw")
    assert isinstance(creds, MailLogin) and verifyObject(IUsernamePassword, creds)
    marked = with_context(creds, "smtp", "192.0.2.1")
    assert (marked.username, marked.password, marked.protocol, marked.ip) == (
        b"alice@example.org",
        b"pw",
        "smtp",
        "192.0.2.1",
    )
    assert marked.checkPassword(b"pw") and not marked.checkPassword(b"pW")
    plain = with_context(UsernamePassword(b"u", b"p"), "imap", "::1")
    assert isinstance(plain, MailLogin) and plain.protocol == "imap"
    token = with_context(BearerToken("t", "u@x.org"), "pop3", "::1")
    assert token == BearerToken("t", "u@x.org", "pop3", "::1")
    other = object()
    assert with_context(other, "smtp", "") is other
    assert "secret-token" not in repr(BearerToken("secret-token"))


# -- OAUTHBEARER (RFC 7628) ------------------------------------------------------------------

#: RFC 7628 §4.1, the example client response.
RFC_EXAMPLE = (
    b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01"
    b"auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
)


def test_oauthbearer_parses_the_rfc_example():
    """The RFC 7628 §4.1 response gives the token and the GS2 authzid as the user hint."""
    exchange = OAuthBearerExchange()
    assert exchange.step(None) == b""
    creds = exchange.step(RFC_EXAMPLE)
    assert creds == BearerToken("vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==", "user@example.com")
    assert verifyObject(IBearerToken, creds)


@pytest.mark.parametrize(
    "response,token,user",
    [
        (b"n,,\x01auth=Bearer abc.def-_~+/\x01\x01", "abc.def-_~+/", ""),
        (b"y,,\x01auth=bearer tok\x01\x01", "tok", ""),
        (b"n,a=we=2Cird=3D@example.org,\x01auth=Bearer t\x01\x01", "t", "we,ird=@example.org"),
        (b"n,,\x01auth=Bearer t\x01future=x y\x01\x01", "t", ""),
    ],
)
def test_oauthbearer_accepts_variants(response, token, user):
    """No authzid, the 'y' flag, GS2 escapes, unknown keys and a lower-case scheme pass."""
    assert OAuthBearerExchange().step(response) == BearerToken(token, user)


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"n,a=u@x.org,",  # no key/value part at all
        b"x,a=u@x.org,\x01auth=Bearer t\x01\x01",  # bad channel-binding flag
        b"p=tls-unique,,\x01auth=Bearer t\x01\x01",  # channel binding: not in OAUTHBEARER
        b"n,a=u@x.org\x01auth=Bearer t\x01\x01",  # GS2 header without its final comma
        b"n,b=u@x.org,\x01auth=Bearer t\x01\x01",  # not a=
        b"n,a=,\x01auth=Bearer t\x01\x01",  # empty authzid
        b"n,a=u=2@x.org,\x01auth=Bearer t\x01\x01",  # bad escape
        b"n,,\x01auth=Bearer t\x01",  # missing the final ^A
        b"n,,\x01auth=Bearer t",  # no ^A at all after the pair
        b"n,,\x01\x01",  # no auth
        b"n,,\x01host=h\x01\x01",  # no auth
        b"n,,\x01auth=Basic dTpw\x01\x01",  # not a bearer token
        b"n,,\x01auth=Bearer \x01\x01",  # empty token
        b"n,,\x01auth=Bearer a b\x01\x01",  # not a b64token
        b"n,,\x01auth=Bearer t\x01auth=Bearer u\x01\x01",  # repeated key
        b"n,,\x01=v\x01auth=Bearer t\x01\x01",  # empty key
        b"n,,\x01novalue\x01auth=Bearer t\x01\x01",  # no '='
        b"n,,\x01auth=Bearer t\x01\x01\x01",  # an empty pair
        b"n,\xff,\x01auth=Bearer t\x01\x01",  # not UTF-8
    ],
)
def test_oauthbearer_refuses_malformed_responses(bad):
    with pytest.raises(SASLError) as caught:
        OAuthBearerExchange().step(bad)
    assert not isinstance(caught.value, Rejected)


def test_oauthbearer_error_challenge_then_rejected():
    """RFC 7628 §3.2.2-3: on a refused token the server sends the JSON error, the client
    answers ^A, and the exchange ends in Rejected (reported as 535 5.7.8)."""
    exchange = OAuthBearerExchange()
    exchange.step(RFC_EXAMPLE)
    challenge = exchange.error_challenge("imap smtp")
    assert json.loads(challenge) == {
        "status": "invalid_token",
        "schemes": "bearer",
        "scope": "imap smtp",
    }
    with pytest.raises(Rejected):
        exchange.step(b"\x01")
    assert json.loads(OAuthBearerExchange().error_challenge()) == {
        "status": "invalid_token",
        "schemes": "bearer",
    }
    other = OAuthBearerExchange()
    other.error_challenge()
    with pytest.raises(Rejected):
        other.step(b"anything")  # the exchange fails whatever the client answers


def test_oauthbearer_takes_one_response():
    exchange = OAuthBearerExchange()
    exchange.step(RFC_EXAMPLE)
    with pytest.raises(SASLError):
        exchange.step(RFC_EXAMPLE)


def test_oauthbearer_is_offered_only_on_request():
    """SMTP's advertised MECHANISMS stay PLAIN and LOGIN; ALL_MECHANISMS adds OAUTHBEARER."""
    assert list(MECHANISMS) == ["PLAIN", "LOGIN"]
    assert new_exchange("OAUTHBEARER") is None
    assert isinstance(new_exchange("oauthbearer", ALL_MECHANISMS), OAuthBearerExchange)
    assert isinstance(new_exchange("plain", ALL_MECHANISMS), PlainExchange)


@given(st.binary(max_size=300))
def test_any_oauthbearer_response_gives_a_token_or_sasl_error(data):
    try:
        result = OAuthBearerExchange().step(data)
    except SASLError:
        return
    assert isinstance(result, BearerToken) and result.token
