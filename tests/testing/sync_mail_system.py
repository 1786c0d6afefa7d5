"""The mail_system fixture in plain pytest (pytest-twisted off): the reactor runs in a thread
and the tests are ordinary functions with blocking clients. Run by
tests/testing/test_pytest_plugin.py in a pytest of its own (``-p no:twisted``)."""

from __future__ import annotations

import poplib
import smtplib

from mailserver.testing import MailSystem

MESSAGE = b"From: carol@example.net\r\nTo: alice@example.org\r\nSubject: sync\r\n\r\nHi.\r\n"
OUTGOING = b"From: alice@example.org\r\nTo: dave@elsewhere.test\r\nSubject: out\r\n\r\nHi.\r\n"


def test_send_and_wait_without_twisted(mail_system: MailSystem) -> None:
    """smtplib runs in the test itself; wait_for_delivery_blocking returns the message."""
    mail_system.add_user_blocking("alice@example.org", "secret")
    with smtplib.SMTP(*mail_system.smtp, timeout=10) as client:
        client.sendmail("carol@example.net", ["alice@example.org"], MESSAGE)
    [stored] = mail_system.wait_for_delivery_blocking("alice@example.org")
    assert stored.endswith(MESSAGE)
    client = poplib.POP3(*mail_system.pop3, timeout=10)
    client.user("alice@example.org")
    client.pass_("secret")
    assert client.stat()[0] == 1
    client.quit()


def test_outbound_and_maildir_store(make_mail_system, tmp_path) -> None:
    """A maildir store in tmp_path; mail for another domain is captured."""
    system = make_mail_system(data_dir=tmp_path)
    system.add_user_blocking("alice@example.org", "secret")
    with smtplib.SMTP(*system.submission, timeout=10) as client:
        client.login("alice@example.org", "secret")
        client.sendmail("alice@example.org", ["dave@elsewhere.test"], OUTGOING)
    [captured] = system.wait_for_outbound_blocking()
    assert captured.to == ["dave@elsewhere.test"]
    assert (tmp_path / "index").is_dir()
    assert system.messages_blocking("alice@example.org") == []
    assert system.call(system.messages, "alice@example.org", "Sent") == []
