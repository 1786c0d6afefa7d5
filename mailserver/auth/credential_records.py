"""What :class:`mailserver.auth.credentials.CredentialStore` keeps and hands out: the record
types (app passwords, tokens, a pending TOTP enrolment) and their JSON form in the index, the
checks of scopes and names, the generated app passwords and recovery codes, and the TOTP code
check (RFC 6238 steps, compared in constant time).
"""

from __future__ import annotations

import hmac
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyotp

from mailserver.errors import InvalidName

#: Everything an app password or token may be good for: the mail protocols and the API.
SCOPES = frozenset({"smtp", "imap", "pop3", "api"})


#: A token scope only: the web API's refresh tokens (never an app password's).
REFRESH_SCOPE = "api-refresh"


#: The default scopes of an app password.
MAIL_SCOPES = frozenset({"smtp", "imap", "pop3"})


#: Letters in an app password (shown as groups of four): 26**16, about 75 bits.
APP_PASSWORD_LETTERS = 16


#: TOTP: RFC 6238 step and the steps accepted either side of now.
TOTP_STEP = 30


TOTP_WINDOW = 1


#: Longest app password or token name.
MAX_NAME = 64


@dataclass(frozen=True)
class AppPassword:
    """What is known about one app password (never the password: it is shown only once)."""

    id: str
    user: str
    name: str
    scopes: frozenset[str]
    created: float
    expires: float | None = None
    last_used: float | None = None
    last_ip: str = ""

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires


@dataclass(frozen=True)
class TokenInfo:
    """What is known about one bearer token (never the token)."""

    id: str
    user: str
    name: str
    scopes: frozenset[str]
    created: float
    expires: float | None
    last_used: float | None = None
    last_ip: str = ""

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires


@dataclass(frozen=True)
class TotpEnrolment:
    """A pending TOTP enrolment: the base32 seed and the ``otpauth://`` URI for the app."""

    secret: str
    uri: str


def _app_from_json(key: bytes, raw: dict[str, Any]) -> AppPassword:
    user, _, ident = key.decode().partition("\0")
    return AppPassword(
        id=ident,
        user=user,
        name=raw["name"],
        scopes=frozenset(raw["scopes"]),
        created=raw["created"],
        expires=raw.get("expires"),
        last_used=raw.get("last_used"),
        last_ip=raw.get("last_ip", ""),
    )


def _token_from_json(raw: dict[str, Any]) -> TokenInfo:
    return TokenInfo(
        id=raw["id"],
        user=raw["user"],
        name=raw.get("name", ""),
        scopes=frozenset(raw["scopes"]),
        created=raw["created"],
        expires=raw.get("expires"),
        last_used=raw.get("last_used"),
        last_ip=raw.get("last_ip", ""),
    )


def _scopes(scopes: Iterable[str], allowed: frozenset[str] = SCOPES) -> frozenset[str]:
    wanted = frozenset(s.strip().lower() for s in scopes)
    unknown = wanted - allowed
    if unknown or not wanted:
        raise InvalidName(
            f"scopes must be some of {', '.join(sorted(SCOPES))}"
            + (f" (not {', '.join(sorted(unknown))})" if unknown else "")
        )
    return wanted


def _name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise InvalidName(f"a name is 1 to {MAX_NAME} printable characters")
    return name


def _app_key(user: str, ident: str) -> bytes:
    return user.encode() + b"\0" + ident.encode("ascii")


def _compact(text: str) -> bytes:
    """An app password or recovery code as typed, reduced to its characters: case, spaces
    and dashes do not matter."""
    return "".join(ch for ch in text.lower() if ch not in "- \t").encode("utf-8", "replace")


def new_app_password() -> str:
    """16 random lower-case letters in groups of four: ``abcd-efgh-ijkl-mnop``."""
    letters = "".join(secrets.choice(string.ascii_lowercase) for _ in range(APP_PASSWORD_LETTERS))
    return "-".join(letters[i : i + 4] for i in range(0, APP_PASSWORD_LETTERS, 4))


def new_recovery_code() -> str:
    """10 random hex digits (40 bits) as ``xxxxx-xxxxx``."""
    digits = secrets.token_hex(5)
    return f"{digits[:5]}-{digits[5:]}"


def _totp_step(secret: str, code: str, now: float) -> int | None:
    """The step within :data:`TOTP_WINDOW` of ``now`` whose code is ``code``, or None.
    Every candidate is computed and compared in constant time."""
    code = code.strip().replace(" ", "")
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, interval=TOTP_STEP)
    current = int(now // TOTP_STEP)
    found = None
    for step in range(max(0, current - TOTP_WINDOW), current + TOTP_WINDOW + 1):
        expected = totp.generate_otp(step)
        if hmac.compare_digest(expected.encode(), code.encode()) and found is None:
            found = step
    return found
