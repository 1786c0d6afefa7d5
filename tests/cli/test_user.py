"""``mailserver user add|passwd|del|list`` through the installed script."""

from __future__ import annotations

import pytest
import pytest_twisted

from mailserver.cli.main import main
from tests.cli.conftest import ALICE, PASSWORD


def test_add_with_password_stdin_and_list(example):
    """'user add --password-stdin' creates the user and the mailbox; 'user list' shows
    every user with their role."""
    out = example.ok(
        "user", "add", "Bob@Example.org", "--password-stdin", "--role", "admin", input="pw\n"
    )
    assert out == "added user bob@example.org (admin)\n"
    assert (example.maildir("bob@example.org") / "cur").is_dir()
    assert example.ok("user", "list") == ("alice@example.org  user\nbob@example.org    admin\n")


def test_duplicate_add_fails(example):
    """Adding an existing user fails in one line that names 'user passwd'."""
    err = example.fails("user", "add", ALICE, "--password-stdin", input="other\n")
    assert err == (
        f"error: user {ALICE} exists already; to change the password: "
        f"mailserver user passwd {ALICE}\n"
    )


def test_add_without_domain_fails_with_advice(example):
    """A user in a domain that is not served is refused with the command that adds it."""
    err = example.fails("user", "add", "bob@nowhere.org", "--password-stdin", input="pw\n")
    assert "domain nowhere.org is not served" in err
    assert "mailserver domain add nowhere.org" in err
    assert not example.maildir("bob@nowhere.org").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["user", "add", ALICE, "--password", "secret"],
        ["user", "add", ALICE, "secret"],
        ["user", "passwd", ALICE, "--password=secret"],
    ],
)
def test_password_never_from_argv(argv, capsys):
    """There is no way to pass a password on the command line: argparse refuses it."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["add", "passwd"])
def test_only_password_option_is_stdin(verb, capsys):
    """The help of 'user add' and 'user passwd' offers no password option but --password-stdin."""
    with pytest.raises(SystemExit):
        main(["user", verb, "--help"])
    words = capsys.readouterr().out.replace("[", " ").replace("]", " ").split()
    assert {w for w in words if w.startswith("--pass")} == {"--password-stdin"}


def test_not_a_terminal_needs_password_stdin(example):
    """Without a terminal and without --password-stdin, the error says to use it."""
    err = example.fails("user", "add", "bob@example.org", input="pw\n")
    assert "stdin is not a terminal" in err
    assert "--password-stdin" in err
    assert not example.maildir("bob@example.org").exists()


def test_empty_password_refused(example):
    """An empty line is not a password."""
    err = example.fails("user", "add", "bob@example.org", "--password-stdin", input="\n")
    assert err == "error: the password is empty; give a non-empty password\n"


@pytest_twisted.ensureDeferred
async def test_passwd_changes_the_password(example):
    """After 'user passwd' the new password is accepted and the old one is not."""
    out = example.ok("user", "passwd", ALICE, "--password-stdin", input="new secret\n")
    assert out == f"changed the password of {ALICE}\n"
    storage = example.storage()
    try:
        assert await storage.directory.check_password(ALICE, "new secret")
        assert not await storage.directory.check_password(ALICE, PASSWORD)
    finally:
        await storage.aclose()


def test_del_removes_user_and_mail(example):
    """'user del' removes the user and their maildir."""
    assert example.maildir().is_dir()
    assert example.ok("user", "del", ALICE) == f"deleted user {ALICE} and their mail\n"
    assert not example.maildir().exists()


def test_del_keep_mail_then_add_reuses_it(example):
    """'user del --keep-mail' keeps the maildir, and adding the user again reuses it."""
    marker = example.maildir() / "cur" / "1.keep.host:2,S"
    marker.write_bytes(b"Subject: kept\r\n\r\nkept\r\n")
    assert example.ok("user", "del", ALICE, "--keep-mail") == (
        f"deleted user {ALICE}; their mailbox is kept\n"
    )
    done = example("user", "add", ALICE, "--password-stdin", input="again\n")
    assert done.returncode == 0, done.stderr
    assert b"reusing it" in done.stderr
    assert marker.exists()


@pytest_twisted.ensureDeferred
async def test_add_rolls_back_when_the_mailbox_fails(example):
    """When the mailbox cannot be created the new user is removed again, and the error is
    one line naming the file."""
    (example.data / "mail" / "example.org" / "bob").write_text("in the way")
    err = example.fails("user", "add", "bob@example.org", "--password-stdin", input="pw\n")
    assert err.startswith("error: ")
    assert "example.org/bob" in err
    storage = example.storage()
    try:
        assert storage.directory.get_user("bob@example.org") is None
        assert not storage.store.has_account("bob@example.org")
    finally:
        await storage.aclose()
