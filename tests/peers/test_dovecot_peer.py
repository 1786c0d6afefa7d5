"""The private Dovecot peer (``tests/peers/dovecot.py``) starts, serves a message placed in
its maildir over IMAP, IMAPS and POP3, and leaves nothing behind when stopped."""

from __future__ import annotations

import imaplib
import poplib
import ssl
from pathlib import Path

import pytest

from tests.peers.dovecot import DovecotInstance, pid_alive, unavailable_reason

REASON = unavailable_reason(pop3=True)
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

MESSAGE = (
    b"From: Bob <bob@example.net>\r\n"
    b"To: alice@example.org\r\n"
    b"Subject: peer smoke test\r\n"
    b"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
    b"Message-ID: <smoke@example.net>\r\n"
    b"\r\n"
    b"Hello from the maildir.\r\n"
)


def _insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_dovecot_serves_a_maildir_message_and_cleans_up(tmp_path: Path) -> None:
    """A message written into the maildir (flagged \\Seen, with an INTERNALDATE) is seen by
    SELECT and FETCH over plain IMAP and IMAPS and counted by POP3; a wrong password gets NO;
    after stop the master is gone and the directory removed."""
    dovecot = DovecotInstance(tmp_path, users={"alice": "secret"}, tls=True, pop3=True)
    with dovecot:
        master = dovecot.master_pid()
        assert master is not None
        dovecot.add_message("alice", MESSAGE, flags=["\\Seen"], internaldate=1_700_000_000)

        client = imaplib.IMAP4(dovecot.host, dovecot.imap_port)
        client.login("alice", "secret")
        status, data = client.select("INBOX")
        assert (status, data) == ("OK", [b"1"])
        status, data = client.fetch("1", "(FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[])")
        assert status == "OK"
        meta, body = data[0]
        assert b"\\Seen" in meta
        assert f"RFC822.SIZE {len(MESSAGE)}".encode() in meta
        assert b'INTERNALDATE "14-Nov-2023 22:13:20 +0000"' in meta
        assert body == MESSAGE
        client.logout()

        secure = imaplib.IMAP4_SSL(
            dovecot.host, dovecot.imaps_port, ssl_context=_insecure_context()
        )
        secure.login("alice", "secret")
        assert secure.select("INBOX", readonly=True) == ("OK", [b"1"])
        secure.logout()

        pop = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=10)
        pop.user("alice")
        pop.pass_("secret")
        assert pop.stat() == (1, len(MESSAGE))
        pop.quit()

        # Last: after a failure Dovecot delays the next logins from this IP (anvil penalty).
        wrong = imaplib.IMAP4(dovecot.host, dovecot.imap_port)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            wrong.login("alice", "wrong")
        wrong.logout()
        assert "Login: user=<alice>" in dovecot.log_text()
    assert not pid_alive(master)
    assert not dovecot.root.exists()
