"""Our spool delivering to a real Postfix: a user submits to our server (a real process),
the spool finds remote.test's MX through a real DNS server, and Postfix (Debian's, private
instance on 127.0.0.2) takes the message over SMTP with STARTTLS and stores it in a maildir
with its virtual agent."""

from __future__ import annotations

import mailbox
import os
import pwd
import smtplib
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from tests.dns_server import Zone, start_dns_server
from tests.e2e.conftest import ServerProcess
from tests.e2e.mail import PASSWORD, insecure_context, provision
from tests.peers.postfix import virtual_maildir_settings

pytestmark = pytest.mark.e2e

BODY = "Subject: to postfix\r\nMessage-ID: <to-postfix-1@example.org>\r\n\r\nover SMTP\r\n"


@pytest_twisted.ensureDeferred
async def test_spool_delivers_to_postfix(tmp_path, postfix_peer):
    nobody = pwd.getpwnam("nobody")
    peer = postfix_peer(settings={})
    maildirs = peer.root / "vmail"
    maildirs.mkdir()
    os.chown(maildirs, nobody.pw_uid, nobody.pw_gid)
    peer.settings.update(virtual_maildir_settings(
        "remote.test", "carol@remote.test", maildirs, nobody.pw_uid, nobody.pw_gid))
    peer.settings["smtpd_tls_security_level"] = "none"
    peer.start()
    dns = start_dns_server(reactor, Zone("test", {
        "remote.test": [("MX", (10, "mx.remote.test"))],
        "mx.remote.test": [("A", peer.smtpd_host)],
    }))
    server = ServerProcess(
        tmp_path / "ours",
        {"server": {"hostname": "mail.example.org"},
         "delivery": {"nameservers": [dns.address], "port": peer.smtpd_port}},
        listen_keys=("http.listen", "submission.listen"),
    )
    try:
        await provision(server.data_dir, "example.org", ["alice"])
        await deferToThread(server.start)

        def submit() -> None:
            port = server.ports["submission.listen"]
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.starttls(context=insecure_context())
                client.login("alice@example.org", PASSWORD)
                client.sendmail("alice@example.org", ["carol@remote.test"],
                                ("From: alice@example.org\r\n" + BODY).encode())

        await deferToThread(submit)
        box = maildirs / "remote.test" / "carol"

        def arrived() -> list[bytes]:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if (box / "new").exists():
                    found = [m.as_bytes() for m in mailbox.Maildir(str(box), create=False)]
                    if found:
                        return found
                time.sleep(0.2)
            raise AssertionError(f"not delivered; Postfix log:\n{peer.maillog_text()[-3000:]}")

        [stored] = await deferToThread(arrived)
        assert b"over SMTP" in stored and b"Message-ID: <to-postfix-1@example.org>" in stored
        assert b"by postfix-peer.test" in stored  # Postfix's own Received header
        assert b"from mail.example.org" in stored  # our EHLO name
    finally:
        if server.running:
            server.stop()
        await dns.stop()
