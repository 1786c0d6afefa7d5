"""POP3 clients of the matrix against the real server: Python's poplib (STLS, implicit TLS,
UIDL, RETR, DELE), curl, fetchmail (STLS, retrieve and delete), getmail6 (implicit TLS,
retrieve and delete) and mpop (keeps mail, fetches only what is new by UIDL). Mail arrives
over port 25 first; every client checks the server's certificate, skips naming its Debian
package when absent, and a failure shows what it printed."""

from __future__ import annotations

import poplib
from pathlib import Path

import pytest

from tests.clients.helpers import ALICE, deliver, require, stored, verified_context
from tests.e2e.imap_clients import run, server_cert
from tests.e2e.mail import PASSWORD

pytestmark = pytest.mark.e2e
client_matrix = pytest.mark.client_matrix


def retrieved(directory: Path) -> dict[str, bytes]:
    """Subject -> bytes (LF line ends) of every message file a client wrote."""
    out = {}
    for path in directory.iterdir():
        data = path.read_bytes().replace(b"\r\n", b"\n")
        subject = next(line[9:].decode() for line in data.split(b"\n")
                       if line.startswith(b"Subject: "))
        out[subject] = data
    return out


def mda(home: Path, out: Path) -> Path:
    """A delivery script writing the message on its stdin to a new file in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    script = home / "deliver.sh"
    script.write_text(f'#!/bin/sh\nexec cat > "$(mktemp {out}/msg.XXXXXX)"\n')
    script.chmod(0o755)
    return script


# --- poplib -----------------------------------------------------------------------------------


@client_matrix("poplib", "starttls", "auth", "errors")
def test_poplib_stls_then_login(mail_server):
    """stls() with a verifying context, then a wrong password is -ERR and the session
    continues to a good USER/PASS."""
    client = poplib.POP3("localhost", mail_server.ports["pop3.listen"], timeout=15)
    client.stls(context=verified_context(mail_server))
    client.user(ALICE)
    with pytest.raises(poplib.error_proto, match="-ERR"):
        client.pass_("wrong")
    client.user(ALICE)
    assert client.pass_(PASSWORD).startswith(b"+OK")
    client.quit()


@client_matrix("poplib", "implicit tls", "fetch", "uidl", "delete")
def test_poplib_retrieves_and_deletes(mail_server):
    """Over implicit TLS: STAT and UIDL list both messages, RETR returns what was delivered,
    DELE + QUIT removes it, and the UIDL of the other one is unchanged."""
    first = deliver(mail_server, "first")
    deliver(mail_server, "second")
    client = poplib.POP3_SSL("localhost", mail_server.ports["pop3.tls_listen"],
                             context=verified_context(mail_server), timeout=15)
    client.user(ALICE)
    client.pass_(PASSWORD)
    assert client.stat()[0] == 2
    ids = [line.split()[1] for line in client.uidl()[1]]
    data = b"\r\n".join(client.retr(1)[1]) + b"\r\n"
    assert data.endswith(first), data
    client.dele(1)
    client.quit()
    assert set(stored(mail_server)) == {"second"}
    client = poplib.POP3_SSL("localhost", mail_server.ports["pop3.tls_listen"],
                             context=verified_context(mail_server), timeout=15)
    client.user(ALICE)
    client.pass_(PASSWORD)
    assert [line.split()[1] for line in client.uidl()[1]] == ids[1:]
    client.quit()


# --- curl -------------------------------------------------------------------------------------


@client_matrix("curl", "fetch", "uidl", "delete", "starttls", "implicit tls")
def test_curl_pop3(mail_server, tmp_path):
    """curl lists and retrieves over STLS (--ssl-reqd), asks UIDL and deletes over
    implicit TLS."""
    curl = require("curl")
    sent = deliver(mail_server, "x")
    deliver(mail_server, "y")
    common = [curl, "-sS", "--cacert", str(server_cert(mail_server)),
              "-u", f"{ALICE}:{PASSWORD}"]
    stls = f"pop3://localhost:{mail_server.ports['pop3.listen']}"
    implicit = f"pop3s://localhost:{mail_server.ports['pop3.tls_listen']}"
    listing = run([*common, "--ssl-reqd", f"{stls}/"], tmp_path)
    assert [line.split()[0] for line in listing.output.split("\r\n")[:2]] == ["1", "2"], listing
    run([*common, "--ssl-reqd", "-o", str(tmp_path / "m1"), f"{stls}/1"], tmp_path)
    assert (tmp_path / "m1").read_bytes().endswith(sent)
    uidl = run([*common, "-X", "UIDL", f"{implicit}/"], tmp_path)
    assert len(uidl.output.split("\r\n")[:2]) == 2, uidl
    run([*common, "-X", "DELE", "-I", f"{implicit}/1"], tmp_path)
    assert set(stored(mail_server)) == {"y"}


# --- fetchmail, getmail6, mpop ----------------------------------------------------------------


@client_matrix("fetchmail", "starttls", "auth", "fetch", "delete")
def test_fetchmail_retrieves_and_deletes_over_stls(mail_server, tmp_path):
    """fetchmail upgrades with STLS (certificate checked), hands every message to its MDA and
    deletes them from the server."""
    fetchmail = require("fetchmail")
    sent = {subject: deliver(mail_server, subject) for subject in ("a", "b")}
    out = tmp_path / "out"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no bouncemail\n"
        f"poll localhost service {mail_server.ports['pop3.listen']} protocol POP3 uidl\n"
        f"  user '{ALICE}' there with password '{PASSWORD}' is 'alice' here\n"
        f"  sslproto 'TLS1.2+' sslcertck sslcertfile '{server_cert(mail_server)}'\n"
        f"  nokeep fetchall\n  mda '{mda(tmp_path, out)}'\n")
    rc.chmod(0o600)
    result = run([fetchmail, "-v", "--nodetach", "-f", str(rc), "--pidfile",
                  str(tmp_path / "pid"), "-i", str(tmp_path / "ids")], tmp_path)
    assert "POP3> STLS" in result.output, result
    got = retrieved(out)
    assert set(got) == set(sent), result
    for subject, data in sent.items():
        assert got[subject].endswith(data.replace(b"\r\n", b"\n")), result
    assert stored(mail_server) == {}


@client_matrix("getmail6", "implicit tls", "auth", "fetch", "delete")
def test_getmail6_retrieves_and_deletes(mail_server, tmp_path):
    """getmail6's SimplePOP3SSLRetriever (certificate checked) retrieves both messages byte
    for byte and deletes them."""
    getmail = require("getmail")
    sent = {subject: deliver(mail_server, subject) for subject in ("one", "two")}
    out = tmp_path / "out"
    rc = tmp_path / "getmailrc"
    rc.write_text(
        "[retriever]\ntype = SimplePOP3SSLRetriever\n"
        f"server = localhost\nport = {mail_server.ports['pop3.tls_listen']}\n"
        f"username = {ALICE}\npassword = {PASSWORD}\nca_certs = {server_cert(mail_server)}\n"
        f"\n[destination]\ntype = MDA_external\npath = {mda(tmp_path, out)}\n"
        "allow_root_commands = true\n"
        "\n[options]\ndelete = true\nread_all = true\nverbose = 2\n"
        "delivered_to = false\nreceived = false\n")
    result = run([getmail, f"--rcfile={rc}", f"--getmaildir={tmp_path}"], tmp_path)
    got = retrieved(out)
    assert set(got) == set(sent), result
    for subject, data in sent.items():
        assert got[subject].endswith(data.replace(b"\r\n", b"\n")), result
    assert stored(mail_server) == {}


@client_matrix("mpop", "starttls", "auth", "fetch", "uidl", "pipelining")
def test_mpop_keeps_mail_and_fetches_only_new(mail_server, tmp_path):
    """mpop (pipelining its commands, SASL PLAIN after STLS) keeps the mail on the server and
    on the second run fetches only the message that is new by UIDL."""
    mpop = require("mpop")
    deliver(mail_server, "a")
    deliver(mail_server, "b")
    mail = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (mail / sub).mkdir(parents=True)
    rc = tmp_path / "mpoprc"
    rc.write_text(
        "defaults\ntls on\ntls_starttls on\n"
        f"tls_trust_file {server_cert(mail_server)}\n"
        "account default\nhost localhost\n"
        f"port {mail_server.ports['pop3.listen']}\nuser {ALICE}\npassword {PASSWORD}\n"
        f"delivery maildir {mail}\nkeep on\nuidls_file {tmp_path / 'uidls'}\n")
    rc.chmod(0o600)
    first = run([mpop, "-C", str(rc), "--debug"], tmp_path)
    assert "--> STLS" in first.output and "--> AUTH PLAIN" in first.output, first
    assert "<-- PIPELINING" in first.output, first  # so mpop sends its commands in batches
    assert len(list((mail / "new").iterdir())) == 2, first
    deliver(mail_server, "c")
    second = run([mpop, "-C", str(rc)], tmp_path)
    assert "new: 1 message" in second.output, second
    assert len(list((mail / "new").iterdir())) == 3, second
    assert set(stored(mail_server)) == {"a", "b", "c"}
