"""Differential test: the IMAP conformance dialogs against our server and a private Dovecot.

Both servers get the same accounts and mailbox state (:data:`tests.imap.test_dialogs.STATE`:
alice's INBOX with three messages no session has seen, her folder Work, the default
special-use folders, everything subscribed, hierarchy delimiter "/"). Every
``rfc-conformance/dialogs/imap/*.dialog`` whose ``# peers:`` header allows Dovecot is played
against both with the runner tracing which step read each line, Dovecot's play leniently (an
expectation it does not meet does not end it, so the whole dialog is compared). The
responses are normalised by ``rfc-conformance/differential_imap.py`` (tags, response text,
UIDVALIDITY, dates, CAPABILITY lists, ID contents, MODSEQ and object ids, the order of
untagged responses and of items within one) and compared step by step by
``rfc-conformance/differential.py``. Every remaining difference must be a line of
``rfc-conformance/variations.tsv`` (a variation the RFC text there allows, a Dovecot deviation
from a rule we keep, or a consequence of an earlier difference), and every recorded one must
still occur. The dialogs of a listener that needs TLS (``logindisabled-*``) are played
against a second Dovecot that refuses plain-text authentication.

Dovecot is started once per module; before each dialog the user's home is replaced with a
fresh copy of the state (after the previous dialog's ``imap`` processes have exited).
Skips when Dovecot is not installed.
"""

from __future__ import annotations

import imaplib
import os
import shutil
import ssl
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.conformance import CONFORMANCE
from tests.imap.conftest import HOST, PASSWORD, USERS, in_thread
from tests.imap.test_dialogs import ALICE, DIALOGS, FOLDERS, STATE, dialog_server, runner
from tests.peers.dovecot import DovecotInstance, DovecotUnavailable, unavailable_reason

if str(CONFORMANCE) not in sys.path:
    sys.path.insert(0, str(CONFORMANCE))  # rfc-conformance/ is a directory, not a package
import differential
import differential_imap

__all__ = ["dialog_server"]  # the fixture, re-used from tests/imap/test_dialogs.py

REASON = unavailable_reason()

SPECIAL = {"Archive": "\\Archive", "Drafts": "\\Drafts", "Junk": "\\Junk", "Sent": "\\Sent",
           "Trash": "\\Trash"}  # fmt: skip


class DialogDovecot(DovecotInstance):
    """A private Dovecot shaped like our accounts: one namespace, delimiter "/", INBOX and
    the default special-use folders created and subscribed at login."""

    def config_text(self) -> str:
        mailboxes = [
            "  mailbox INBOX {",
            "    auto = subscribe",
            "  }",
        ]
        for name, use in SPECIAL.items():
            mailboxes += [
                f"  mailbox {name} {{",
                "    auto = subscribe",
                f"    special_use = {use}",
                "  }",
            ]
        namespace = [
            "namespace inbox {",
            "  inbox = yes",
            "  separator = /",
            "  prefix =",
            *mailboxes,
            "}",
        ]
        return super().config_text() + "\n".join(namespace) + "\n"

    def reset(self) -> None:
        """Replace every user's home with :data:`STATE` (alice) or an empty maildir."""
        self.wait_sessions_ended()
        for user in self.users:
            home = self.home_dir / user
            if home.exists():
                gone = home.with_name(f"{user}.old{time.monotonic_ns()}")
                home.rename(gone)
                shutil.rmtree(gone, ignore_errors=True)
            self.maildir(user)
        maildir = self.maildir(ALICE)
        for name in FOLDERS:
            self.folder_dir(maildir, name)
        (maildir / "subscriptions").write_text("".join(f"{name}\n" for name in FOLDERS))
        os.chown(maildir / "subscriptions", self.uid, self.gid)
        for stored in STATE:
            path = self.add_message(ALICE, stored.data, stored.flags, stored.internaldate)
            if stored.folder != "INBOX":
                folder = self.folder_dir(maildir, stored.folder)
                path.rename(folder / path.parent.name / path.name)
        if self.master_pid() is not None:
            self.sync_folders()

    def sync_folders(self) -> None:
        """Let Dovecot assign UIDs in every folder now (STATUS does, without claiming
        \\Recent), as our store did on delivery: Dovecot's maildir otherwise numbers a folder's
        files only when a session first looks, after messages copied in meanwhile."""
        client = imaplib.IMAP4(self.host, self.imap_port, timeout=10)
        try:
            # over TLS: the strict instance refuses plain-text logins (its certificate is
            # self-signed)
            client.starttls(ssl._create_unverified_context())
            client.login(ALICE, PASSWORD)
            for name in ("INBOX", *FOLDERS):
                client.status(name, "(UIDNEXT)")
        finally:
            client.logout()

    def folder_dir(self, maildir: Path, name: str) -> Path:
        """The Maildir++ directory of folder ``name`` (``.name``), made if missing."""
        path = maildir / f".{name}"
        for directory in (path, path / "cur", path / "new", path / "tmp"):
            if not directory.exists():
                directory.mkdir(mode=0o700)
                os.chown(directory, self.uid, self.gid)
        marker = path / "maildirfolder"
        marker.touch()
        os.chown(marker, self.uid, self.gid)
        return path

    def wait_sessions_ended(self, timeout: float = 10.0) -> None:
        """Wait until no ``imap`` process of this instance is left (a dialog's session
        writes its indexes after the client has gone)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            names = []
            for pid in self.processes():
                try:
                    names.append(Path(f"/proc/{pid}/comm").read_text().strip())
                except OSError:
                    continue
            if "imap" not in names:
                return
            time.sleep(0.02)




PLAYED = [path for path in DIALOGS if runner.parse_dialog(path).plays_against("dovecot")]


def _start(root: Path, settings: dict[str, str]) -> DialogDovecot:
    users = {f"{user}@example.org": PASSWORD for user in USERS}
    instance = DialogDovecot(root, users=users, tls=True, settings=settings)
    instance.start()
    return instance


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DialogDovecot]:
    """One private Dovecot for the module; :meth:`DialogDovecot.reset` before each dialog."""
    if REASON is not None:
        pytest.skip(REASON)
    try:
        instance = _start(tmp_path_factory.mktemp("dovecot"), {})
    except DovecotUnavailable as error:
        pytest.skip(str(error))
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def strict_dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DialogDovecot]:
    """A second private Dovecot that, like our ``auth_needs_tls`` listener, refuses
    plain-text authentication before TLS (``disable_plaintext_auth``)."""
    if REASON is not None:
        pytest.skip(REASON)
    settings = {"disable_plaintext_auth": "yes"}
    try:
        instance = _start(tmp_path_factory.mktemp("dovecot-strict"), settings)
    except DovecotUnavailable as error:
        pytest.skip(str(error))
    yield instance
    instance.stop()


def test_variations_file_is_consistent() -> None:
    """variations.tsv parses, and each row names an expectation step of an existing dialog
    and quotes the RFC text that allows the variation."""
    _, problems = differential.load_variations()
    assert problems == []


@pytest.mark.parametrize("path", PLAYED, ids=[path.name for path in PLAYED])
@pytest_twisted.ensureDeferred
async def test_same_dialog_same_answers(
    dialog_server: Any, request: pytest.FixtureRequest, path: Path
) -> None:
    """Both servers answer the dialog alike, up to the allowed variations recorded in
    variations.tsv (and every variation recorded for it still occurs)."""
    dialog = differential.parse_dialog(path)
    strict = path.name.startswith("logindisabled-")
    reference: DialogDovecot = request.getfixturevalue("strict_dovecot" if strict else "dovecot")
    await in_thread(reference.reset)
    implicit = dialog.tls == "implicit"
    ours = (HOST, dialog_server.port_for(dialog))
    theirs = (reference.host, reference.imaps_port if implicit else reference.imap_port)
    name = path.relative_to(CONFORMANCE).as_posix()
    result, found = await in_thread(differential_imap.compare, dialog, name, ours, theirs)
    assert result.passed, result.summary()
    variations, _ = differential.load_variations()
    unexplained, stale = differential.judge(found, variations, name)
    assert not unexplained and not stale, differential.report(unexplained, stale)
