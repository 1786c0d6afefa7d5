"""SMTP clients of the matrix against the real server: swaks, msmtp, Python's smtplib, curl
and mutt in batch mode submit to bob over STARTTLS (587-style) or implicit TLS (465-style)
with AUTH, and the message is in bob's INBOX intact; wrong passwords are refused with 535.
Each client checks the server's self-signed certificate where it can, skips naming its
Debian package when absent, and a failure shows what it printed."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from tests.clients.helpers import ALICE, BOB, message, require, stored, verified_context
from tests.e2e.imap_clients import run, server_cert
from tests.e2e.mail import PASSWORD

pytestmark = pytest.mark.e2e
client_matrix = pytest.mark.client_matrix


def assert_delivered(server, subject: str, data: bytes | None = None) -> bytes:
    """bob's INBOX holds ``subject`` (ending with ``data`` when given); the stored bytes."""
    inbox = stored(server, BOB)
    assert subject in inbox, (subject, sorted(inbox))
    body, _flags = inbox[subject]
    if data is not None:
        assert body.endswith(data), body
    return body


# --- swaks ------------------------------------------------------------------------------------


def swaks(server, *args: str, check: bool = True, home: Path):
    program = require("swaks")
    return run([program, "--helo", "client.example.net", "--from", ALICE, "--to", BOB,
                "--timeout", "15", *args], home, check=check)


@client_matrix("swaks", "send", "starttls", "auth")
def test_swaks_submits_over_starttls_with_auth_login(mail_server, tmp_path):
    """swaks --tls --auth LOGIN on the submission port: STARTTLS, then AUTH LOGIN, then the
    message reaches bob."""
    result = swaks(mail_server, "--server", "127.0.0.1",
                   "--port", str(mail_server.ports["submission.listen"]), "--tls",
                   "--auth", "LOGIN", "--auth-user", ALICE, "--auth-password", PASSWORD,
                   "--header", "Subject: swaks starttls", home=tmp_path)
    assert "<-  220 2.0.0" in result.output and "~> AUTH LOGIN" in result.output, result
    assert_delivered(mail_server, "swaks starttls")


@client_matrix("swaks", "implicit tls", "auth", "pipelining")
def test_swaks_submits_over_implicit_tls_pipelined(mail_server, tmp_path):
    """swaks --tls-on-connect --pipeline --auth PLAIN: MAIL, RCPT and DATA written together
    over implicit TLS."""
    result = swaks(mail_server, "--server", "127.0.0.1",
                   "--port", str(mail_server.ports["submission.tls_listen"]),
                   "--tls-on-connect", "--pipeline", "--auth", "PLAIN", "--auth-user", ALICE,
                   "--auth-password", PASSWORD, "--header", "Subject: swaks pipelined",
                   home=tmp_path)
    assert "~> AUTH PLAIN" in result.output, result
    assert_delivered(mail_server, "swaks pipelined")


@client_matrix("swaks", "auth", "errors")
def test_swaks_wrong_password_is_535(mail_server, tmp_path):
    """A wrong password is 535 5.7.8 and swaks exits with its AUTH failure status (28)."""
    result = swaks(mail_server, "--server", "127.0.0.1",
                   "--port", str(mail_server.ports["submission.listen"]), "--tls",
                   "--auth", "PLAIN", "--auth-user", ALICE, "--auth-password", "wrong",
                   check=False, home=tmp_path)
    assert result.returncode == 28, result
    assert "* 535 5.7.8" in result.output, result  # "<~*" over TLS


# --- msmtp ------------------------------------------------------------------------------------


def msmtprc(home: Path, server, implicit: bool, password: str = PASSWORD) -> Path:
    """An msmtp account for alice on the submission port, the server's certificate as the
    only trust anchor (host name checked: "localhost" is in it)."""
    port = server.ports["submission.tls_listen" if implicit else "submission.listen"]
    config = home / "msmtprc"
    config.write_text(
        "defaults\nauth on\ntls on\n"
        f"tls_starttls {'off' if implicit else 'on'}\n"
        f"tls_trust_file {server_cert(server)}\n"
        f"logfile {home / 'msmtp.log'}\n"
        f"account default\nhost localhost\nport {port}\nfrom {ALICE}\n"
        f"user {ALICE}\npassword {password}\n")
    config.chmod(0o600)
    return config


def msmtp_send(server, home: Path, subject: str, implicit: bool,
               password: str = PASSWORD, check: bool = True):
    program = require("msmtp")
    config = msmtprc(home, server, implicit, password)
    data = message(subject, sender=ALICE, to=BOB)
    input_file = home / "message.eml"
    input_file.write_bytes(data.replace(b"\r\n", b"\n"))  # what a mail reader hands msmtp
    return run(["sh", "-c", '"$0" -C "$1" --debug -t < "$2"', program, str(config),
                str(input_file)], home, check=check), data


@client_matrix("msmtp", "send", "starttls", "auth")
def test_msmtp_submits_over_starttls(mail_server, tmp_path):
    """msmtp -t (recipients from To:) over STARTTLS with a verified certificate: the body
    arrives with CRLF line ends."""
    result, data = msmtp_send(mail_server, tmp_path, "msmtp starttls", implicit=False)
    assert "--> STARTTLS" in result.output and "--> AUTH" in result.output, result
    assert_delivered(mail_server, "msmtp starttls", data.split(b"\r\n\r\n", 1)[1])


@client_matrix("msmtp", "implicit tls", "auth")
def test_msmtp_submits_over_implicit_tls(mail_server, tmp_path):
    """msmtp with tls_starttls off talks TLS from the first byte."""
    result, _ = msmtp_send(mail_server, tmp_path, "msmtp implicit", implicit=True)
    assert "--> STARTTLS" not in result.output, result
    assert_delivered(mail_server, "msmtp implicit")


@client_matrix("msmtp", "auth", "errors")
def test_msmtp_wrong_password_fails_with_535(mail_server, tmp_path):
    """A wrong password makes msmtp fail (exit 77, EX_NOPERM) and show the 535."""
    result, _ = msmtp_send(mail_server, tmp_path, "never", implicit=False, password="wrong",
                           check=False)
    assert result.returncode == 77, result
    assert "535 5.7.8" in result.output, result


# --- smtplib ----------------------------------------------------------------------------------


@client_matrix("smtplib", "send")
def test_smtplib_delivers_on_port_25(mail_server):
    """sendmail on port 25 without AUTH stores the message for a local recipient, after our
    Return-Path and Received."""
    data = message("smtplib mx", to=BOB)
    with smtplib.SMTP("127.0.0.1", mail_server.ports["smtp.listen"], timeout=15) as client:
        assert client.sendmail("carol@example.net", [BOB], data) == {}
    body = assert_delivered(mail_server, "smtplib mx", data)
    assert body.startswith(b"Return-Path: <carol@example.net>\r\nReceived: ")


@client_matrix("smtplib", "send", "starttls", "auth", "errors")
def test_smtplib_starttls_login(mail_server):
    """starttls() with a verifying context, then login(): a wrong password raises
    SMTPAuthenticationError 535, the right one submits."""
    port = mail_server.ports["submission.listen"]
    with smtplib.SMTP("localhost", port, timeout=15) as client:
        client.starttls(context=verified_context(mail_server))
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login(ALICE, "wrong")
        assert refused.value.smtp_code == 535
        client.login(ALICE, PASSWORD)
        data = message("smtplib starttls", sender=ALICE, to=BOB)
        assert client.sendmail(ALICE, [BOB], data) == {}
    assert_delivered(mail_server, "smtplib starttls", data)


@client_matrix("smtplib", "implicit tls", "auth")
def test_smtplib_implicit_tls(mail_server):
    """SMTP_SSL on the implicit-TLS submission port, certificate verified."""
    port = mail_server.ports["submission.tls_listen"]
    with smtplib.SMTP_SSL("localhost", port, timeout=15,
                          context=verified_context(mail_server)) as client:
        client.login(ALICE, PASSWORD)
        data = message("smtplib implicit", sender=ALICE, to=BOB)
        assert client.sendmail(ALICE, [BOB], data) == {}
    assert_delivered(mail_server, "smtplib implicit", data)


# --- curl -------------------------------------------------------------------------------------


@client_matrix("curl", "send", "starttls", "auth", "implicit tls")
def test_curl_submits_over_starttls_and_implicit_tls(mail_server, tmp_path):
    """curl --ssl-reqd smtp:// (STARTTLS) and smtps:// upload a message file for bob."""
    curl = require("curl")
    common = [curl, "-sS", "-v", "--cacert", str(server_cert(mail_server)),
              "--mail-from", ALICE, "--mail-rcpt", BOB]
    # the URL's path is curl's EHLO name (without one, -T appends the file name)
    urls = {"curl starttls":
            f"smtp://localhost:{mail_server.ports['submission.listen']}/client.example.net",
            "curl implicit":
            f"smtps://localhost:{mail_server.ports['submission.tls_listen']}/client.example.net"}
    for subject, url in urls.items():
        upload = tmp_path / f"{subject.replace(' ', '-')}.eml"
        upload.write_bytes(message(subject, sender=ALICE, to=BOB))
        result = run([*common, "--ssl-reqd", "-u", f"{ALICE}:{PASSWORD}", "-T", str(upload),
                      url], tmp_path)
        assert "< 235 2.7.0" in result.output, result
        assert_delivered(mail_server, subject, upload.read_bytes())


# --- mutt in batch mode -----------------------------------------------------------------------


@client_matrix("mutt", "send", "starttls", "auth")
def test_mutt_batch_send_over_starttls(mail_server, tmp_path):
    """mutt -s SUBJECT bob < body (no terminal) sends through smtp_url with STARTTLS and
    AUTH, checking the server's certificate; the 8-bit UTF-8 body arrives."""
    mutt = require("mutt")
    port = mail_server.ports["submission.listen"]
    config = tmp_path / "muttrc"
    config.write_text(
        f'set from="{ALICE}"\nset realname="Alice"\n'
        f'set smtp_url="smtp://alice%40example.org@localhost:{port}/"\n'
        f'set smtp_pass="{PASSWORD}"\nset ssl_starttls=yes\nset ssl_force_tls=yes\n'
        f'set certificate_file="{server_cert(mail_server)}"\n'
        'set record=""\nset copy=no\nset send_charset="utf-8"\n')
    body = tmp_path / "body.txt"
    body.write_text("Grüße aus dem Batch-Modus.\n")
    run(["sh", "-c", '"$0" -n -F "$1" -s "mutt batch" -- "$2" < "$3"', mutt, str(config),
         BOB, str(body)], tmp_path)
    stored_message = assert_delivered(mail_server, "mutt batch")
    assert "Grüße aus dem Batch-Modus.".encode() in stored_message, stored_message
