"""Arguments of the session commands: LOGIN, AUTHENTICATE, ENABLE and ID.

Each ``parse_*`` function reads the arguments after the command name from a
:class:`~mailserver.imap.scanner.Scanner` and returns a frozen value; the caller checks that
nothing follows. Credentials are kept out of ``repr`` so a logged command never shows them.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

from mailserver.imap.scanner import ParseError, Scanner

__all__ = [
    "Authenticate",
    "Enable",
    "Id",
    "Login",
    "decode_base64",
    "parse_authenticate",
    "parse_enable",
    "parse_id",
    "parse_login",
]

#: RFC 2971 §3.3: field strings at most 30 octets, values at most 1024, at most 30 pairs.
MAX_ID_FIELD = 30
MAX_ID_VALUE = 1024
MAX_ID_PAIRS = 30

_BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}")


@dataclass(frozen=True, slots=True)
class Login:
    """``LOGIN userid password`` (RFC 9051 §6.2.3); both decoded as UTF-8."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Authenticate:
    """``AUTHENTICATE mechanism [initial-response]`` (RFC 9051 §6.2.2, SASL-IR RFC 4959).

    ``mechanism`` is upper-cased; ``initial_response`` is the decoded BASE64 (``b""`` for the
    ``=`` that stands for an empty response, None when absent).
    """

    mechanism: str
    initial_response: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Enable:
    """``ENABLE capability...`` (RFC 5161, RFC 9051 §6.3.1); names upper-cased."""

    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Id:
    """``ID (field value ...)`` or ``ID NIL`` (RFC 2971): ``params`` is None for NIL."""

    params: tuple[tuple[str, str | None], ...] | None


def parse_login(s: Scanner) -> Login:
    s.space()
    username = s.astring_text("user name")
    s.space()
    password = s.astring_text("password")
    return Login(username, password)


def decode_base64(raw: bytes) -> bytes:
    """A SASL response line: BASE64, or ``=`` for an empty response (RFC 4959 §3)."""
    if raw == b"=":
        return b""
    if not _BASE64.fullmatch(raw) or len(raw) % 4:
        raise ParseError("Invalid BASE64")
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error:
        raise ParseError("Invalid BASE64") from None


def parse_authenticate(s: Scanner) -> Authenticate:
    s.space()
    mechanism = s.keyword("SASL mechanism")
    initial: bytes | None = None
    if not s.at_end():
        s.space()
        start = s.pos
        while not s.at_end() and s.peek() != b" ":
            s.pos += 1
        initial = decode_base64(s.data[start : s.pos])
    return Authenticate(mechanism, initial)


def parse_enable(s: Scanner) -> Enable:
    capabilities: list[str] = []
    s.space()
    capabilities.append(s.keyword("capability"))
    while not s.at_end():
        s.space()
        capabilities.append(s.keyword("capability"))
    return Enable(tuple(dict.fromkeys(capabilities)))


def parse_id(s: Scanner) -> Id:
    s.space()
    if s.maybe_word(b"NIL"):
        return Id(None)
    s.expect(b"(", "( or NIL")
    pairs: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    if not s.maybe(b")"):
        while True:
            name = s.text(s.string(), "ID field")
            s.space()
            raw = s.nstring()
            value = None if raw is None else s.text(raw, "ID value")
            if len(name.encode()) > MAX_ID_FIELD or (value and len(value.encode()) > MAX_ID_VALUE):
                raise ParseError("ID field or value too long")
            if name.lower() in seen:
                raise ParseError(f"Duplicate ID field {name!r}")
            seen.add(name.lower())
            pairs.append((name, value))
            if len(pairs) > MAX_ID_PAIRS:
                raise ParseError("Too many ID fields")
            if s.maybe(b")"):
                break
            s.space()
    return Id(tuple(pairs))
