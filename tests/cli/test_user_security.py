"""``mailserver user app-password|totp|token`` through the installed script: secrets are
printed once and then work against the credential store the server uses."""

from __future__ import annotations

import os
import re
import stat
import time

import pyotp
import pytest
import pytest_twisted
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor

from mailserver.auth.checkers import MailLogin, SecondFactorRequired, mail_checkers
from mailserver.auth.credentials import CredentialStore, load_or_create_secret, secret_path
from tests.cli.conftest import ALICE, PASSWORD

APP_PASSWORD = re.compile(r"^([a-z]{4}-){3}[a-z]{4}$", re.M)


def open_credentials(cli):
    """The example's storage opened in this process, with its credential store."""
    storage = cli.storage()
    key = load_or_create_secret(secret_path(str(cli.data)))
    return storage, CredentialStore(storage.db, reactor, key)


def added_password(out: str) -> tuple[str, str]:
    """(id, password) from the output of 'app-password add'."""
    ident = re.search(r"added app password ([0-9a-f]{8}) ", out).group(1)
    return ident, APP_PASSWORD.search(out).group(0)


@pytest_twisted.ensureDeferred
async def test_app_password_add_prints_it_once_and_it_works(example):
    """'app-password add' prints the id and the password (once, with a note saying so); the
    password opens the scoped protocols only; the key file is private."""
    done = example("user", "app-password", "add", ALICE, "Thunderbird", "--scope", "imap,smtp")
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert out.startswith("added app password ")
    assert "(Thunderbird) for alice@example.org: imap,smtp, expires never" in out
    assert "shown only now" in done.stderr.decode()
    _, password = added_password(out)
    key = secret_path(str(example.data))
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    storage, creds = open_credentials(example)
    try:
        assert await creds.check_app_password(ALICE, password, "imap", "192.0.2.1")
        assert not await creds.check_app_password(ALICE, password, "pop3")
    finally:
        await storage.aclose()
    listing = example.ok("user", "app-password", "list", ALICE)
    assert password not in listing
    assert "from 192.0.2.1" in listing


def test_list_and_revoke(example):
    """'list' shows id, name, scopes and expiry; 'revoke' deletes by id."""
    first, _ = added_password(
        example.ok("user", "app-password", "add", ALICE, "phone", "--expires", "30")
    )
    second, _ = added_password(example.ok("user", "app-password", "add", ALICE, "laptop"))
    lines = example.ok("user", "app-password", "list", ALICE).splitlines()
    assert lines[0].split() == ["ID", "NAME", "SCOPES", "EXPIRES", "LAST", "USED"]
    assert lines[1].split()[:3] == [first, "phone", "imap,pop3,smtp"]
    assert "UTC" in lines[1] and lines[1].endswith("never")
    assert lines[2].split()[:3] == [second, "laptop", "imap,pop3,smtp"]
    assert example.ok("user", "app-password", "revoke", ALICE, first) == (
        f"revoked app password {first} of {ALICE}\n"
    )
    lines = example.ok("user", "app-password", "list", ALICE).splitlines()
    assert [line.split()[0] for line in lines[1:]] == [second]
    err = example.fails("user", "app-password", "revoke", ALICE, first)
    assert f"has no app password {first}" in err and "app-password list" in err


def test_app_password_refusals(example):
    """Bad scopes, duplicate names and unknown users fail in one line with the fix."""
    err = example.fails("user", "app-password", "add", ALICE, "x", "--scope", "imap,ftp")
    assert "unknown scope ftp" in err and "api,imap,pop3,smtp" in err
    example.ok("user", "app-password", "add", ALICE, "phone")
    err = example.fails("user", "app-password", "add", ALICE, "phone")
    assert "already has an app password named 'phone'" in err
    err = example.fails("user", "app-password", "add", "bob@example.org", "phone")
    assert "no user bob@example.org" in err
    err = example.fails("user", "app-password", "add", ALICE, "y", "--expires", "0")
    assert "--expires" in err
    assert "no user bob@example.org" in example.fails(
        "user", "app-password", "list", "bob@example.org"
    )


@pytest_twisted.ensureDeferred
async def test_totp_enable_then_confirm_with_code(example):
    """'totp enable' shows the otpauth URI, a QR code and the key, and (stdin not being a
    terminal) says how to confirm; '--code' with a code computed from that key switches it
    on and prints 10 recovery codes. The account password then fails for mail with the
    two-factor reply, while an app password works."""
    done = example("user", "totp", "enable", ALICE)
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    uri = re.search(r"^otpauth://totp/\S+$", out, re.M).group(0)
    secret = re.search(r"^key: ([A-Z2-7]+)$", out, re.M).group(1)
    assert f"secret={secret}" in uri
    assert "▀" in out or "█" in out  # the QR code, in block characters
    assert "--code CODE" in done.stderr.decode()

    code = pyotp.TOTP(secret).now()
    out = example.ok("user", "totp", "enable", ALICE, "--code", code)
    assert out.startswith(f"two-factor authentication is on for {ALICE}\n")
    recovery = re.findall(r"^  ([0-9a-f]{5}-[0-9a-f]{5})$", out, re.M)
    assert len(recovery) == 10

    _, password = added_password(example.ok("user", "app-password", "add", ALICE, "phone"))
    storage, creds = open_credentials(example)
    try:
        assert creds.totp_enabled(ALICE)
        chain = mail_checkers(storage.directory, creds, "smtp")[0]
        with pytest.raises(SecondFactorRequired, match="app password"):
            await chain.requestAvatarId(MailLogin(ALICE.encode(), PASSWORD.encode(), "smtp"))
        assert await chain.requestAvatarId(MailLogin(ALICE.encode(), password.encode())) == ALICE
        assert await creds.use_recovery_code(ALICE, recovery[0])
    finally:
        await storage.aclose()

    err = example.fails("user", "totp", "enable", ALICE)
    assert "on already" in err and "totp disable" in err
    assert example.ok("user", "totp", "disable", ALICE) == (
        f"two-factor authentication is off for {ALICE}\n"
    )
    assert "does not use two-factor" in example.fails("user", "totp", "disable", ALICE)


def test_totp_confirm_refusals(example):
    """--code without a pending key, or with a wrong code, fails with the next step."""
    err = example.fails("user", "totp", "enable", ALICE, "--code", "123456")
    assert "no key of alice@example.org is waiting" in err
    out = example.ok("user", "totp", "enable", ALICE)
    secret = re.search(r"^key: ([A-Z2-7]+)$", out, re.M).group(1)
    totp = pyotp.TOTP(secret)
    near = {totp.at(time.time() + k * 30) for k in (-1, 0, 1)}
    wrong = next(c for c in ("000000", "111111", "222222", "333333") if c not in near)
    err = example.fails("user", "totp", "enable", ALICE, "--code", wrong)
    assert "is not the current one" in err and "clock" in err


@pytest_twisted.ensureDeferred
async def test_token_issue_list_revoke(example):
    """'token issue' prints a token once; it names alice for its scopes; 'revoke' ends it."""
    out = example.ok(
        "user",
        "token",
        "issue",
        ALICE,
        "--scope",
        "api,imap",
        "--ttl",
        "2",
        "--name",
        "backup script",
    )
    ident = re.search(r"issued token ([0-9a-f]{8}) for alice@example.org: api,imap", out).group(1)
    token = out.splitlines()[1]
    storage, creds = open_credentials(example)
    try:
        assert await creds.check_token(token, "imap") == ALICE
        assert await creds.check_token(token, "smtp") is None
    finally:
        await storage.aclose()
    lines = example.ok("user", "token", "list", ALICE).splitlines()
    assert lines[1].startswith(f"{ident}  backup script  api,imap  ")
    assert token not in "\n".join(lines)
    assert example.ok("user", "token", "revoke", ALICE, ident) == (
        f"revoked token {ident} of {ALICE}\n"
    )
    assert "has no token" in example.fails("user", "token", "revoke", ALICE, ident)
    assert "--ttl" in example.fails("user", "token", "issue", ALICE, "--ttl", "-1")


@pytest_twisted.ensureDeferred
async def test_user_del_forgets_credentials(example):
    """Deleting a user deletes their app passwords, TOTP and tokens: a new user of the same
    address starts clean."""
    example.ok("user", "app-password", "add", ALICE, "phone")
    example.ok("user", "token", "issue", ALICE)
    example.ok("user", "totp", "enable", ALICE)
    example.ok("user", "del", ALICE)
    example.ok("user", "add", ALICE, "--password-stdin", input=PASSWORD + "\n")
    storage, creds = open_credentials(example)
    try:
        assert creds.list_app_passwords(ALICE) == []
        assert creds.list_tokens(ALICE) == []
        assert not creds.totp_pending(ALICE)
        chain = mail_checkers(storage.directory, creds, "smtp")[0]
        assert await chain.requestAvatarId(MailLogin(ALICE.encode(), PASSWORD.encode())) == ALICE
        with pytest.raises(UnauthorizedLogin):
            await chain.requestAvatarId(MailLogin(ALICE.encode(), b"wrong"))
    finally:
        await storage.aclose()
