"""SASL exchanges for SMTP AUTH (RFC 4954): PLAIN (RFC 4616), LOGIN and OAUTHBEARER (RFC 7628).

An exchange turns base64 lines into Twisted cred credentials. The protocol feeds it the
initial response (if any) and then each client line; :meth:`step` returns either the next
challenge to send (bytes, base64-encoded by the caller) or the finished credentials. A
``*`` line cancels (RFC 4954 §4: 501). Malformed input raises :class:`SASLError`.
A leaf module: IMAP and POP3 share it, and the credentials classes live here so that the
protocols need not import the checkers.

Credentials: PLAIN and LOGIN give a :class:`MailLogin` (an IUsernamePassword that can also
carry the protocol and the client's IP), OAUTHBEARER a :class:`BearerToken`
(:class:`IBearerToken`). The protocol fills in where the login came from with
:func:`with_context` before calling ``portal.login``.

OAUTHBEARER is not in :data:`MECHANISMS` (which SMTP advertises) because its failure needs
one more round trip (RFC 7628 §3.2.3): when the login fails, the protocol sends
:meth:`OAuthBearerExchange.error_challenge` as a challenge, keeps the exchange, and feeds it
the client's answer; :meth:`step` then raises :class:`Rejected`, which the protocol turns into
its "authentication failed" reply (SMTP ``535 5.7.8``). :data:`ALL_MECHANISMS` includes it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

from twisted.cred.credentials import ICredentials, UsernamePassword
from zope.interface import Attribute, implementer

__all__ = [
    "ALL_MECHANISMS",
    "MECHANISMS",
    "BearerToken",
    "IBearerToken",
    "LoginExchange",
    "MailLogin",
    "OAuthBearerExchange",
    "PlainExchange",
    "Rejected",
    "SASLError",
    "decode",
    "new_exchange",
    "with_context",
]

#: Longest decoded response we accept (RFC 4954 §4: servers may limit it).
MAX_RESPONSE = 12288


class SASLError(Exception):
    """A response that is not valid for the mechanism (bad base64, missing parts)."""


class Cancelled(SASLError):
    """The client sent ``*``."""


class Rejected(SASLError):
    """The exchange ended with a refusal the protocol reports as failed authentication
    (SMTP ``535 5.7.8``, IMAP ``NO [AUTHENTICATIONFAILED]``, POP3 ``-ERR [AUTH]``), not as a
    malformed response."""


# -- credentials ---------------------------------------------------------------------------


class MailLogin(UsernamePassword):
    """A user name and password (IUsernamePassword) plus where the login came from.

    ``protocol`` is ``smtp``, ``imap``, ``pop3`` or ``api`` (an app password's scope is
    checked against it; "" when unknown), ``ip`` the client's address (recorded as an app
    password's last use), ``otp`` a second-factor code given with the account password (the
    web login; mail protocols have no place for one).
    """

    def __init__(
        self,
        username: bytes,
        password: bytes,
        protocol: str = "",
        ip: str = "",
        otp: str | None = None,
    ) -> None:
        super().__init__(username, password)
        self.protocol = protocol
        self.ip = ip
        self.otp = otp

    def checkPassword(self, password: bytes) -> bool:
        """Constant-time comparison (the base class uses ``==``)."""
        return hmac.compare_digest(self.password, password)

    def __repr__(self) -> str:
        return f"<MailLogin {self.username!r} protocol={self.protocol!r} ip={self.ip!r}>"


class IBearerToken(ICredentials):
    """An OAuth 2.0 bearer token (RFC 6750) presented to log in (RFC 7628 for SASL, the
    ``Authorization: Bearer`` header for the API)."""

    token = Attribute("The token as the client sent it (str).")
    user_hint = Attribute(
        "The user the client says it is (the GS2 authzid), or ''. A provider's checker must"
        " refuse the login when it is given and is not the token's owner."
    )
    protocol = Attribute("smtp, imap, pop3 or api: checked against the token's scopes.")
    ip = Attribute("The client's address, for the token's last-use record ('' if unknown).")


@implementer(IBearerToken)
@dataclass(frozen=True)
class BearerToken:
    """A bearer token with the claimed user and the login's origin."""

    token: str
    user_hint: str = ""
    protocol: str = ""
    ip: str = ""

    def __repr__(self) -> str:  # never show the token in logs
        return f"<BearerToken user_hint={self.user_hint!r} protocol={self.protocol!r}>"


def with_context(credentials: Any, protocol: str, ip: str) -> Any:
    """``credentials`` marked with the protocol and client address of the session.

    A :class:`BearerToken` or :class:`MailLogin` gets a copy with both set; any other
    IUsernamePassword (e.g. a plain UsernamePassword) becomes a MailLogin; anything else is
    returned unchanged.
    """
    if isinstance(credentials, BearerToken):
        return BearerToken(credentials.token, credentials.user_hint, protocol, ip)
    if isinstance(credentials, UsernamePassword):
        otp = getattr(credentials, "otp", None)
        return MailLogin(credentials.username, credentials.password, protocol, ip, otp)
    return credentials


def decode(line: bytes) -> bytes:
    """Base64 of one client line; ``=`` is the empty response (RFC 4954 §4)."""
    line = line.strip()
    if line == b"*":
        raise Cancelled("authentication cancelled")
    if line == b"=":
        return b""
    if len(line) > MAX_RESPONSE * 4 // 3 + 4:
        raise SASLError("response too long")
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise SASLError("invalid base64") from None


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SASLError(f"{what} is not UTF-8") from None


class PlainExchange:
    """RFC 4616: ``authzid NUL authcid NUL password`` in one response."""

    name = "PLAIN"

    def step(self, response: bytes | None) -> bytes | MailLogin:
        """``None`` (no initial response): send an empty challenge; else the credentials."""
        if response is None:
            return b""
        parts = response.split(b"\0")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise SASLError("PLAIN needs authzid NUL authcid NUL password")
        authzid, authcid, password = (_text(p, "PLAIN response") for p in parts)
        if authzid and authzid.lower() != authcid.lower():
            raise SASLError("acting as another user (authzid) is not allowed")
        return MailLogin(authcid.encode("utf-8"), password.encode("utf-8"))


class LoginExchange:
    """The LOGIN mechanism (draft-murchison-sasl-login): user name, then password."""

    name = "LOGIN"

    def __init__(self) -> None:
        self._user: bytes | None = None

    def step(self, response: bytes | None) -> bytes | MailLogin:
        if response is None:
            return b"Username:"
        if self._user is None:
            if not response:
                raise SASLError("empty user name")
            _text(response, "user name")
            self._user = response
            return b"Password:"
        if not response:
            raise SASLError("empty password")
        _text(response, "password")
        return MailLogin(self._user, response)


#: RFC 6750 §2.1 b64token.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
#: RFC 7628 §3.1: key = 1*(ALPHA); value = *(VCHAR / SP / HTAB / CR / LF).
_KEY = re.compile(r"[A-Za-z]+")
_VALUE = re.compile(r"[\x21-\x7e \t\r\n]*")


def _saslname(raw: str) -> str:
    """Undo the GS2 escaping of an authzid (RFC 5801 §4: ``=2C`` is ``,``, ``=3D`` is ``=``)."""
    out = []
    i = 0
    while i < len(raw):
        if raw[i] == "=":
            escape = raw[i : i + 3]
            if escape == "=2C":
                out.append(",")
            elif escape == "=3D":
                out.append("=")
            else:
                raise SASLError("invalid escape in the GS2 authzid")
            i += 3
        elif raw[i] == ",":
            raise SASLError("unescaped comma in the GS2 authzid")
        else:
            out.append(raw[i])
            i += 1
    return "".join(out)


class OAuthBearerExchange:
    """RFC 7628 OAUTHBEARER: one client response ``gs2-header %x01 *(key=value %x01) %x01``.

    The GS2 header (RFC 5801 §4) is ``n,`` or ``y,`` (no channel binding: ``p=`` is refused),
    then an optional ``a=authzid``, then ``,``. The ``auth`` pair is required and holds
    ``Bearer <token>`` (RFC 6750 §2.1); ``host``, ``port`` and unknown keys are ignored.
    """

    name = "OAUTHBEARER"

    def __init__(self) -> None:
        self._failed = False
        self._done = False

    def step(self, response: bytes | None) -> bytes | BearerToken:
        """``None``: an empty challenge (RFC 7628 §3.1: the client then sends its response).
        The client response gives :class:`BearerToken` credentials. After
        :meth:`error_challenge`, the client's answer (``%x01``) raises :class:`Rejected`."""
        if self._failed:
            # RFC 7628 §3.2.3: the client answers the error with %x01; the server then fails
            # the exchange (whatever the client sent).
            raise Rejected("bearer token refused")
        if self._done:
            raise SASLError("the exchange is over")
        if response is None:
            return b""
        self._done = True
        return self._parse(response)

    def error_challenge(self, scope: str = "") -> bytes:
        """The JSON error the server sends when the token is refused (RFC 7628 §3.2.2),
        after which the exchange expects the client's ``%x01``. ``scope`` is the scope a
        token would need (space-separated), or ""."""
        self._failed = True
        document: dict[str, str] = {"status": "invalid_token", "schemes": "bearer"}
        if scope:
            document["scope"] = scope
        return json.dumps(document, separators=(",", ":")).encode()

    def _parse(self, response: bytes) -> BearerToken:
        text = _text(response, "OAUTHBEARER response")
        header, sep, rest = text.partition("\x01")
        if not sep:
            raise SASLError("OAUTHBEARER needs key=value pairs after the GS2 header")
        user = self._gs2_header(header)
        body, end = rest[:-1], rest[-1:]
        if end != "\x01" or (body and not body.endswith("\x01")):
            raise SASLError("OAUTHBEARER response must end with two ^A")
        pairs: dict[str, str] = {}
        for item in body.split("\x01")[:-1]:
            key, eq, value = item.partition("=")
            if not eq or not _KEY.fullmatch(key) or not _VALUE.fullmatch(value):
                raise SASLError("malformed key=value pair in the OAUTHBEARER response")
            if key in pairs:
                raise SASLError(f"repeated key {key} in the OAUTHBEARER response")
            pairs[key] = value
        auth = pairs.get("auth")
        if auth is None:
            raise SASLError("OAUTHBEARER response has no auth=Bearer <token>")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not _B64TOKEN.fullmatch(token):
            raise SASLError("auth must be 'Bearer <token>' (RFC 6750)")
        return BearerToken(token, user)

    @staticmethod
    def _gs2_header(header: str) -> str:
        """The authzid of ``n,a=user,`` (or "" for ``n,,``); SASLError otherwise."""
        parts = header.split(",")
        if len(parts) != 3 or parts[2] != "":
            raise SASLError("malformed GS2 header (expected 'n,a=user,' or 'n,,')")
        flag, authzid = parts[0], parts[1]
        if flag.startswith("p="):
            raise SASLError("OAUTHBEARER has no channel binding (GS2 flag p)")
        if flag not in ("n", "y"):
            raise SASLError("malformed GS2 channel binding flag")
        if not authzid:
            return ""
        if not authzid.startswith("a=") or len(authzid) == 2:
            raise SASLError("malformed GS2 authzid (expected a=user)")
        return _saslname(authzid[2:])


Exchange = PlainExchange | LoginExchange | OAuthBearerExchange

#: The mechanisms SMTP advertises and :func:`new_exchange` offers by default.
MECHANISMS: dict[str, type[PlainExchange] | type[LoginExchange]] = {
    "PLAIN": PlainExchange,
    "LOGIN": LoginExchange,
}

#: Every mechanism implemented here, OAUTHBEARER included.
ALL_MECHANISMS: dict[str, type[Exchange]] = {**MECHANISMS, "OAUTHBEARER": OAuthBearerExchange}


def new_exchange(mechanism: str, mechanisms: dict[str, Any] | None = None) -> Exchange | None:
    """A fresh exchange for ``mechanism`` (case-insensitive) among ``mechanisms`` (default:
    :data:`MECHANISMS`), or None if unsupported."""
    factory = (MECHANISMS if mechanisms is None else mechanisms).get(mechanism.upper())
    return None if factory is None else factory()
