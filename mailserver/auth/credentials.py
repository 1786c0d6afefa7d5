"""Second credentials besides the account password: app passwords, TOTP and bearer tokens.

One :class:`CredentialStore` keeps all three in the shared LMDB index (sub-dbs listed in
:mod:`mailserver.db.schema`):

============= ===================================== =========================================
sub-db        key                                   value
============= ===================================== =========================================
app_passwords address NUL id (8 hex digits)         JSON {name, scopes, created, expires,
                                                    hash, last_used, last_ip}
totp          address                               JSON {secret, confirmed, created,
                                                    last_step, recovery: [hash, ...]}
tokens        HMAC(key, "token" NUL token) (32 B)   JSON {id, user, scopes, name, created,
                                                    expires, last_used, last_ip}
============= ===================================== =========================================

Times are seconds since the epoch from the injected clock (``reactor.seconds()``), ``expires``
is null for "never", ``hash`` is hex.

**Keyed hashes, not bcrypt.** App passwords (16 random letters, 75 bits), recovery codes
(40 bits) and tokens (256 bits) are generated here, never chosen by people, so there is no
dictionary to try: a slow hash buys nothing against an offline search, while it would cost a
bcrypt per IMAP/SMTP login (clients log in often, on several connections). They are stored as
HMAC-SHA256 under a 32-byte server key kept *outside* the index (:func:`load_or_create_secret`,
``<data_dir>/keys/credentials.key``, mode 0600), so a copy of the index alone does not even
allow checking guesses. Each kind of secret uses its own HMAC label. Replacing the key
invalidates every app password, token and recovery code (TOTP seeds are kept as they are).
Comparisons use :func:`hmac.compare_digest`.

**TOTP** (RFC 6238, pyotp: SHA-1, 6 digits, 30 s steps): :meth:`CredentialStore.enable_totp`
stores a *pending* seed and returns the ``otpauth://`` URI; :meth:`~CredentialStore.confirm_totp`
switches it on once a first code checks, and returns 10 single-use recovery codes (shown only
then, stored hashed). A code is accepted within one step either side of now, and never twice:
the last accepted step is stored and only later steps pass (RFC 6238 §5.2). The seed itself
is stored in clear, as every TOTP verifier must be able to compute the codes.

Reads run on the caller's thread (LMDB reads are cheap); writes go through
:meth:`mailserver.db.Database.write` and return Deferreds.

The record types, scopes, names and the generated secrets are in
:mod:`mailserver.auth.credential_records`, the server key on disk in
:mod:`mailserver.auth.credential_key`; every name is re-exported here.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import Any

import pyotp
from twisted.internet.defer import Deferred, succeed

# The public names moved to these two modules stay importable from here (hence the noqa).
from mailserver.auth.credential_key import (
    SECRET_SIZE,
    load_or_create_secret,
    secret_path,
)
from mailserver.auth.credential_records import (  # noqa: F401
    APP_PASSWORD_LETTERS,
    MAIL_SCOPES,
    MAX_NAME,
    REFRESH_SCOPE,
    SCOPES,
    TOTP_STEP,
    TOTP_WINDOW,
    AppPassword,
    TokenInfo,
    TotpEnrolment,
    _app_from_json,
    _app_key,
    _compact,
    _name,
    _scopes,
    _token_from_json,
    _totp_step,
    new_app_password,
    new_recovery_code,
)
from mailserver.auth.directory import canonical_address, deferred
from mailserver.db import Database, Txn
from mailserver.db.schema import load
from mailserver.errors import AlreadyExists, InvalidName, MailError

__all__ = [
    "MAIL_SCOPES",
    "REFRESH_SCOPE",
    "SCOPES",
    "AppPassword",
    "CredentialStore",
    "TokenInfo",
    "TotpEnrolment",
    "forget_user",
    "load_or_create_secret",
    "secret_path",
]

#: Recovery codes made when TOTP is switched on.
RECOVERY_CODES = 10

_APP = b"app-password"
_RECOVERY = b"recovery-code"
_TOKEN = b"token"


@deferred
def forget_user(db: Database, user: str) -> Deferred[None]:
    """Delete every app password, TOTP seed and token of ``user`` (on user deletion). Needs
    no key, so the CLI can call it without creating one."""
    key = canonical_address(user)

    def op(txn: Txn) -> None:
        for k, _ in list(txn.prefix(b"app_passwords", key.encode() + b"\0")):
            txn.delete(b"app_passwords", k)
        txn.delete(b"totp", key.encode())
        for k, v in list(txn.prefix(b"tokens", b"")):
            if load(v)["user"] == key:
                txn.delete(b"tokens", k)

    return db.write(op)


# -- the store -------------------------------------------------------------------------------


class CredentialStore:
    """App passwords, TOTP and bearer tokens of the users, in the LMDB index.

    ``clock`` provides ``seconds()`` (the reactor, or a ``task.Clock`` in tests); ``secret``
    is the server's credentials key (:func:`load_or_create_secret`); ``issuer`` names this
    server in authenticator apps. Users are canonicalised (:func:`canonical_address`); the
    store does not check that they exist in the directory, its callers do.
    """

    def __init__(self, db: Database, clock: Any, secret: bytes, issuer: str = "mailserver"):
        if len(secret) < SECRET_SIZE:
            raise ValueError(f"the credentials key must have at least {SECRET_SIZE} bytes")
        self.db = db
        self._clock = clock
        self._secret = secret
        self.issuer = issuer

    def _now(self) -> float:
        return float(self._clock.seconds())

    def _mac(self, label: bytes, value: bytes) -> bytes:
        return hmac.new(self._secret, label + b"\0" + value, hashlib.sha256).digest()

    # -- app passwords ----------------------------------------------------------------------

    @deferred
    def add_app_password(
        self,
        user: str,
        name: str,
        scopes: Iterable[str] = MAIL_SCOPES,
        expires: float | None = None,
    ) -> Deferred[tuple[str, str]]:
        """A new app password for ``user``: Deferred (id, plaintext). The plaintext is not kept
        anywhere (show it once). ``expires`` is an absolute time or None. InvalidName for a bad
        name or scope, AlreadyExists when the user has an app password of that name."""
        key = canonical_address(user)
        name = _name(name)
        wanted = _scopes(scopes)
        plaintext = new_app_password()
        ident = secrets.token_hex(4)
        record = {
            "name": name,
            "scopes": sorted(wanted),
            "created": self._now(),
            "expires": expires,
            "hash": self._mac(_APP, _compact(plaintext)).hex(),
            "last_used": None,
            "last_ip": "",
        }

        def op(txn: Txn) -> tuple[str, str]:
            for _, raw in txn.prefix(b"app_passwords", key.encode() + b"\0"):
                if load(raw)["name"].lower() == name.lower():
                    raise AlreadyExists(f"{key} already has an app password named {name!r}")
            txn.put_json(b"app_passwords", _app_key(key, ident), record)
            return ident, plaintext

        return self.db.write(op)

    def list_app_passwords(self, user: str) -> list[AppPassword]:
        """The user's app passwords, oldest first (expired ones included: see ``expired``)."""
        try:
            key = canonical_address(user)
        except InvalidName:
            return []
        with self.db.read() as txn:
            rows = [
                _app_from_json(k, load(v))
                for k, v in txn.prefix(b"app_passwords", key.encode() + b"\0")
            ]
        return sorted(rows, key=lambda a: (a.created, a.id))

    @deferred
    def revoke(self, user: str, ident: str) -> Deferred[bool]:
        """Delete the user's app password ``ident``; Deferred[bool]: whether it existed."""
        key = _app_key(canonical_address(user), ident.strip().lower())
        return self.db.write(lambda txn: txn.delete(b"app_passwords", key))

    revoke_app_password = revoke

    def check_app_password(
        self, user: str, plaintext: str, protocol: str, ip: str = ""
    ) -> Deferred[bool]:
        """Deferred[bool]: whether ``plaintext`` is one of the user's app passwords, unexpired
        and with ``protocol`` in its scopes. A success records the time and ``ip``.

        Every stored hash of the user is compared (constant time) whatever matches; a
        failure writes nothing.
        """
        try:
            key = canonical_address(user)
        except InvalidName:
            return succeed(False)
        digest = self._mac(_APP, _compact(plaintext))
        now = self._now()
        match: tuple[bytes, dict[str, Any]] | None = None
        with self.db.read() as txn:
            for k, v in txn.prefix(b"app_passwords", key.encode() + b"\0"):
                raw = load(v)
                if hmac.compare_digest(bytes.fromhex(raw["hash"]), digest) and match is None:
                    match = (k, raw)
        if match is None:
            return succeed(False)
        found_key, raw = match
        if protocol not in raw["scopes"]:
            return succeed(False)
        if raw.get("expires") is not None and now >= raw["expires"]:
            return succeed(False)

        def record(txn: Txn) -> bool:
            current = txn.get_json(b"app_passwords", found_key)
            if current is None or current["hash"] != raw["hash"]:
                return False  # revoked meanwhile
            current["last_used"] = now
            current["last_ip"] = ip
            txn.put_json(b"app_passwords", found_key, current)
            return True

        return self.db.write(record)

    # -- TOTP -------------------------------------------------------------------------------

    @deferred
    def enable_totp(self, user: str, issuer: str | None = None) -> Deferred[TotpEnrolment]:
        """Start a TOTP enrolment: a new seed, pending until :meth:`confirm_totp`. Replaces an
        earlier pending one; AlreadyExists when TOTP is on (disable it first)."""
        key = canonical_address(user)
        seed = pyotp.random_base32()
        issuer = issuer or self.issuer
        uri = pyotp.TOTP(seed, interval=TOTP_STEP).provisioning_uri(name=key, issuer_name=issuer)
        record = {
            "secret": seed,
            "confirmed": False,
            "created": self._now(),
            "last_step": -1,
            "recovery": [],
        }

        def op(txn: Txn) -> TotpEnrolment:
            current = txn.get_json(b"totp", key.encode())
            if current is not None and current["confirmed"]:
                raise AlreadyExists(f"{key} has two-factor authentication on already")
            txn.put_json(b"totp", key.encode(), record)
            return TotpEnrolment(seed, uri)

        return self.db.write(op)

    @deferred
    def confirm_totp(self, user: str, code: str) -> Deferred[list[str] | None]:
        """Switch a pending enrolment on when ``code`` checks: Deferred with the new recovery
        codes (shown once), or None for a wrong code. MailError when nothing is pending."""
        key = canonical_address(user)
        now = self._now()
        codes = [new_recovery_code() for _ in range(RECOVERY_CODES)]
        hashes = [self._mac(_RECOVERY, _compact(c)).hex() for c in codes]

        def op(txn: Txn) -> list[str] | None:
            record = txn.get_json(b"totp", key.encode())
            if record is None or record["confirmed"]:
                raise MailError(f"no two-factor enrolment of {key} is waiting for a code")
            step = _totp_step(record["secret"], code, now)
            if step is None:
                return None
            record.update(confirmed=True, last_step=step, recovery=hashes)
            txn.put_json(b"totp", key.encode(), record)
            return codes

        return self.db.write(op)

    def _totp_record(self, user: str) -> dict[str, Any] | None:
        try:
            key = canonical_address(user)
        except InvalidName:
            return None
        with self.db.read() as txn:
            record: dict[str, Any] | None = txn.get_json(b"totp", key.encode())
        return record

    def totp_enabled(self, user: str) -> bool:
        """Whether ``user`` has confirmed TOTP (then mail protocols need an app password)."""
        record = self._totp_record(user)
        return record is not None and bool(record["confirmed"])

    def totp_pending(self, user: str) -> bool:
        """Whether an enrolment of ``user`` waits for its first code."""
        record = self._totp_record(user)
        return record is not None and not record["confirmed"]

    def recovery_codes_left(self, user: str) -> int:
        record = self._totp_record(user)
        return 0 if record is None else len(record["recovery"])

    @deferred
    def disable_totp(self, user: str) -> Deferred[bool]:
        """Switch TOTP off (and drop a pending enrolment); Deferred[bool]: whether there was one."""
        key = canonical_address(user).encode()
        return self.db.write(lambda txn: txn.delete(b"totp", key))

    def verify_totp(self, user: str, code: str) -> Deferred[bool]:
        """Deferred[bool]: whether ``code`` is the user's TOTP code for the step before, at or
        after now, and later than the last step accepted (so no code works twice)."""
        record = self._totp_record(user)
        now = self._now()
        if record is None or not record["confirmed"]:
            return succeed(False)
        step = _totp_step(record["secret"], code, now)
        if step is None or step <= record["last_step"]:
            return succeed(False)
        key = canonical_address(user).encode()

        def op(txn: Txn) -> bool:
            current = txn.get_json(b"totp", key)
            if current is None or current["secret"] != record["secret"]:
                return False
            if step <= current["last_step"]:
                return False  # a concurrent login used it first
            current["last_step"] = step
            txn.put_json(b"totp", key, current)
            return True

        return self.db.write(op)

    def use_recovery_code(self, user: str, code: str) -> Deferred[bool]:
        """Deferred[bool]: whether ``code`` is one of the user's unused recovery codes; a
        matching code is used up."""
        record = self._totp_record(user)
        if record is None or not record["confirmed"]:
            return succeed(False)
        digest = self._mac(_RECOVERY, _compact(code)).hex()
        if not any(hmac.compare_digest(digest, h) for h in record["recovery"]):
            return succeed(False)
        key = canonical_address(user).encode()

        def op(txn: Txn) -> bool:
            current = txn.get_json(b"totp", key)
            if current is None or digest not in current["recovery"]:
                return False
            current["recovery"].remove(digest)
            txn.put_json(b"totp", key, current)
            return True

        return self.db.write(op)

    def verify_second_factor(self, user: str, code: str) -> Deferred[bool]:
        """A TOTP code (six digits) or else a recovery code."""
        compact = code.strip().replace(" ", "")
        if len(compact) == 6 and compact.isdigit():
            return self.verify_totp(user, compact)
        return self.use_recovery_code(user, code)

    @deferred
    def regenerate_recovery_codes(self, user: str) -> Deferred[list[str]]:
        """Replace the user's recovery codes with 10 new ones (shown once). MailError when
        TOTP is not on."""
        key = canonical_address(user)
        codes = [new_recovery_code() for _ in range(RECOVERY_CODES)]
        hashes = [self._mac(_RECOVERY, _compact(c)).hex() for c in codes]

        def op(txn: Txn) -> list[str]:
            record = txn.get_json(b"totp", key.encode())
            if record is None or not record["confirmed"]:
                raise MailError(f"{key} does not use two-factor authentication")
            record["recovery"] = hashes
            txn.put_json(b"totp", key.encode(), record)
            return codes

        return self.db.write(op)

    # -- bearer tokens ----------------------------------------------------------------------

    @deferred
    def issue_token(
        self,
        user: str,
        scopes: Iterable[str] = frozenset({"api"}),
        ttl: float | None = 3600.0,
        name: str = "",
    ) -> Deferred[str]:
        """A new bearer token (43 url-safe characters, 256 bits) for ``user``, valid ``ttl``
        seconds (None: until revoked); Deferred[str], shown once."""
        key = canonical_address(user)
        wanted = _scopes(scopes, SCOPES | {REFRESH_SCOPE})
        if ttl is not None and ttl <= 0:
            raise InvalidName("a token's lifetime must be positive")
        name = _name(name) if name else ""
        token = secrets.token_urlsafe(32)
        digest = self._mac(_TOKEN, token.encode())
        now = self._now()
        record = {
            "id": self.token_id(token),
            "user": key,
            "scopes": sorted(wanted),
            "name": name,
            "created": now,
            "expires": None if ttl is None else now + ttl,
            "last_used": None,
            "last_ip": "",
        }

        def op(txn: Txn) -> str:
            txn.put_json(b"tokens", digest, record)
            return token

        return self.db.write(op)

    def token_id(self, token: str) -> str:
        """The short id under which ``token`` is listed (8 hex digits of its keyed hash)."""
        return self._mac(_TOKEN, token.encode("utf-8", "replace"))[:4].hex()

    def check_token(
        self, token: str, scope: str | None = None, ip: str = ""
    ) -> Deferred[str | None]:
        """Deferred: the owner of ``token`` if it is known, unexpired and (when ``scope`` is
        given) has that scope, else None. A success records the time and ``ip``."""
        digest = self._mac(_TOKEN, token.encode("utf-8", "replace"))
        now = self._now()
        # The look-up key is a keyed hash, so its timing tells nothing about stored tokens.
        with self.db.read() as txn:
            raw = txn.get_json(b"tokens", digest)
        if raw is None:
            return succeed(None)
        if raw.get("expires") is not None and now >= raw["expires"]:
            return succeed(None)
        if scope is not None and scope not in raw["scopes"]:
            return succeed(None)

        def record(txn: Txn) -> str | None:
            current = txn.get_json(b"tokens", digest)
            if current is None:
                return None
            current["last_used"] = now
            current["last_ip"] = ip
            txn.put_json(b"tokens", digest, current)
            return str(current["user"])

        return self.db.write(record)

    def list_tokens(self, user: str) -> list[TokenInfo]:
        """The user's tokens, oldest first (expired ones included until purged)."""
        try:
            key = canonical_address(user)
        except InvalidName:
            return []
        with self.db.read() as txn:
            rows = [_token_from_json(load(v)) for _, v in txn.prefix(b"tokens", b"")]
        return sorted((t for t in rows if t.user == key), key=lambda t: (t.created, t.id))

    def revoke_token(self, token: str) -> Deferred[bool]:
        """Delete ``token`` (a log-out); Deferred[bool]: whether it existed."""
        digest = self._mac(_TOKEN, token.encode("utf-8", "replace"))
        return self.db.write(lambda txn: txn.delete(b"tokens", digest))

    @deferred
    def revoke_token_id(self, user: str, ident: str) -> Deferred[bool]:
        """Delete the user's token with id ``ident`` (as listed); Deferred[bool]."""
        key = canonical_address(user)
        ident = ident.strip().lower()

        def op(txn: Txn) -> bool:
            for k, v in list(txn.prefix(b"tokens", b"")):
                raw = load(v)
                if raw["user"] == key and raw["id"] == ident:
                    return txn.delete(b"tokens", k)
            return False

        return self.db.write(op)

    # -- housekeeping -----------------------------------------------------------------------

    def purge_expired(self) -> Deferred[int]:
        """Delete expired app passwords and tokens; Deferred[int]: how many."""
        now = self._now()

        def op(txn: Txn) -> int:
            gone = 0
            for table in (b"app_passwords", b"tokens"):
                for k, v in list(txn.prefix(table, b"")):
                    expires = load(v).get("expires")
                    if expires is not None and now >= expires:
                        txn.delete(table, k)
                        gone += 1
            return gone

        return self.db.write(op)

    def forget_user(self, user: str) -> Deferred[None]:
        """Delete everything of ``user`` (see :func:`forget_user`)."""
        return forget_user(self.db, user)
