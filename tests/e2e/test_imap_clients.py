"""Real IMAP clients against the real server (`twistd mailserver`, issue 6): mail arrives by
SMTP, then mbsync and offlineimap sync it two ways (flags, deletions, moves between folders
and a folder created on the client all reach the server, and the server's flag changes and
moves reach the client's Maildir), curl lists, fetches and searches, and mutt logs in, reads,
flags and saves into a new folder on a pseudo-terminal. STARTTLS (with LOGINDISABLED before
it) and implicit TLS are both used, with the server's self-signed certificate as the trust
anchor.

Each client skips with the Debian package to install when it is missing; each run has a
timeout and a failure shows what the client printed (its protocol trace where it has one).
"""

from __future__ import annotations

import base64
import hashlib
import imaplib
import json
import ssl
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.e2e.conftest import ServerProcess
from tests.e2e.imap_clients import (
    DOMAIN,
    DRAFT_BODY,
    USER,
    Run,
    ServerView,
    maildir,
    put_new,
    require,
    run,
    run_in_pty,
    server_cert,
    smtp_send,
    tail,
    write_muttrc,
)
from tests.e2e.mail import PASSWORD, provision

pytestmark = pytest.mark.e2e

SPECIAL_FOLDERS = {"Archive", "Drafts", "Junk", "Sent", "Trash"}


@pytest.fixture
def server(tmp_path: Path):
    with ServerProcess(
        tmp_path / "server",
        listen_keys=("http.listen", "smtp.listen", "imap.listen", "imap.tls_listen"),
    ) as process:
        yield process
    # pytest shows this (captured output) only when the test failed
    print(f"--- server log ---\n{tail(process.output())}")


async def start(server: ServerProcess) -> None:
    await provision(Path(server.data_dir), DOMAIN)
    await deferToThread(server.start)


def endpoint(server: ServerProcess, tls: str) -> tuple[int, bool]:
    """(port, implicit TLS?) for ``tls`` = "starttls" or "imaps"."""
    if tls == "starttls":
        return server.ports["imap.listen"], False
    return server.ports["imap.tls_listen"], True


# --- the two-way sync scenario both sync clients play ----------------------------------------


def two_way_sync(
    server: ServerProcess,
    mail: Path,
    sync: Callable[[], Run],
    delete: Callable[[Path], None],
    client_fields: tuple[str, ...],
) -> None:
    """Deliver three messages, pull them, then: mark one seen and flagged, delete one, move
    one to Archive and write a draft into a new local folder; push; check the server. Then
    change flags, move a message and deliver on the server; pull; check the Maildir."""
    for subject in ("one", "two", "three"):
        smtp_send(server, subject)
    log = sync()
    inbox = maildir(mail / "INBOX")
    assert set(inbox) == {"one", "two", "three"}, log
    assert all(message.flags == set() for message in inbox.values()), log
    assert all((mail / name / "cur").is_dir() for name in SPECIAL_FOLDERS), log

    inbox["one"].set_letters("FS")
    delete(inbox["two"].path)
    inbox["three"].move_to(mail / "Archive", strip=client_fields)
    put_new(mail / "Projects", "draft")
    log = sync()
    with ServerView(server) as view:
        assert view.messages("INBOX") == {"one": {"\\Flagged", "\\Seen"}}, log
        assert view.messages("Archive") == {"three": set()}, log
        assert "Projects" in view.folders(), log
        assert view.messages("Projects") == {"draft": set()}, log
        # uploaded as sent over IMAP: CRLF line ends, the 8-bit UTF-8 untouched
        assert view.text("Projects", "draft") == DRAFT_BODY.replace("\n", "\r\n").encode(), log
        # and now the other way round
        view.store("INBOX", "one", "-FLAGS", "(\\Seen)")
        view.store("INBOX", "one", "+FLAGS", "(\\Answered)")
        view.move("Archive", "three", "Junk")
    smtp_send(server, "four")
    log = sync()
    inbox = maildir(mail / "INBOX")
    assert set(inbox) == {"one", "four"}, log
    assert inbox["one"].letters == "FR", log
    assert inbox["four"].letters == "", log
    assert maildir(mail / "Archive") == {}, log
    assert set(maildir(mail / "Junk")) == {"three"}, log
    assert set(maildir(mail / "Projects")) == {"draft"}, log
    with ServerView(server) as view:  # nothing came back different
        assert view.messages("INBOX") == {"one": {"\\Flagged", "\\Answered"}, "four": set()}


# --- mbsync ---------------------------------------------------------------------------------


def mbsync_config(home: Path, server: ServerProcess, tls: str) -> Path:
    """An mbsync config: the whole account into ``home/Mail`` (INBOX at ``Mail/INBOX``),
    folders created and expunges propagated both ways."""
    port, implicit = endpoint(server, tls)
    (home / "Mail").mkdir()
    config = home / "mbsyncrc"
    # SSLType: isync 1.4's name (1.5 calls it TLSType and still accepts this one).
    config.write_text(f"""\
IMAPAccount server
Host 127.0.0.1
Port {port}
User {USER}
Pass {PASSWORD}
SSLType {"IMAPS" if implicit else "STARTTLS"}
CertificateFile {server_cert(server)}

IMAPStore remote
Account server

MaildirStore local
Path {home / "Mail"}/
Inbox {home / "Mail" / "INBOX"}
SubFolders Verbatim

Channel everything
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
CopyArrivalDate yes
SyncState *
""")
    return config


@pytest.mark.parametrize("tls", ["starttls", "imaps"])
@pytest_twisted.ensureDeferred
async def test_mbsync_two_way_sync(server, tmp_path, tls):
    """mbsync pulls INBOX and the special-use folders; local flag changes, a deletion (T
    flag, expunged), a move to Archive and a new local folder with a message reach the
    server; server-side flag changes, a MOVE and a new delivery reach the Maildir."""
    mbsync = require("mbsync")
    await start(server)
    home = tmp_path / "mbsync"
    home.mkdir()
    config = mbsync_config(home, server, tls)

    def scenario() -> None:
        listed = run([mbsync, "-c", str(config), "-l", "everything"], home)
        assert {"INBOX", *SPECIAL_FOLDERS} <= set(listed.output.split()), listed
        two_way_sync(
            server,
            home / "Mail",
            sync=lambda: run([mbsync, "-c", str(config), "-Dn", "everything"], home),
            delete=lambda path: path.rename(f"{path}T"),  # flagged \Deleted, then expunged
            client_fields=("U",),
        )

    await deferToThread(scenario)


# --- offlineimap ------------------------------------------------------------------------------


def offlineimap_config(home: Path, server: ServerProcess, trust: str) -> Path:
    """An offlineimap config over implicit TLS, the server checked against its certificate
    file (``trust="cafile"``) or by the certificate's SHA-256 fingerprint.

    Not STARTTLS: offlineimap 8.0's STARTTLS ignores ``sslcacertfile`` (imaplib2's
    ``starttls()`` is called without it, so nothing is verified), and imaplib2 reads and
    writes one TLS 1.3 socket from two threads at once, which now and then loses the
    response to the first command after the handshake (about 1 in 40 connections here, 1 in
    300 against Dovecot; the same client over implicit TLS never did in 300). STARTTLS is
    covered by mbsync, curl and mutt.
    """
    port = server.ports["imap.tls_listen"]
    # localhost, not 127.0.0.1: offlineimap's own host name check reads DNS names only
    if trust == "fingerprint":
        der = ssl.PEM_cert_to_DER_cert(server_cert(server).read_text())
        check = f"cert_fingerprint = {hashlib.sha256(der).hexdigest()}"
    else:
        check = f"sslcacertfile = {server_cert(server)}"
    config = home / "offlineimaprc"
    config.write_text(f"""\
[general]
accounts = server
metadata = {home / "state"}
ui = basic

[Account server]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {home / "Mail"}

[Repository remote]
type = IMAP
remotehost = localhost
remoteport = {port}
remoteuser = {USER}
remotepass = {PASSWORD}
ssl = yes
{check}
""")
    return config


@pytest.mark.parametrize("trust", ["cafile", "fingerprint"])
@pytest_twisted.ensureDeferred
async def test_offlineimap_two_way_sync(server, tmp_path, trust):
    """offlineimap round-trips the same changes as mbsync: flags, a deleted file, a move to
    Archive and a new local folder up; flags, a MOVE and new mail down."""
    offlineimap = require("offlineimap")
    await start(server)
    home = tmp_path / "offlineimap"
    home.mkdir()
    config = offlineimap_config(home, server, trust)

    def sync() -> Run:
        result = run([offlineimap, "-c", str(config), "-o", "-d", "imap"], home)
        assert "ERROR" not in result.output, result
        return result

    def scenario() -> None:
        two_way_sync(server, home / "Mail", sync=sync, delete=Path.unlink,
                     client_fields=("U", "FMD5"))

    await deferToThread(scenario)


# --- curl -----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_curl_lists_fetches_and_searches(server, tmp_path):
    """curl lists the folders and reads a message by UID over implicit TLS, searches and
    reads a header section over STARTTLS with --ssl-reqd; a UID that does not exist is "not
    found", and curl cannot log in on the plain port without TLS (LOGINDISABLED) nor with a
    wrong password ([AUTHENTICATIONFAILED])."""
    curl = require("curl")
    await start(server)

    def scenario() -> None:
        for subject in ("alpha", "beta", "gamma"):
            smtp_send(server, subject)
        cert = str(server_cert(server))
        base = [curl, "-sS", "-v", "--cacert", cert, "-u", f"{USER}:{PASSWORD}"]
        imaps = f"imaps://127.0.0.1:{server.ports['imap.tls_listen']}"
        imap = f"imap://127.0.0.1:{server.ports['imap.listen']}"

        listed = run([*base, f"{imaps}/"], tmp_path)
        lines = [line for line in listed.output.splitlines() if line.startswith("* LIST")]
        assert lines[0] == '* LIST (\\HasNoChildren) "/" INBOX', listed
        assert {line.rsplit(" ", 1)[1] for line in lines} == {"INBOX", *SPECIAL_FOLDERS}, listed

        fetched = run([*base, f"{imaps}/INBOX;UID=2"], tmp_path)
        assert "Subject: beta" in fetched.output and "Body of beta." in fetched.output, fetched

        searched = run([*base, "--ssl-reqd", f"{imap}/INBOX", "-X", "SEARCH SUBJECT gamma"],
                       tmp_path)
        assert "* SEARCH 3" in searched.output.splitlines(), searched
        status = run([*base, "--ssl-reqd", f"{imap}/", "-X", "STATUS INBOX (MESSAGES UNSEEN)"],
                     tmp_path)
        # UID 2 was read with BODY[] above, so it is \Seen now
        assert "* STATUS INBOX (MESSAGES 3 UNSEEN 2)" in status.output.splitlines(), status

        header = run([*base, "--ssl-reqd",
                      f"{imap}/INBOX;UID=1;SECTION=HEADER.FIELDS%20(SUBJECT)"], tmp_path)
        assert "Subject: alpha" in header.output and "Body of" not in header.output, header

        missing = run([*base, f"{imaps}/INBOX;UID=99"], tmp_path, check=False)
        assert missing.returncode == 78, missing  # CURLE_REMOTE_FILE_NOT_FOUND

        refused = run([*base, f"{imap}/"], tmp_path, check=False)
        assert refused.returncode == 67, refused  # CURLE_LOGIN_DENIED
        assert "LOGINDISABLED" in refused.output, refused
        wrong = [curl, "-sS", "-v", "--cacert", cert, "-u", f"{USER}:wrong-password"]
        denied = run([*wrong, f"{imaps}/"], tmp_path, check=False)
        assert denied.returncode == 67, denied
        assert "NO [AUTHENTICATIONFAILED]" in denied.output, denied

    await deferToThread(scenario)


@pytest_twisted.ensureDeferred
async def test_curl_logs_in_with_an_oauthbearer_token(server, tmp_path):
    """A bearer token from 'mailserver user token issue --scope imap' logs curl in with
    AUTHENTICATE OAUTHBEARER (SASL-IR); a bogus token gets the RFC 7628 error challenge,
    curl's dummy response and NO [AUTHENTICATIONFAILED]."""
    curl = require("curl")
    await provision(Path(server.data_dir), DOMAIN)
    issued = run([str(Path(sys.executable).parent / "mailserver"), "user", "token", "issue",
                  "--scope", "imap", "--config", str(server.config_path), USER], tmp_path)
    token = issued.output.splitlines()[1].strip()
    await deferToThread(server.start)

    def scenario() -> None:
        url = f"imaps://127.0.0.1:{server.ports['imap.tls_listen']}/"
        base = [curl, "-sS", "-v", "--sasl-ir", "--cacert", str(server_cert(server)),
                "--login-options", "AUTH=OAUTHBEARER", "-u", f"{USER}:"]
        listed = run([*base, "--oauth2-bearer", token, url], tmp_path)
        assert "> A002 AUTHENTICATE OAUTHBEARER " in listed.output, listed
        assert '* LIST (\\HasNoChildren) "/" INBOX' in listed.output, listed
        bogus = run([*base, "--oauth2-bearer", "not-a-token", url], tmp_path, check=False)
        assert bogus.returncode == 67, bogus
        assert "NO [AUTHENTICATIONFAILED]" in bogus.output, bogus
        challenge = next(line for line in bogus.output.splitlines() if line.startswith("< + "))
        error = json.loads(base64.b64decode(challenge[4:]))
        assert error["status"] == "invalid_token", bogus

    await deferToThread(scenario)


# --- mutt -----------------------------------------------------------------------------------


def muttrc(home: Path, server: ServerProcess) -> Path:
    """A mutt config: the server's certificate as the only trusted one, TLS forced, no
    questions asked (no header cache, no confirmations, deletions purged on sync)."""
    return write_muttrc(home, server, """\
set ssl_starttls=yes
set header_cache=""
set mbox_type=mbox
set confirmappend=no
set confirmcreate=no
set delete=yes
""")


@pytest_twisted.ensureDeferred
async def test_mutt_reads_flags_and_saves(server, tmp_path):
    """mutt (on a pseudo-terminal, driven by pushed keys) opens INBOX over implicit TLS and
    copies every message into an mbox; over STARTTLS it flags the first message and saves
    the second into a folder that does not exist yet (COPY answered NO [TRYCREATE], CREATE,
    COPY, \\Deleted and EXPUNGE): the server has the flag, the new folder and the move."""
    mutt = require("mutt")
    await start(server)
    home = tmp_path / "mutt"
    home.mkdir()
    config = muttrc(home, server)
    # "localhost" is in the certificate's names; mutt checks the host name
    imaps = f"imaps://localhost:{server.ports['imap.tls_listen']}/INBOX"
    imap = f"imap://localhost:{server.ports['imap.listen']}"
    saved = home / "saved.mbox"

    def run_mutt(folder: str, keys: str) -> Run:
        """One mutt session on ``folder`` typing ``keys``; its debug log (the protocol
        trace) is added to the output for failure messages."""
        debug = home / ".muttdebug0"
        debug.unlink(missing_ok=True)
        screen = run_in_pty([mutt, "-d", "5", "-n", "-F", str(config), "-f", folder,
                             "-e", f'push "{keys}"'], home)
        if debug.exists():
            screen.output += f"\n--- {debug.name} ---\n{debug.read_text(errors='replace')}"
        return screen

    def scenario() -> None:
        for subject in ("first", "second"):
            smtp_send(server, subject)
        screen = run_mutt(imaps, f"<tag-pattern>~A<enter><tag-prefix><copy-message>{saved}"
                                 "<enter><quit>")
        assert saved.exists(), screen
        text = saved.read_text()
        assert text.count("\nFrom ") + text.startswith("From ") == 2, screen
        assert "Subject: first" in text and "Subject: second" in text, screen
        assert "Msgs:2" in screen.output, screen

        screen = run_mutt(f"{imap}/INBOX", f"<first-entry><flag-message><last-entry>"
                                           f"<save-message>{imap}/Kept<enter><sync-mailbox><quit>")
        assert "NO [TRYCREATE]" in screen.output, screen
        with ServerView(server) as view:
            assert view.messages("INBOX") == {"first": {"\\Flagged"}}, screen
            assert view.messages("Kept") == {"second": set()}, screen

    await deferToThread(scenario)


# --- what the clients showed ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_recent_is_per_server_not_per_listener(server):
    """A message that a read-write SELECT on the STARTTLS port reported as \\Recent is not
    \\Recent again on the implicit-TLS port (RFC 3501 §2.3.2). offlineimap on one port and
    imaplib on the other showed it twice while each listener kept its own claims."""
    await start(server)

    def session(implicit: bool, readonly: bool) -> tuple[list[bytes], list[bytes]]:
        context = ssl.create_default_context(cafile=str(server_cert(server)))
        if implicit:
            client: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                "127.0.0.1", server.ports["imap.tls_listen"], ssl_context=context, timeout=15)
        else:
            client = imaplib.IMAP4("127.0.0.1", server.ports["imap.listen"], timeout=15)
            client.starttls(ssl_context=context)
        client.login(USER, PASSWORD)
        typ, data = client.select("INBOX", readonly=readonly)
        assert typ == "OK", data
        recent = client.response("RECENT")[1]
        flags = client.fetch("1:*", "(FLAGS)")[1] if data != [b"0"] else []
        client.logout()
        return recent, flags

    def scenario() -> None:
        assert session(implicit=True, readonly=True) == ([b"0"], [])  # the first look
        smtp_send(server, "news")
        assert session(implicit=False, readonly=False) == ([b"1"], [b"1 (FLAGS (\\Recent))"])
        assert session(implicit=True, readonly=True) == ([b"0"], [b"1 (FLAGS ())"])

    await deferToThread(scenario)
