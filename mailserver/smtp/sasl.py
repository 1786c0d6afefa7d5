"""SASL exchanges for SMTP AUTH (RFC 4954): PLAIN (RFC 4616) and LOGIN.

An exchange turns base64 lines into Twisted cred credentials. The protocol feeds it the
initial response (if any) and then each client line; :meth:`step` returns either the next
challenge to send (bytes, base64-encoded by the caller) or the finished credentials. A
``*`` line cancels (RFC 4954 §4: 501). Malformed input raises :class:`SASLError`.
A leaf module.
"""

from __future__ import annotations

import base64
import binascii

from twisted.cred.credentials import UsernamePassword

__all__ = ["MECHANISMS", "LoginExchange", "PlainExchange", "SASLError", "decode", "new_exchange"]

#: Longest decoded response we accept (RFC 4954 §4: servers may limit it).
MAX_RESPONSE = 12288


class SASLError(Exception):
    """A response that is not valid for the mechanism (bad base64, missing parts)."""


class Cancelled(SASLError):
    """The client sent ``*``."""


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

    def step(self, response: bytes | None) -> bytes | UsernamePassword:
        """``None`` (no initial response): send an empty challenge; else the credentials."""
        if response is None:
            return b""
        parts = response.split(b"\0")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise SASLError("PLAIN needs authzid NUL authcid NUL password")
        authzid, authcid, password = (_text(p, "PLAIN response") for p in parts)
        if authzid and authzid.lower() != authcid.lower():
            raise SASLError("acting as another user (authzid) is not allowed")
        return UsernamePassword(authcid.encode("utf-8"), password.encode("utf-8"))


class LoginExchange:
    """The LOGIN mechanism (draft-murchison-sasl-login): user name, then password."""

    name = "LOGIN"

    def __init__(self) -> None:
        self._user: bytes | None = None

    def step(self, response: bytes | None) -> bytes | UsernamePassword:
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
        return UsernamePassword(self._user, response)


MECHANISMS = {"PLAIN": PlainExchange, "LOGIN": LoginExchange}


def new_exchange(mechanism: str) -> PlainExchange | LoginExchange | None:
    """A fresh exchange for ``mechanism`` (case-insensitive), or None if unsupported."""
    factory = MECHANISMS.get(mechanism.upper())
    return None if factory is None else factory()
