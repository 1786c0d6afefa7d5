"""``mailserver import`` and ``export``: an account's folders out as Maildir++ or mbox and
back in through the store, keeping bytes, flags, keywords and internal dates; what mutt and
Python's ``mailbox`` module (and Dovecot's maildir keywords) make of the files."""

from __future__ import annotations

import mailbox
import os
import time
from io import BytesIO
from pathlib import Path

import pytest
import pytest_twisted

from mailserver.types import FlagMode
from tests.cli.conftest import ALICE, PASSWORD, Cli

BOB = "bob@example.org"
TRICKY = (
    b"From: carol@example.net\r\nTo: alice@example.org\r\nSubject: tricky\r\n"
    b"Message-ID: <tricky@example.net>\r\n\r\nFrom the start of a line.\r\n"
    b">From an already quoted line.\r\n\r\nFrom after a blank line\r\n"
)
#: folder -> [(message, flags, internal date)]
MAIL = {
    "INBOX": [
        (b"Return-Path: <bob@example.net>\r\nFrom: bob@example.net\r\nSubject: one\r\n\r\n1\r\n",
         {"\\Seen"}, 1_600_000_001),
        (b"From: bob@example.net\r\nSubject: two\r\n\r\n2\r\n",
         {"\\Flagged", "\\Answered", "$label", "$Forwarded"}, 1_600_000_002),
        (TRICKY, set(), 1_600_000_003),
    ],
    "Drafts": [(b"From: alice@example.org\r\nSubject: draft\r\n\r\nd\r\n",
                {"\\Draft", "\\Seen", "\\Deleted"}, 1_600_000_004)],
    "Projects/Ünïcode": [(b"From: dave@example.net\r\nSubject: uni\r\n\r\nu\r\n",
                          {"work"}, 1_600_000_005)],
}


async def fill(cli: Cli) -> None:
    storage = cli.storage()
    try:
        account = storage.store.account(ALICE)
        for folder, messages in MAIL.items():
            if folder == "Projects/Ünïcode":
                await account.create_folder(folder)
            target = account.folder(folder)
            for data, flags, date in messages:
                uid = await target.append(BytesIO(data), internaldate=date)
                await target.store_flags([uid], flags, FlagMode.ADD)
    finally:
        await storage.aclose()


async def snapshot(cli: Cli, address: str) -> dict[str, list[tuple[bytes, frozenset, float]]]:
    """{folder: [(bytes, flags, internal date)] in UID order}, folders with mail only."""
    storage = cli.storage()
    try:
        account = storage.store.account(address)
        found = {}
        for info in account.list_folders():
            folder = account.folder(info.name)
            rows = [(m.open().read(), m.info.flags, m.info.internaldate)
                    for m in folder.messages(folder.uids())]
            if rows:
                found[info.name] = rows
        return found
    finally:
        await storage.aclose()


def expected() -> dict[str, list[tuple[bytes, frozenset, float]]]:
    return {folder: [(data, frozenset(flags), float(date)) for data, flags, date in rows]
            for folder, rows in MAIL.items()}


def add_bob(cli: Cli) -> None:
    cli.ok("user", "add", BOB, "--password-stdin", input=PASSWORD + "\n")


@pytest.mark.parametrize("fmt", ["maildir", "mbox"])
@pytest_twisted.ensureDeferred
async def test_export_then_import_gives_back_bytes_flags_and_dates(example, tmp_path, fmt):
    """Export alice's account and import it into bob's: every folder (created as needed),
    message (byte for byte, mbox From-quoting undone), flag, keyword and internal date."""
    await fill(example)
    assert await snapshot(example, ALICE) == expected()
    out = tmp_path / "out"
    done = example("export", ALICE, str(out), "--format", fmt)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode() == (
        f"exported 5 message(s) in 8 folder(s) of {ALICE} to {out} ({fmt})\n"
    )
    assert "exporting [##############################] 5/5" in done.stderr.decode()
    add_bob(example)
    done = example("import", BOB, str(out))
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode() == f"imported 5 message(s) into 8 folder(s) of {BOB}\n"
    assert "note: created folder Projects/Ünïcode" in done.stderr.decode()
    assert await snapshot(example, BOB) == expected()
    assert example.ok("verify").endswith(": OK\n")


@pytest_twisted.ensureDeferred
async def test_python_mailbox_reads_the_exported_maildir_and_mbox(example, tmp_path):
    """Python's mailbox module lists the exported folders and reads each message's flags."""
    await fill(example)
    example.ok("export", ALICE, str(tmp_path / "md"))
    example.ok("export", ALICE, str(tmp_path / "mb"), "--format", "mbox")
    md = mailbox.Maildir(tmp_path / "md", create=False)
    assert sorted(md.list_folders()) == sorted(
        ["Sent", "Drafts", "Junk", "Trash", "Archive", "Projects", "Projects.&ANw-n&AO8-code"]
    )
    inbox = {m["Subject"]: m.get_flags() for m in md}
    assert inbox == {"one": "S", "two": "FPRa", "tricky": ""}
    assert md.get_folder("Projects.&ANw-n&AO8-code").keys()
    [draft] = list(md.get_folder("Drafts"))
    assert draft.get_flags() == "DST"
    assert draft.get_date() == 1_600_000_004
    box = mailbox.mbox(tmp_path / "mb" / "INBOX.mbox", create=False)
    flags = {m["Subject"]: (m.get_flags(), m["X-Keywords"]) for m in box}
    assert flags == {"one": ("RO", None), "two": ("OAF", "$Forwarded $label"),
                     "tricky": ("O", None)}
    one = box[0]
    assert one.get_from() == "bob@example.net Sun Sep 13 12:26:41 2020"
    assert (tmp_path / "mb" / "Projects" / "Ünïcode.mbox").exists()


def _mutt(tmp_path: Path, folder: Path, target: Path, target_type: str) -> None:
    """mutt on a pseudo-terminal opens ``folder`` and copies every message to ``target``."""
    from tests.e2e.imap_clients import require, run_in_pty

    mutt = require("mutt")
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    config = home / "muttrc"
    config.write_text(f"""\
set folder="{home}"
set spoolfile=""
set mbox_type={target_type}
set wait_key=no
set quit=yes
set move=no
set mark_old=no
set confirmappend=no
set confirmcreate=no
set header_cache=""
""")
    keys = f"<tag-pattern>~A<enter><tag-prefix><copy-message>{target}<enter><quit>"
    run_in_pty([mutt, "-n", "-F", str(config), "-f", str(folder), "-e", f'push "{keys}"'], home)


def mutt_status(text: str, subject: str) -> tuple[str, str]:
    """(Status, X-Status) mutt wrote in the header of the message with ``subject``."""
    start = text.index(f"Subject: {subject}\r\n")
    header = text[start : text.index("\n\n", start)]
    fields = dict(line.split(": ", 1) for line in header.splitlines() if ": " in line)
    return fields.get("Status", ""), fields.get("X-Status", "")


@pytest_twisted.ensureDeferred
async def test_mutt_reads_the_exported_maildir_and_mbox_with_their_flags(example, tmp_path):
    """mutt opens the exported maildir and copies it to an mbox, writing the flags it read
    from the file names; it opens the exported mbox and copies it to a maildir, naming the
    files with the flags it read from Status/X-Status."""
    await fill(example)
    example.ok("export", ALICE, str(tmp_path / "md"))
    example.ok("export", ALICE, str(tmp_path / "mb"), "--format", "mbox")
    saved = tmp_path / "saved.mbox"
    _mutt(tmp_path, tmp_path / "md", saved, "mbox")
    text = saved.read_bytes().decode()  # mutt's mbox relies on Content-Length: read its headers
    assert text.count("Content-Length: ") == 3, text
    assert mutt_status(text, "one") == ("RO", "")
    assert mutt_status(text, "two") == ("O", "AF")
    assert mutt_status(text, "tricky") == ("O", "")
    target = tmp_path / "saved-md"
    _mutt(tmp_path, tmp_path / "mb" / "INBOX.mbox", target, "Maildir")
    copied = {m["Subject"]: m.get_flags() for m in mailbox.Maildir(target, create=False)}
    assert copied == {"one": "S", "two": "FR", "tricky": ""}


@pytest_twisted.ensureDeferred
async def test_import_of_a_foreign_mbox_and_dovecot_maildir(example, tmp_path):
    """An mbox written by Python's mailbox module (LF line ends, Status/X-Status flags) is
    imported with CRLF line ends and its flags, into --folder; a Dovecot maildir's keyword
    letters are read from dovecot-keywords, its dates from the files' mtimes."""
    path = tmp_path / "python.mbox"
    box = mailbox.mbox(path)
    first = mailbox.mboxMessage(b"From: x@example.net\nSubject: py\n\nFrom here\n")
    first.set_flags("RF")
    first.set_from("x@example.net", time.gmtime(1_500_000_000))
    box.add(first)
    box.add(mailbox.mboxMessage(b"From: y@example.net\nSubject: py2\n\nhi\n"))
    box.close()
    out = example.ok("import", ALICE, str(path), "--folder", "Old")
    assert out == f"imported 2 message(s) into 1 folder(s) of {ALICE}\n"
    maildir = tmp_path / "dovecot"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "dovecot-keywords").write_text("0 $Junk\n1 work\n")
    file = maildir / "cur" / "1500000000.M1P1.host:2,Sb"
    file.write_bytes(b"From: z@example.net\nSubject: dc\n\nbody\n")
    os.utime(file, (1_500_000_100, 1_500_000_100))
    example.ok("import", ALICE, str(maildir))
    got = await snapshot(example, ALICE)
    assert got["Old"] == [
        (b"From: x@example.net\r\nSubject: py\r\n\r\nFrom here\r\n",
         frozenset({"\\Seen", "\\Flagged"}), 1_500_000_000.0),
        (b"From: y@example.net\r\nSubject: py2\r\n\r\nhi\r\n", frozenset(), got["Old"][1][2]),
    ]
    assert got["INBOX"] == [(b"From: z@example.net\r\nSubject: dc\r\n\r\nbody\r\n",
                             frozenset({"\\Seen", "work"}), 1_500_000_100.0)]


def test_import_errors_name_the_problem(example, tmp_path):
    """A missing path, a file that is not an mbox, a directory with no mail, an unknown
    user: one error line each, and nothing imported."""
    assert example.fails("import", ALICE, str(tmp_path / "nope")) == (
        f"error: {tmp_path / 'nope'} does not exist\n"
    )
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    assert example.fails("import", ALICE, str(text)) == (
        f"error: {text} is not an mbox file (it does not start with 'From ')\n"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert example.fails("import", ALICE, str(empty)) == (
        f"error: {empty} holds no maildir (cur/, new/) and no mbox file (starting with 'From ')\n"
    )
    box = tmp_path / "one.mbox"
    box.write_bytes(b"From a@b Thu Jan  1 00:00:00 2020\nSubject: x\n\nx\n")
    assert example.fails("import", "carol@example.org", str(box)) == (
        "error: carol@example.org has no mailbox here; create it first: "
        "mailserver user add carol@example.org\n"
    )
    assert example.fails("import", "not an address", str(box)).startswith(
        "error: 'not an address' is not an address"
    )


def test_import_stops_at_the_quota_and_says_what_to_do(example, tmp_path):
    """Over quota, the import stops with how many messages went in and how to go on."""
    example.ok("user", "quota", ALICE, "100")
    box = tmp_path / "big.mbox"
    box.write_bytes(b"".join(
        b"From a@b Thu Jan  1 00:00:00 2020\nSubject: %d\n\n%s\n\n" % (n, b"x" * 60)
        for n in range(3)
    ))
    done = example("import", ALICE, str(box))
    assert done.returncode == 1
    assert done.stderr.decode().splitlines()[-1] == (
        f"error: {ALICE} is over quota after 1 of 3 message(s); raise it (mailserver user "
        f"quota {ALICE} SIZE) or free space, then import the rest"
    )


def test_export_refuses_a_non_empty_target_and_unknown_folders(example, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    assert example.fails("export", ALICE, str(full)) == (
        f"error: {full} exists and is not an empty directory; give a new one\n"
    )
    assert example.fails("export", ALICE, str(tmp_path / "e"), "--folder", "Nope") == (
        f"error: {ALICE} has no folder Nope\n"
    )
    done = example("export", ALICE, str(tmp_path / "f"), "--format", "pst")
    assert done.returncode == 2
    assert "invalid choice: 'pst'" in done.stderr.decode()
