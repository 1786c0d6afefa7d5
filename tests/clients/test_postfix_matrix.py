"""Postfix in the client matrix, both ways (a private Debian Postfix, tests/peers/postfix.py):
relaying into our port 25 (Postfix's smtp client, opportunistic STARTTLS) and taking our
spool's deliveries (we look its MX up in a real DNS server on 127.0.0.1 and deliver with
STARTTLS). Skips when Postfix is not installed or not runnable (it needs root)."""

from __future__ import annotations

import mailbox
import os
import pwd
import smtplib
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from mailserver.tls import ensure_self_signed
from tests.clients.helpers import ALICE, message, stored, verified_context
from tests.dns_server import Zone, start_dns_server
from tests.e2e.conftest import LISTENERS
from tests.e2e.mail import PASSWORD, provision
from tests.peers.postfix import relay_settings, virtual_maildir_settings

pytestmark = pytest.mark.e2e
DELIVERY_TIMEOUT = 60.0


def wait_for(check, what: str, log) -> object:
    """Poll ``check()`` until it returns something true; fail with ``log()`` after the
    timeout."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {DELIVERY_TIMEOUT}s\n{log()}")
        time.sleep(0.2)


@pytest.mark.client_matrix("Postfix", "relay", "starttls", "send")
@pytest_twisted.ensureDeferred
async def test_postfix_relays_into_our_inbox(mail_server, postfix_peer):
    """A message handed to Postfix for alice@example.org is relayed to our port 25 over
    STARTTLS and lands in her INBOX with its body intact."""
    settings = relay_settings("example.org", "127.0.0.1", mail_server.ports["smtp.listen"])
    settings["smtp_tls_security_level"] = "encrypt"  # refuse to relay in clear text
    peer = postfix_peer(settings=settings)
    await deferToThread(peer.start)
    data = message("via postfix")

    def inject() -> None:
        with smtplib.SMTP(peer.smtpd_host, peer.smtpd_port, timeout=30) as client:
            assert client.sendmail("carol@example.net", [ALICE], data) == {}

    await deferToThread(inject)
    inbox = await deferToThread(wait_for, lambda: stored(mail_server), "delivery into INBOX",
                                lambda: peer.maillog_text() + mail_server.output())
    assert inbox["via postfix"][0].endswith(data.split(b"\r\n\r\n", 1)[1])
    assert "status=sent" in peer.maillog_text()
    assert "TLS connection established to 127.0.0.1" in peer.maillog_text()


@pytest.mark.client_matrix("Postfix", "relay", "starttls", "send")
@pytest_twisted.ensureDeferred
async def test_our_spool_delivers_to_postfix(server_process, postfix_peer):
    """alice submits mail for carol@remote.test; our spool finds Postfix as remote.test's MX
    in DNS and delivers over STARTTLS; Postfix's virtual agent stores it in carol's Maildir."""
    nobody = pwd.getpwnam("nobody")
    peer = postfix_peer(settings={})
    maildirs = peer.root / "vmail"
    maildirs.mkdir()
    os.chown(maildirs, nobody.pw_uid, nobody.pw_gid)
    peer.settings.update(virtual_maildir_settings(
        "remote.test", "carol@remote.test", maildirs, nobody.pw_uid, nobody.pw_gid))
    cert, key = ensure_self_signed(str(peer.root / "tls"), "mx.remote.test")
    peer.settings.update({"smtpd_tls_security_level": "may", "smtpd_tls_loglevel": "1",
                          "smtpd_tls_cert_file": cert, "smtpd_tls_key_file": key})
    await deferToThread(peer.start)
    dns = start_dns_server(reactor, Zone("test", {
        "remote.test": [("MX", (10, "mx.remote.test"))],
        "mx.remote.test": [("A", peer.smtpd_host)],
    }))
    try:
        server = server_process(
            {"delivery": {"nameservers": [dns.address], "port": peer.smtpd_port}},
            listen_keys=LISTENERS)
        await provision(Path(server.data_dir), "example.org", ["alice"])
        await deferToThread(server.start)
        data = message("to postfix", sender=ALICE, to="carol@remote.test")

        def submit() -> None:
            port = server.ports["submission.listen"]
            with smtplib.SMTP("localhost", port, timeout=15) as client:
                client.starttls(context=verified_context(server))
                client.login(ALICE, PASSWORD)
                assert client.sendmail(ALICE, ["carol@remote.test"], data) == {}

        await deferToThread(submit)
        box = maildirs / "remote.test" / "carol"

        def arrived() -> list[bytes]:
            if not (box / "new").exists():
                return []
            return [m.as_bytes() for m in mailbox.Maildir(str(box), create=False)]

        [got] = await deferToThread(wait_for, arrived, "delivery to Postfix",
                                    lambda: peer.maillog_text() + server.output())
        assert got.replace(b"\n", b"\r\n").endswith(data.split(b"\r\n\r\n", 1)[1])
        assert "TLS connection established from" in peer.maillog_text()
    finally:
        await dns.stop()
