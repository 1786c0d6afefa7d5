"""Helpers of the client-matrix tests: find a client program or skip naming its Debian
package, deliver a message, and read an account back over verified IMAPS (the server's own
self-signed certificate as the only trust anchor).

Running clients reuses :mod:`tests.e2e.imap_clients` (``run`` with a timeout and the output
on failure, ``run_in_pty``, ``server_cert``)."""

from __future__ import annotations

import email
import email.policy
import imaplib
import shutil
import smtplib
import ssl

import pytest

from tests.e2e.conftest import ServerProcess
from tests.e2e.imap_clients import server_cert
from tests.e2e.mail import PASSWORD

ALICE = "alice@example.org"
BOB = "bob@example.org"

#: Debian package of each client program, for the skip reason.
PACKAGES = {
    "swaks": "swaks", "msmtp": "msmtp", "curl": "curl", "mutt": "mutt", "mbsync": "isync",
    "offlineimap": "offlineimap3", "getmail": "getmail6", "fetchmail": "fetchmail",
    "mpop": "mpop",
}


def require(program: str) -> str:
    """The path of ``program``, or skip the test naming the Debian package to install."""
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed (Debian package {PACKAGES[program]}; "
                    "scripts/install-debian-deps installs it when run as root)")
    return path


def message(subject: str, sender: str = "carol@example.net", to: str = ALICE) -> bytes:
    """A small message with CRLF line ends whose body names its subject."""
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@example.net>\r\n"
            f"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nBody of {subject}.\r\n").encode()


def deliver(server: ServerProcess, subject: str, to: str = ALICE) -> bytes:
    """Deliver :func:`message` to ``to`` over port 25; the bytes sent."""
    data = message(subject, to=to)
    with smtplib.SMTP("127.0.0.1", server.ports["smtp.listen"], timeout=15) as client:
        refused = client.sendmail("carol@example.net", [to], data)
        assert not refused, refused
    return data


def verified_context(server: ServerProcess) -> ssl.SSLContext:
    """A client TLS context trusting only the server's certificate (host name checked)."""
    return ssl.create_default_context(cafile=str(server_cert(server)))


def stored(server: ServerProcess, user: str = ALICE, folder: str = "INBOX",
           ) -> dict[str, tuple[bytes, set[str]]]:
    """Subject -> (message bytes, flags without \\Recent) of every message in ``folder``,
    read with imaplib over implicit TLS (BODY.PEEK, so nothing is marked seen)."""
    client = imaplib.IMAP4_SSL("localhost", server.ports["imap.tls_listen"],
                               ssl_context=verified_context(server), timeout=15)
    try:
        client.login(user, PASSWORD)
        typ, data = client.select(f'"{folder}"', readonly=True)
        assert typ == "OK", data
        out: dict[str, tuple[bytes, set[str]]] = {}
        if data == [b"0"]:
            return out
        typ, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
        assert typ == "OK", data
        for item in data:
            if not isinstance(item, tuple):
                continue
            flags = set(imaplib.ParseFlags(item[0])) - {b"\\Recent"}
            parsed = email.message_from_bytes(item[1], policy=email.policy.default)
            subject = str(parsed["Subject"])  # 8-bit subjects decoded as UTF-8
            out[subject] = (item[1], {flag.decode() for flag in flags})
        return out
    finally:
        client.logout()
