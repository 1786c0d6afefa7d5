"""Password hashes: bcrypt with a configurable cost (blocking: call from a worker thread).

New hashes are bcrypt; stored argon2 hashes (``$argon2id$...``, e.g. imported from Dovecot
or another server) are accepted as they are, verified with argon2-cffi.

bcrypt reads at most 72 bytes of a password (and bcrypt 5 refuses longer ones), so a longer
password is first reduced with SHA-256 and the hash is marked ``$bcrypt-sha256$`` (the
scheme passlib uses), which keeps long pass phrases whole.
"""

from __future__ import annotations

import base64
import hashlib

import bcrypt

_SHA_PREFIX = "$bcrypt-sha256$"
_MAX_BCRYPT = 72

#: A hash of nothing, checked when a user does not exist so the reply takes as long as a
#: wrong password (no user enumeration through timing).
_DUMMY = bcrypt.hashpw(b"no such user", bcrypt.gensalt(4))


def _reduce(password: bytes) -> bytes:
    return base64.b64encode(hashlib.sha256(password).digest())


def hash_password(password: str, cost: int = 12) -> str:
    """A salted hash of ``password`` for storage."""
    raw = password.encode("utf-8")
    if len(raw) > _MAX_BCRYPT:
        return _SHA_PREFIX + bcrypt.hashpw(_reduce(raw), bcrypt.gensalt(cost)).decode()
    return bcrypt.hashpw(raw, bcrypt.gensalt(cost)).decode()


def verify_password(password: str, stored: str | None, cost: int = 12) -> bool:
    """Whether ``password`` matches ``stored``. With ``stored=None`` (unknown user) a dummy
    hash of the same cost is checked and False returned, in about the same time."""
    raw = password.encode("utf-8")
    if stored is None:
        bcrypt.checkpw(raw[:_MAX_BCRYPT], dummy_hash(cost))
        return False
    if stored.startswith(_SHA_PREFIX):
        return bool(bcrypt.checkpw(_reduce(raw), stored[len(_SHA_PREFIX) :].encode()))
    if stored.startswith("$argon2"):
        return _verify_argon2(stored, raw)
    if not stored.startswith("$2"):
        return False  # an unknown scheme never matches
    if len(raw) > _MAX_BCRYPT:
        return False
    return bool(bcrypt.checkpw(raw, stored.encode()))


_dummies: dict[int, bytes] = {4: _DUMMY}


def dummy_hash(cost: int) -> bytes:
    if cost not in _dummies:
        _dummies[cost] = bcrypt.hashpw(b"no such user", bcrypt.gensalt(cost))
    return _dummies[cost]


def _verify_argon2(stored: str, password: bytes) -> bool:
    """Check an argon2 (i, d or id) PHC string; a malformed one never matches."""
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    try:
        return bool(PasswordHasher().verify(stored, password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
