"""Helpers for driving real IMAP clients (mbsync, offlineimap, curl, mutt) against the real
server: find the client or skip, run it with a timeout and fail with its output, run a
curses client on a pseudo-terminal, deliver mail by SMTP, and read both ends of a sync (a
local Maildir and the server's folders through imaplib with the server's own certificate).

Design rules:
- every client run has a timeout; a failure message always carries what the client printed;
- clients get their own ``HOME`` (a temporary directory), never the user's dot files;
- the server is read back with a *verifying* TLS context (its self-signed certificate as the
  only trust anchor), so the certificate the clients were given is checked too.
"""

from __future__ import annotations

import email
import imaplib
import os
import pty
import re
import select
import shutil
import smtplib
import ssl
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import ServerProcess
from tests.e2e.mail import PASSWORD

DOMAIN = "example.org"
USER = f"alice@{DOMAIN}"
#: Seconds any one client run may take before the test fails.
CLIENT_TIMEOUT = 60.0
#: How much of a client's output a failure message shows (its tail).
OUTPUT_TAIL = 20000

#: Debian package of each client binary, for the skip reason.
PACKAGES = {"mbsync": "isync", "offlineimap": "offlineimap3", "curl": "curl", "mutt": "mutt"}


def require(binary: str) -> str:
    """The path of ``binary``, or skip the test saying which package provides it."""
    path = shutil.which(binary)
    if path is None:
        package = PACKAGES.get(binary, binary)
        pytest.skip(f"{binary} is not installed (Debian package {package}; "
                    "run scripts/install-debian-deps as root)")
    return path


def server_cert(server: ServerProcess) -> Path:
    """The self-signed certificate the server wrote under its data directory at start-up
    (see :func:`mailserver.tls.ensure_self_signed`)."""
    path = Path(server.data_dir) / "tls" / "cert.pem"
    assert path.exists(), f"no certificate at {path}:\n{server.output()}"
    return path


def write_muttrc(home: Path, server: ServerProcess, settings: str) -> Path:
    """``home/muttrc`` for USER over IMAP: the server's certificate as the only trusted one,
    TLS forced, no questions or pauses (and no moves, no marking old, no stats polling),
    then ``settings`` (one ``set`` per line)."""
    config = home / "muttrc"
    config.write_text(f"""\
set imap_user="{USER}"
set imap_pass="{PASSWORD}"
set folder="{home}"
set spoolfile=""
set certificate_file="{server_cert(server)}"
set ssl_force_tls=yes
set wait_key=no
set quit=yes
set move=no
set mark_old=no
set mail_check_stats=no
""" + settings)
    return config


def tail(text: str) -> str:
    return text if len(text) <= OUTPUT_TAIL else "[...]\n" + text[-OUTPUT_TAIL:]


@dataclass(repr=False)
class Run:
    """One finished client run: the command, its exit status and everything it printed."""

    command: Sequence[str]
    returncode: int
    output: str

    def __str__(self) -> str:
        return f"$ {' '.join(self.command)}\n(exit {self.returncode})\n{tail(self.output)}"

    __repr__ = __str__  # pytest shows an assertion message object by its repr


def run(
    command: Sequence[str],
    home: Path,
    *,
    timeout: float = CLIENT_TIMEOUT,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> Run:
    """Run ``command`` with ``HOME=home`` and a timeout; stdout and stderr together. With
    ``check``, a non-zero exit or a timeout fails the test with the output."""
    __tracebackhide__ = True
    environment = dict(os.environ, HOME=str(home), LC_ALL="C.UTF-8", **(env or {}))
    try:
        done = subprocess.run(
            list(command), cwd=home, env=environment, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
        )
    except subprocess.TimeoutExpired as expired:
        output = (expired.stdout or b"").decode(errors="replace")
        pytest.fail(f"timed out after {timeout}s:\n{Run(command, -1, output)}")
    result = Run(command, done.returncode, done.stdout.decode(errors="replace"))
    if check and result.returncode != 0:
        pytest.fail(f"client failed:\n{result}")
    return result


def run_in_pty(command: Sequence[str], home: Path, *, timeout: float = CLIENT_TIMEOUT) -> Run:
    """Run a full-screen client on a pseudo-terminal (``TERM=vt100``), draining the screen
    output so it never blocks; fails the test on a timeout or a non-zero exit."""
    __tracebackhide__ = True
    controller, terminal = pty.openpty()
    environment = dict(os.environ, HOME=str(home), TERM="vt100", LC_ALL="C.UTF-8")
    process = subprocess.Popen(
        list(command), cwd=home, env=environment, stdin=terminal, stdout=terminal,
        stderr=terminal, start_new_session=True,
    )
    os.close(terminal)
    screen = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                process.kill()
                process.wait()
                pytest.fail(f"timed out after {timeout}s:\n"
                            f"{Run(command, -1, screen.decode(errors='replace'))}")
            ready, _, _ = select.select([controller], [], [], min(remaining, 1.0))
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: the client closed the terminal
                    chunk = b""
                if not chunk:
                    break
                screen += chunk
            elif process.poll() is not None:
                break
        returncode = process.wait(timeout=max(deadline - time.monotonic(), 1.0))
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait()
    result = Run(command, returncode, screen.decode(errors="replace"))
    if returncode != 0:
        pytest.fail(f"client failed:\n{result}")
    return result


def smtp_send(server: ServerProcess, subject: str, to: str = USER) -> None:
    """Deliver one message to ``to`` through the server's SMTP listener."""
    message = (f"From: carol@example.net\r\nTo: {to}\r\nSubject: {subject}\r\n"
               f"Message-ID: <{subject.replace(' ', '.')}@example.net>\r\n\r\n"
               f"Body of {subject}.\r\n")
    with smtplib.SMTP("127.0.0.1", server.ports["smtp.listen"], timeout=15) as client:
        client.sendmail("carol@example.net", [to], message.encode())


# --- the server's side, through imaplib ------------------------------------------------------

#: Flags a sync client can round-trip (``\\Recent`` is session state, not a stored flag).
SYSTEM_FLAGS = {"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"}
_FETCH = re.compile(rb"UID (\d+) FLAGS \(([^)]*)\)")


class ServerView:
    """The account as the server sees it, over implicit TLS verified against the server's
    own certificate. Use as a context manager."""

    def __init__(self, server: ServerProcess) -> None:
        context = ssl.create_default_context(cafile=str(server_cert(server)))
        self.client = imaplib.IMAP4_SSL("127.0.0.1", server.ports["imap.tls_listen"],
                                        ssl_context=context, timeout=15)
        self.client.login(USER, PASSWORD)

    def __enter__(self) -> ServerView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.logout()

    def folders(self) -> set[str]:
        typ, data = self.client.list()
        assert typ == "OK", data
        names = set()
        for line in data:
            assert isinstance(line, bytes), data
            name = line.rsplit(b' "/" ', 1)[1].decode()
            names.add(name[1:-1] if name.startswith('"') else name)
        return names

    def messages(self, folder: str) -> dict[str, set[str]]:
        """Subject -> stored system flags of every message in ``folder``."""
        typ, data = self.client.select(f'"{folder}"', readonly=True)
        assert typ == "OK", data
        if data == [b"0"]:
            return {}
        typ, data = self.client.uid("FETCH", "1:*",
                                    "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK", data
        out: dict[str, set[str]] = {}
        for item in data:
            if not isinstance(item, tuple):
                continue
            match = _FETCH.search(item[0])
            assert match, item
            subject = email.message_from_bytes(item[1])["Subject"]
            out[subject] = set(match.group(2).decode().split()) & SYSTEM_FLAGS
        self.client.unselect()
        return out

    def text(self, folder: str, subject: str) -> bytes:
        """The body (BODY.PEEK[TEXT]) of the message with ``subject`` in ``folder``."""
        uid = self.uid_of(folder, subject)
        typ, data = self.client.uid("FETCH", str(uid), "(BODY.PEEK[TEXT])")
        assert typ == "OK" and isinstance(data[0], tuple), data
        self.client.unselect()
        return data[0][1]

    def uid_of(self, folder: str, subject: str) -> int:
        self.client.select(f'"{folder}"')
        typ, data = self.client.uid("SEARCH", "SUBJECT", f'"{subject}"')
        assert typ == "OK" and len(data[0].split()) == 1, (subject, data)
        return int(data[0])

    def store(self, folder: str, subject: str, change: str, flags: str) -> None:
        uid = self.uid_of(folder, subject)
        typ, data = self.client.uid("STORE", str(uid), change, flags)
        assert typ == "OK", data
        self.client.unselect()

    def move(self, folder: str, subject: str, target: str) -> None:
        uid = self.uid_of(folder, subject)
        typ, data = self.client.uid("MOVE", str(uid), f'"{target}"')
        assert typ == "OK", data
        self.client.unselect()


# --- the client's side: a Maildir --------------------------------------------------------------

#: Maildir info letters (the part after ``:2,``) and the IMAP flags they stand for.
MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen",
                 "T": "\\Deleted"}


@dataclass
class MaildirMessage:
    path: Path
    subject: str

    @property
    def letters(self) -> str:
        """The Maildir flag letters of the file name."""
        name = self.path.name
        return name.split(":2,", 1)[1] if ":2," in name else ""

    @property
    def flags(self) -> set[str]:
        return {MAILDIR_FLAGS[c] for c in self.letters if c in MAILDIR_FLAGS}

    def set_letters(self, letters: str) -> None:
        """Rename into ``cur/`` with exactly these flag letters (what a mail reader does)."""
        base = self.path.name.split(":2,", 1)[0]
        target = self.path.parent.parent / "cur" / f"{base}:2,{''.join(sorted(letters))}"
        self.path.rename(target)
        self.path = target

    def move_to(self, folder: Path, *, strip: Sequence[str] = ()) -> None:
        """Move the file into ``folder/cur``, dropping the client's own name fields (a
        ``,U=<uid>`` of mbsync or offlineimap names the UID in the *old* folder)."""
        base, _, letters = self.path.name.partition(":2,")
        for field in strip:
            base = re.sub(rf",{field}=[^,:]*", "", base)
        target = folder / "cur" / f"{base}:2,{letters}"
        self.path.rename(target)
        self.path = target


def maildir(folder: Path) -> dict[str, MaildirMessage]:
    """Subject -> message of every message in the Maildir ``folder`` (new/ and cur/)."""
    out: dict[str, MaildirMessage] = {}
    for sub in ("new", "cur"):
        directory = folder / sub
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            with path.open("rb") as handle:
                subject = email.message_from_binary_file(handle)["Subject"]
            assert subject not in out, f"duplicate {subject!r} in {folder}"
            out[subject] = MaildirMessage(path, subject)
    return out


def make_maildir(folder: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return folder


#: The body of :func:`put_new`'s messages: 8-bit UTF-8, with Maildir's bare LF line ends.
DRAFT_BODY = "Grüße aus Köln – written here.\n"


def put_new(folder: Path, subject: str) -> None:
    """A message written straight into ``folder/new`` the way a local mail reader writes
    one: LF line ends and an 8-bit UTF-8 body."""
    make_maildir(folder)
    message = (f"From: {USER}\nTo: bob@example.net\nSubject: {subject}\n"
               f"Message-ID: <{subject.replace(' ', '.')}@example.org>\nMIME-Version: 1.0\n"
               "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
               f"{DRAFT_BODY}")
    (folder / "new" / f"{time.time_ns()}.local:2,").write_bytes(message.encode())
