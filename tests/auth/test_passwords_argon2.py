"""Stored argon2 hashes (imported from other servers) are accepted; new hashes are bcrypt."""

from __future__ import annotations

from argon2 import PasswordHasher

from mailserver.auth.passwords import hash_password, verify_password


def test_argon2_hashes_verify():
    stored = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("correct horse")
    assert stored.startswith("$argon2id$")
    assert verify_password("correct horse", stored)
    assert not verify_password("wrong", stored)
    assert not verify_password("correct horse", "$argon2id$v=19$garbage")


def test_new_hashes_are_bcrypt():
    assert hash_password("pw", cost=4).startswith("$2")
