"""``mailserver deliver``: local delivery from stdin with sysexits(3) exit statuses."""

from __future__ import annotations

import io
import sys

import pytest

from mailserver.cli.main import main
from tests.cli.conftest import ALICE

MESSAGE = b"From: bob@example.net\nSubject: piped\n\nhello\n"


def delivered(cli, address=ALICE):
    """The message files in ``address``'s INBOX maildir (new/ and cur/)."""
    inbox = cli.maildir(address)
    return sorted(inbox.glob("new/*")) + sorted(inbox.glob("cur/*"))


def test_delivers_to_inbox(example):
    """A message on stdin lands in the recipient's INBOX with a Return-Path; exit 0. Once
    indexed it sits in cur/ with an empty flags suffix (the store files it there on commit)."""
    done = example("deliver", "--from", "bob@example.net", ALICE, input=MESSAGE)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    [path] = delivered(example)
    assert (path.parent.name, path.name[-3:]) == ("cur", ":2,")
    assert path.read_bytes() == b"Return-Path: <bob@example.net>\r\n" + MESSAGE


def test_unknown_recipient_is_ex_nouser(example):
    """An unknown recipient gives 67 (EX_NOUSER) and nothing is delivered to the others."""
    err = example.fails(
        "deliver", ALICE, "nobody@example.org", "x@remote.example", input=MESSAGE, status=67
    )
    assert "no local mailbox for nobody@example.org, x@remote.example" in err
    assert "mailserver user add" in err
    assert delivered(example) == []


def test_storage_unavailable_is_ex_tempfail(example):
    """An index that cannot be opened gives 75 (EX_TEMPFAIL): the caller should retry."""
    index = example.data / "index"
    for child in index.iterdir():
        child.unlink()
    index.rmdir()
    index.write_text("not an index")
    err = example.fails("deliver", ALICE, input=MESSAGE, status=75)
    assert "cannot open the index" in err
    assert "try again later" in err


@pytest.mark.parametrize(
    "stdin, status, words",
    [
        (b"", 65, "empty"),
        (b"\nbody only\n", 65, "empty or starts with a blank line"),
        (b"just some text\n", 65, "does not start with a header field"),
    ],
)
def test_bad_input_is_ex_dataerr(stdin, status, words, monkeypatch, capsys):
    """Input that is not a message gives 65 (EX_DATAERR), before any storage is opened."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    assert main(["deliver", ALICE]) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert words in err


@pytest.mark.parametrize("argv", [["bad@"], ["--from", "no-at-sign", ALICE], ["<>"]])
def test_bad_address_is_ex_usage(argv, capsys):
    """A malformed sender or recipient gives 64 (EX_USAGE) in one line."""
    assert main(["deliver", *argv]) == 64
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "give local@domain" in err


def test_bad_config_is_ex_config(tmp_path, monkeypatch, capsys):
    """A config error gives 78 (EX_CONFIG) and the one-line config message."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[store]\nfsync = 3\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(MESSAGE)))
    assert main(["--config", str(bad), "deliver", ALICE]) == 78
    err = capsys.readouterr().err
    assert err.startswith("config error: store.fsync")
    assert err.count("\n") == 1
