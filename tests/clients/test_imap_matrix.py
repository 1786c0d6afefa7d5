"""IMAP clients of the matrix against the real server: Python's imaplib (STARTTLS, implicit
TLS, fetch, flags, APPEND, MOVE, delete, IDLE told of new mail), curl (list, fetch, APPEND by
upload, delete), mbsync and offlineimap (two-way sync of flags and deletions), and mutt on a
pseudo-terminal (fetch into an mbox, flag). Mail arrives over port 25 first; every client
checks the server's certificate, skips naming its Debian package when absent, and a failure
shows what it printed."""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
import time
from pathlib import Path

import pytest

from tests.clients.helpers import ALICE, deliver, require, stored, verified_context
from tests.e2e.imap_clients import maildir, run, run_in_pty, server_cert, write_muttrc
from tests.e2e.mail import PASSWORD

pytestmark = pytest.mark.e2e
client_matrix = pytest.mark.client_matrix


def imaps(server) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("localhost", server.ports["imap.tls_listen"],
                               ssl_context=verified_context(server), timeout=15)
    client.login(ALICE, PASSWORD)
    return client


# --- imaplib ----------------------------------------------------------------------------------


@client_matrix("imaplib", "starttls", "auth", "errors")
def test_imaplib_starttls_after_logindisabled(mail_server):
    """On the plain port LOGIN is refused before STARTTLS (LOGINDISABLED); after
    starttls() a wrong password is NO [AUTHENTICATIONFAILED] and the right one logs in."""
    client = imaplib.IMAP4("localhost", mail_server.ports["imap.listen"], timeout=15)
    assert "LOGINDISABLED" in client.capabilities
    with pytest.raises(imaplib.IMAP4.error):
        client.login(ALICE, PASSWORD)
    client.starttls(ssl_context=verified_context(mail_server))
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login(ALICE, "wrong")
    assert client.login(ALICE, PASSWORD)[0] == "OK"
    client.logout()


@client_matrix("imaplib", "implicit tls", "list", "fetch", "flags sync", "move", "delete",
               "append")
def test_imaplib_session(mail_server):
    """Over implicit TLS: LIST shows INBOX and the special-use folders, FETCH BODY[] returns
    what was delivered (after our trace headers) and sets \\Seen, STORE flags are what a second
    session sees, APPEND stores, MOVE moves and STORE \\Deleted + EXPUNGE deletes."""
    sent = {subject: deliver(mail_server, subject) for subject in ("one", "two", "three")}
    client = imaps(mail_server)
    typ, folders = client.list()
    assert typ == "OK"
    assert any(line.endswith(b" INBOX") for line in folders), folders
    assert any(b"\\Trash" in line for line in folders), folders
    assert client.select("INBOX")[1] == [b"3"]
    typ, data = client.uid("FETCH", "1", "(BODY[])")
    assert typ == "OK" and data[0][1].endswith(sent["one"]), data
    client.uid("STORE", "2", "+FLAGS", "(\\Flagged)")
    typ, data = client.uid("MOVE", "3", "Archive")
    assert typ == "OK", data
    note = b"From: alice@example.org\r\nSubject: note\r\n\r\nA note.\r\n"
    typ, data = client.append("Drafts", "(\\Draft)", None, note)
    assert typ == "OK" and b"APPENDUID" in data[0], data
    client.uid("STORE", "1", "+FLAGS", "(\\Deleted)")
    assert client.expunge()[1][-1] == b"1"  # (after the MOVE's "3")
    client.logout()
    assert {s: flags for s, (_, flags) in stored(mail_server).items()} == {"two": {"\\Flagged"}}
    assert set(stored(mail_server, folder="Archive")) == {"three"}
    [(body, flags)] = stored(mail_server, folder="Drafts").values()
    assert body == note and flags == {"\\Draft"}


def read_until(sock: ssl.SSLSocket, pattern: bytes, timeout: float = 15.0) -> bytes:
    """Read from ``sock`` until ``pattern`` (a regex) matches what arrived; all of it."""
    data = b""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, data):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {pattern!r} within {timeout}s; got {data!r}"
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        assert chunk, f"connection closed waiting for {pattern!r}; got {data!r}"
        data += chunk
    return data


@client_matrix("imaplib", "idle")
@client_matrix("K-9", "idle")
def test_idle_reports_new_mail(mail_server):
    """The push of K-9 Mail (and any IDLE client; imaplib before Python 3.14 has no idle(), so
    the commands go over its TLS socket): SELECT, IDLE, and a message delivered over SMTP
    meanwhile is announced as * 2 EXISTS without the client asking; DONE ends IDLE with OK
    and a FETCH reads the new message."""
    deliver(mail_server, "before")
    context = verified_context(mail_server)
    raw = socket.create_connection(("127.0.0.1", mail_server.ports["imap.tls_listen"]), 15)
    with context.wrap_socket(raw, server_hostname="localhost") as sock:
        read_until(sock, rb"\* OK .*\r\n")
        sock.sendall(f'1 LOGIN "{ALICE}" "{PASSWORD}"\r\n2 SELECT INBOX\r\n'.encode())
        read_until(sock, rb"2 OK .*\r\n")
        sock.sendall(b"3 IDLE\r\n")
        read_until(sock, rb"\+ .*\r\n")
        deliver(mail_server, "while idling")
        assert b"* 2 EXISTS\r\n" in read_until(sock, rb"\* 2 EXISTS\r\n")
        sock.sendall(b"DONE\r\n4 UID FETCH 2 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
        answer = read_until(sock, rb"4 OK .*\r\n")
        assert re.search(rb"3 OK .*\r\n", answer), answer
        assert b"Subject: while idling" in answer, answer
        sock.sendall(b"5 LOGOUT\r\n")
        read_until(sock, rb"5 OK .*\r\n")


# --- curl -------------------------------------------------------------------------------------


@client_matrix("curl", "list", "fetch", "append", "delete", "implicit tls", "starttls")
def test_curl_imap(mail_server, tmp_path):
    """curl lists folders over implicit TLS, fetches a message by UID over STARTTLS
    (--ssl-reqd), uploads a file into Drafts (APPEND) and deletes with custom STORE and
    EXPUNGE requests."""
    curl = require("curl")
    sent = deliver(mail_server, "for curl")
    deliver(mail_server, "to delete")
    base = [curl, "-sS", "-v", "--cacert", str(server_cert(mail_server)),
            "-u", f"{ALICE}:{PASSWORD}"]
    implicit = f"imaps://localhost:{mail_server.ports['imap.tls_listen']}"
    plain = f"imap://localhost:{mail_server.ports['imap.listen']}"
    listed = run([*base, f"{implicit}/"], tmp_path)
    assert '* LIST (\\HasNoChildren) "/" INBOX' in listed.output, listed
    out = tmp_path / "fetched.eml"
    fetched = run([*base, "--ssl-reqd", "-o", str(out), f"{plain}/INBOX;UID=1"], tmp_path)
    assert out.read_bytes().endswith(sent), fetched
    draft = tmp_path / "draft.eml"
    draft.write_bytes(b"From: alice@example.org\r\nSubject: uploaded\r\n\r\nBy curl.\r\n")
    run([*base, "-T", str(draft), f"{implicit}/Drafts"], tmp_path)
    assert stored(mail_server, folder="Drafts")["uploaded"][0] == draft.read_bytes()
    run([*base, f"{implicit}/INBOX", "-X", "UID STORE 2 +FLAGS (\\Deleted)"], tmp_path)
    run([*base, f"{implicit}/INBOX", "-X", "EXPUNGE"], tmp_path)
    assert set(stored(mail_server)) == {"for curl"}


# --- mbsync and offlineimap -------------------------------------------------------------------


def mbsyncrc(home: Path, server) -> Path:
    config = home / "mbsyncrc"
    config.write_text(f"""\
IMAPAccount server
Host localhost
Port {server.ports["imap.listen"]}
User {ALICE}
Pass {PASSWORD}
SSLType STARTTLS
CertificateFile {server_cert(server)}

IMAPStore remote
Account server

MaildirStore local
Path {home / "Mail"}/
Inbox {home / "Mail" / "INBOX"}

Channel inbox
Far :remote:INBOX
Near :local:INBOX
Create Both
Expunge Both
SyncState *
""")
    (home / "Mail").mkdir()
    return config


def offlineimaprc(home: Path, server) -> Path:
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
remoteport = {server.ports["imap.tls_listen"]}
remoteuser = {ALICE}
remotepass = {PASSWORD}
ssl = yes
sslcacertfile = {server_cert(server)}
folderfilter = lambda name: name == "INBOX"
""")
    return config


def sync_round_trip(server, home: Path, sync, delete) -> None:
    """Fetch two messages, then flag one seen+flagged and delete the other locally, sync:
    the server has the flags and not the deleted one; a server-side flag change and a new
    delivery come back down."""
    deliver(server, "keep")
    deliver(server, "drop")
    log = sync()
    inbox = maildir(home / "Mail" / "INBOX")
    assert set(inbox) == {"keep", "drop"}, log
    inbox["keep"].set_letters("FS")
    delete(inbox["drop"].path)
    log = sync()
    assert {s: flags for s, (_, flags) in stored(server).items()} == {
        "keep": {"\\Flagged", "\\Seen"}}, log
    client = imaps(server)
    client.select("INBOX")
    client.uid("STORE", "1", "-FLAGS", "(\\Flagged)")
    client.logout()
    deliver(server, "new")
    log = sync()
    inbox = maildir(home / "Mail" / "INBOX")
    assert set(inbox) == {"keep", "new"}, log
    assert inbox["keep"].letters == "S", log


@client_matrix("mbsync", "starttls", "auth", "fetch", "flags sync", "delete")
def test_mbsync_sync(mail_server, tmp_path):
    """mbsync over STARTTLS pulls INBOX, pushes a flag change and a deletion (T flag,
    expunged), and pulls back a server-side flag change and new mail."""
    mbsync = require("mbsync")
    config = mbsyncrc(tmp_path, mail_server)
    sync_round_trip(mail_server, tmp_path,
                    sync=lambda: run([mbsync, "-c", str(config), "-V", "inbox"], tmp_path),
                    delete=lambda path: path.rename(f"{path}T"))


@client_matrix("offlineimap", "implicit tls", "auth", "fetch", "flags sync", "delete")
def test_offlineimap_sync(mail_server, tmp_path):
    """offlineimap over implicit TLS round-trips the same changes as mbsync (the deletion is
    the file removed)."""
    offlineimap = require("offlineimap")
    config = offlineimaprc(tmp_path, mail_server)

    def sync():
        result = run([offlineimap, "-c", str(config), "-o", "-d", "imap"], tmp_path)
        assert "ERROR" not in result.output, result
        return result

    sync_round_trip(mail_server, tmp_path, sync=sync, delete=Path.unlink)


# --- mutt -------------------------------------------------------------------------------------


@client_matrix("mutt", "implicit tls", "fetch", "flags sync")
def test_mutt_copies_and_flags(mail_server, tmp_path):
    """mutt, driven by pushed keys on a pseudo-terminal, opens INBOX over implicit TLS,
    copies both messages into a local mbox and flags the first; the server has the flag."""
    mutt = require("mutt")
    deliver(mail_server, "first")
    deliver(mail_server, "second")
    config = write_muttrc(tmp_path, mail_server,
                          'set header_cache=""\nset mbox_type=mbox\nset confirmappend=no\n'
                          'set confirmcreate=no\n')
    saved = tmp_path / "saved.mbox"
    folder = f"imaps://localhost:{mail_server.ports['imap.tls_listen']}/INBOX"
    keys = (f"<tag-pattern>~A<enter><tag-prefix><copy-message>{saved}<enter>"
            "<untag-pattern>~A<enter><first-entry><flag-message><sync-mailbox><quit>")
    screen = run_in_pty([mutt, "-n", "-F", str(config), "-f", folder, "-e", f'push "{keys}"'],
                        tmp_path)
    text = saved.read_text() if saved.exists() else ""
    assert "Subject: first" in text and "Subject: second" in text, screen
    flags = {s: f for s, (_, f) in stored(mail_server).items()}
    assert "\\Flagged" in flags["first"] and "\\Flagged" not in flags["second"], screen
