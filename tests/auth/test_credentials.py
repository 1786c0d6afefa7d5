"""The credential store: app passwords, TOTP (with recovery codes) and bearer tokens, kept as
keyed hashes in the LMDB index; the server key that makes the hashes."""

from __future__ import annotations

import os
import re
import stat

import pyotp
import pytest
import pytest_twisted

from mailserver.auth.credentials import (
    RECOVERY_CODES,
    TOTP_STEP,
    CredentialStore,
    load_or_create_secret,
    secret_path,
)
from mailserver.db import Database, schema
from mailserver.errors import AlreadyExists, InvalidName, MailError, StoreUnavailable
from tests.auth.conftest import T0
from tests.conftest import Storage

ALICE = "alice@example.org"
KEY = bytes(range(32))


@pytest.fixture
def creds(storage, clock):
    return CredentialStore(storage.db, clock, KEY, issuer="mail.example.org")


def code_at(secret: str, when: float) -> str:
    return pyotp.TOTP(secret, interval=TOTP_STEP).at(int(when))


def wrong_code(secret: str, when: float) -> str:
    """A six-digit code that is none of the codes within a step of ``when``."""
    near = {code_at(secret, when + k * TOTP_STEP) for k in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in near)


async def enrolled(creds, clock):
    """Alice with TOTP on; (secret, recovery codes). The confirming code used step T0."""
    enrolment = await creds.enable_totp(ALICE)
    codes = await creds.confirm_totp(ALICE, code_at(enrolment.secret, clock.seconds()))
    return enrolment.secret, codes


def all_index_bytes(db: Database) -> bytes:
    """Every key and value of every sub-db, concatenated (to look for leaked secrets)."""
    out = []
    with db.read() as txn:
        for name in schema.SUBDBS:
            for key, value in txn.prefix(name, b""):
                out += [key, value]
    return b"\n".join(out)


# -- the key ---------------------------------------------------------------------------------


def test_secret_is_created_once_with_private_modes(tmp_path):
    """The key is 32 random bytes in a 0600 file in a 0700 directory; later loads read it."""
    path = secret_path(str(tmp_path / "var"))
    assert path == str(tmp_path / "var" / "keys" / "credentials.key")
    first = load_or_create_secret(path)
    assert len(first) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert load_or_create_secret(path) == first
    assert os.listdir(os.path.dirname(path)) == ["credentials.key"]


def test_secret_of_wrong_size_or_open_to_others_is_refused(tmp_path):
    """A truncated key, or one others can read, stops with the fix in the message."""
    path = str(tmp_path / "credentials.key")
    load_or_create_secret(path)
    os.chmod(path, 0o644)
    with pytest.raises(StoreUnavailable, match="chmod 600"):
        load_or_create_secret(path)
    with open(path, "wb") as f:
        f.write(b"short")
    os.chmod(path, 0o600)
    with pytest.raises(StoreUnavailable, match="32 bytes"):
        load_or_create_secret(path)


def test_store_refuses_a_short_key(storage, clock):
    with pytest.raises(ValueError):
        CredentialStore(storage.db, clock, b"too short")


# -- schema ----------------------------------------------------------------------------------


def test_index_is_at_schema_3_with_credential_tables(storage):
    """A new index is at version 3 or later and has the three credential sub-dbs."""
    assert schema.SCHEMA_VERSION >= 3
    assert storage.db.schema_version == schema.SCHEMA_VERSION
    for name in (b"app_passwords", b"totp", b"tokens"):
        assert name in storage.db.dbs


@pytest_twisted.ensureDeferred
async def test_version_2_index_is_migrated(tmp_path):
    """An index written by schema 2 opens at the current version, data kept."""
    old = Storage(tmp_path)
    await old.directory.add_domain("example.org")
    old.db.write_sync(lambda txn: txn.put_json(b"meta", b"schema_version", 2))
    await old.aclose()
    new = Storage(tmp_path)
    try:
        assert new.db.schema_version == schema.SCHEMA_VERSION
        assert new.directory.has_domain("example.org")
    finally:
        await new.aclose()


# -- app passwords ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_app_password_is_shown_once_and_stored_as_keyed_hash(creds, storage):
    """add gives an id and 'abcd-efgh-ijkl-mnop'; the index holds neither the password nor
    an unkeyed hash of it."""
    ident, password = await creds.add_app_password(ALICE, "phone", {"imap"})
    assert re.fullmatch(r"[0-9a-f]{8}", ident)
    assert re.fullmatch(r"([a-z]{4}-){3}[a-z]{4}", password)
    stored = all_index_bytes(storage.db)
    assert password.encode() not in stored
    assert password.replace("-", "").encode() not in stored
    [entry] = creds.list_app_passwords("Alice@Example.ORG")
    assert (entry.id, entry.user, entry.name, entry.scopes) == (ident, ALICE, "phone", {"imap"})
    assert entry.last_used is None and entry.expires is None


@pytest_twisted.ensureDeferred
async def test_app_password_checks_for_its_scopes_only(creds):
    """An IMAP-only app password opens IMAP, not SMTP, POP3 or the API."""
    _, password = await creds.add_app_password(ALICE, "phone", {"imap"})
    assert await creds.check_app_password(ALICE, password, "imap")
    for protocol in ("smtp", "pop3", "api", ""):
        assert not await creds.check_app_password(ALICE, password, protocol)


@pytest_twisted.ensureDeferred
async def test_app_password_typed_loosely_still_checks(creds):
    """Case, spaces and dashes do not matter (people copy it by hand)."""
    _, password = await creds.add_app_password(ALICE, "phone")
    typed = password.upper().replace("-", " ")
    assert await creds.check_app_password(ALICE.upper(), typed, "smtp")


@pytest_twisted.ensureDeferred
async def test_wrong_password_other_user_or_bad_name_fail(creds):
    _, password = await creds.add_app_password(ALICE, "phone")
    assert not await creds.check_app_password(ALICE, "aaaa-bbbb-cccc-dddd", "smtp")
    assert not await creds.check_app_password("bob@example.org", password, "smtp")
    assert not await creds.check_app_password("not an address", password, "smtp")


@pytest_twisted.ensureDeferred
async def test_app_password_expires(creds, clock):
    """An app password works until its expiry time, then never again."""
    _, password = await creds.add_app_password(ALICE, "guest", expires=T0 + 3600)
    clock.advance(3599)
    assert await creds.check_app_password(ALICE, password, "smtp")
    clock.advance(1)
    assert not await creds.check_app_password(ALICE, password, "smtp")
    [entry] = creds.list_app_passwords(ALICE)
    assert entry.expired(clock.seconds())
    assert await creds.purge_expired() == 1
    assert creds.list_app_passwords(ALICE) == []


@pytest_twisted.ensureDeferred
async def test_last_use_time_and_ip_are_recorded(creds, clock):
    """A successful check records when and from where; a failed one records nothing."""
    _, password = await creds.add_app_password(ALICE, "phone")
    clock.advance(60)
    assert await creds.check_app_password(ALICE, password, "imap", "192.0.2.7")
    clock.advance(60)
    assert not await creds.check_app_password(ALICE, password, "api", "198.51.100.1")
    [entry] = creds.list_app_passwords(ALICE)
    assert (entry.last_used, entry.last_ip) == (T0 + 60, "192.0.2.7")


@pytest_twisted.ensureDeferred
async def test_revoked_app_password_stops_working(creds):
    ident, password = await creds.add_app_password(ALICE, "phone")
    other, kept = await creds.add_app_password(ALICE, "laptop")
    assert await creds.revoke(ALICE, ident)
    assert not await creds.revoke(ALICE, ident)
    assert not await creds.check_app_password(ALICE, password, "smtp")
    assert await creds.check_app_password(ALICE, kept, "smtp")
    assert [e.id for e in creds.list_app_passwords(ALICE)] == [other]


@pytest_twisted.ensureDeferred
async def test_bad_names_scopes_and_duplicates_are_refused(creds):
    await creds.add_app_password(ALICE, "phone")
    with pytest.raises(AlreadyExists):
        await creds.add_app_password(ALICE, "Phone")
    for bad in ("", " ", "x" * 65, "tab\there"):
        with pytest.raises(InvalidName):
            await creds.add_app_password(ALICE, bad)
    for scopes in (set(), {"ftp"}, {"imap", "nntp"}):
        with pytest.raises(InvalidName):
            await creds.add_app_password(ALICE, "other", scopes)
    with pytest.raises(InvalidName):
        await creds.add_app_password("not an address", "x")


@pytest_twisted.ensureDeferred
async def test_another_server_key_checks_nothing(creds, storage, clock):
    """The hashes are keyed: with another key, no app password or token checks."""
    _, password = await creds.add_app_password(ALICE, "phone")
    token = await creds.issue_token(ALICE)
    other = CredentialStore(storage.db, clock, b"\xff" * 32)
    assert not await other.check_app_password(ALICE, password, "smtp")
    assert await other.check_token(token) is None


# -- TOTP ------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_enrolment_is_pending_until_a_first_code(creds, clock):
    """enable_totp gives the seed and an otpauth URI; TOTP is on only after a right code,
    which returns the recovery codes."""
    enrolment = await creds.enable_totp(ALICE)
    assert enrolment.uri.startswith("otpauth://totp/mail.example.org:alice%40example.org?")
    assert f"secret={enrolment.secret}" in enrolment.uri
    assert creds.totp_pending(ALICE) and not creds.totp_enabled(ALICE)
    assert not await creds.verify_totp(ALICE, code_at(enrolment.secret, T0))
    assert await creds.confirm_totp(ALICE, wrong_code(enrolment.secret, T0)) is None
    codes = await creds.confirm_totp(ALICE, code_at(enrolment.secret, T0))
    assert len(codes) == RECOVERY_CODES == len(set(codes))
    assert all(re.fullmatch(r"[0-9a-f]{5}-[0-9a-f]{5}", c) for c in codes)
    assert creds.totp_enabled(ALICE) and not creds.totp_pending(ALICE)
    assert creds.recovery_codes_left(ALICE) == RECOVERY_CODES
    stored = all_index_bytes(creds.db)
    assert not any(c.encode() in stored or c.replace("-", "").encode() in stored for c in codes)


@pytest_twisted.ensureDeferred
async def test_confirm_needs_a_pending_enrolment(creds, clock):
    with pytest.raises(MailError):
        await creds.confirm_totp(ALICE, "123456")
    await enrolled(creds, clock)
    with pytest.raises(AlreadyExists):
        await creds.enable_totp(ALICE)


@pytest_twisted.ensureDeferred
async def test_new_enrolment_replaces_a_pending_one(creds):
    first = await creds.enable_totp(ALICE)
    second = await creds.enable_totp(ALICE)
    assert first.secret != second.secret
    assert await creds.confirm_totp(ALICE, code_at(first.secret, T0)) is None


@pytest.mark.parametrize("offset,accepted", [(-2, False), (-1, True), (1, True), (2, False)])
@pytest_twisted.ensureDeferred
async def test_codes_one_step_either_side_are_accepted(creds, clock, offset, accepted):
    """RFC 6238 §5.2: the codes of the step before and after now pass (clock drift); two
    steps away they do not."""
    secret, _ = await enrolled(creds, clock)
    clock.advance(10 * TOTP_STEP)  # well past the confirming step
    now = clock.seconds()
    code = code_at(secret, now + offset * TOTP_STEP)
    if code == code_at(secret, now):
        pytest.skip("two steps happen to share a code")
    assert await creds.verify_totp(ALICE, code) is accepted


@pytest_twisted.ensureDeferred
async def test_a_code_is_never_accepted_twice(creds, clock):
    """A used code, and any code of an earlier step, is refused (replay)."""
    secret, _ = await enrolled(creds, clock)
    assert not await creds.verify_totp(ALICE, code_at(secret, T0))  # used to confirm
    clock.advance(5 * TOTP_STEP)
    now = clock.seconds()
    assert await creds.verify_totp(ALICE, code_at(secret, now + TOTP_STEP))
    assert not await creds.verify_totp(ALICE, code_at(secret, now + TOTP_STEP))
    assert not await creds.verify_totp(ALICE, code_at(secret, now))
    clock.advance(2 * TOTP_STEP)
    assert await creds.verify_totp(ALICE, code_at(secret, clock.seconds()))


@pytest_twisted.ensureDeferred
async def test_malformed_codes_are_refused(creds, clock):
    await enrolled(creds, clock)
    for bad in ("", "12345", "1234567", "abcdef", "12 34 5"):
        assert not await creds.verify_totp(ALICE, bad)
    assert not await creds.verify_totp("bob@example.org", "123456")


@pytest_twisted.ensureDeferred
async def test_recovery_codes_work_once_each(creds, clock):
    """A recovery code passes once (typed with any case or dashes), then never again."""
    _, codes = await enrolled(creds, clock)
    assert await creds.use_recovery_code(ALICE, codes[0].upper().replace("-", ""))
    assert not await creds.use_recovery_code(ALICE, codes[0])
    assert await creds.verify_second_factor(ALICE, codes[1])
    assert not await creds.verify_second_factor(ALICE, codes[1])
    assert creds.recovery_codes_left(ALICE) == RECOVERY_CODES - 2
    fresh = await creds.regenerate_recovery_codes(ALICE)
    assert not await creds.use_recovery_code(ALICE, codes[2])
    assert await creds.use_recovery_code(ALICE, fresh[2])


@pytest_twisted.ensureDeferred
async def test_disable_removes_totp(creds, clock):
    secret, codes = await enrolled(creds, clock)
    assert await creds.disable_totp(ALICE)
    assert not await creds.disable_totp(ALICE)
    assert not creds.totp_enabled(ALICE)
    clock.advance(TOTP_STEP)
    assert not await creds.verify_totp(ALICE, code_at(secret, clock.seconds()))
    assert not await creds.use_recovery_code(ALICE, codes[0])
    with pytest.raises(MailError):
        await creds.regenerate_recovery_codes(ALICE)


# -- tokens ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_token_checks_until_expiry(creds, clock, storage):
    """A token names its owner until its lifetime is over; it is stored only hashed."""
    token = await creds.issue_token(ALICE, {"api", "imap"}, ttl=600, name="script")
    assert len(token) >= 43
    assert token.encode() not in all_index_bytes(storage.db)
    assert await creds.check_token(token) == ALICE
    assert await creds.check_token(token, "imap", "192.0.2.9") == ALICE
    assert await creds.check_token(token, "smtp") is None
    assert await creds.check_token(token + "x") is None
    [info] = creds.list_tokens(ALICE)
    assert (info.id, info.name, info.expires) == (creds.token_id(token), "script", T0 + 600)
    assert (info.last_used, info.last_ip) == (T0, "192.0.2.9")
    clock.advance(600)
    assert await creds.check_token(token) is None


@pytest_twisted.ensureDeferred
async def test_tokens_are_revoked_by_value_or_id(creds):
    first = await creds.issue_token(ALICE)
    second = await creds.issue_token(ALICE, ttl=None)
    assert await creds.revoke_token(first)
    assert await creds.check_token(first) is None
    assert not await creds.revoke_token_id("bob@example.org", creds.token_id(second))
    assert await creds.revoke_token_id(ALICE, creds.token_id(second))
    assert await creds.check_token(second) is None
    with pytest.raises(InvalidName):
        await creds.issue_token(ALICE, ttl=0)
    with pytest.raises(InvalidName):
        await creds.issue_token(ALICE, {"root"})


@pytest_twisted.ensureDeferred
async def test_forget_user_removes_everything(creds, clock):
    """Deleting a user's credentials leaves other users' alone."""
    await creds.add_app_password(ALICE, "phone")
    await enrolled(creds, clock)
    await creds.issue_token(ALICE)
    _, bobs = await creds.add_app_password("bob@example.org", "phone")
    bob_token = await creds.issue_token("bob@example.org")
    await creds.forget_user(ALICE)
    assert creds.list_app_passwords(ALICE) == []
    assert creds.list_tokens(ALICE) == []
    assert not creds.totp_enabled(ALICE)
    assert await creds.check_app_password("bob@example.org", bobs, "smtp")
    assert await creds.check_token(bob_token) == "bob@example.org"
