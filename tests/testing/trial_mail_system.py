"""MailSystem from twisted.trial: setUp returns start()'s Deferred, tearDown stop()'s, and the
tests return Deferreds. Run by tests/testing/test_trial.py with ``python -m twisted.trial``
(pytest does not collect this file: pytest-twisted already drives the reactor there)."""

from __future__ import annotations

import imaplib
import smtplib
import socket
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from mailserver.testing import MailSystem

MESSAGE = b"From: carol@example.net\r\nTo: alice@example.org\r\nSubject: trial\r\n\r\nHi.\r\n"
OUTGOING = b"From: alice@example.org\r\nTo: dave@elsewhere.test\r\nSubject: out\r\n\r\nHi.\r\n"


class MailSystemTrialTests(unittest.TestCase):
    def setUp(self) -> Deferred[Any]:
        self.system = MailSystem(tls=False)
        starting = self.system.start()
        starting.addCallback(lambda _: self.system.add_user("alice@example.org", "secret"))
        return starting

    def tearDown(self) -> Deferred[None]:
        return self.system.stop()

    @inlineCallbacks
    def test_smtp_then_imap(self) -> Any:
        """A message sent over SMTP is waited for, then read back over IMAP."""

        def send() -> None:
            with smtplib.SMTP(*self.system.smtp, timeout=10) as client:
                client.sendmail("carol@example.net", ["alice@example.org"], MESSAGE)

        yield deferToThread(send)
        [stored] = yield self.system.wait_for_delivery("alice@example.org")
        self.assertTrue(stored.endswith(MESSAGE))

        def fetch() -> bytes:
            client = imaplib.IMAP4(*self.system.imap, timeout=10)
            try:
                client.login("alice@example.org", "secret")
                client.select("INBOX", readonly=True)
                _, data = client.uid("FETCH", "1", "(BODY.PEEK[])")
                return bytes(data[0][1])
            finally:
                client.logout()

        fetched = yield deferToThread(fetch)
        self.assertEqual(fetched, stored)

    @inlineCallbacks
    def test_outbound_is_captured(self) -> Any:
        """Submission to another domain is captured, not sent."""

        def send() -> None:
            with smtplib.SMTP(*self.system.submission, timeout=10) as client:
                client.login("alice@example.org", "secret")
                client.sendmail("alice@example.org", ["dave@elsewhere.test"], OUTGOING)

        yield deferToThread(send)
        [captured] = yield self.system.wait_for_outbound()
        self.assertEqual(captured.to, ["dave@elsewhere.test"])

    def test_session_left_open(self) -> Deferred[Any]:
        """A client that never logs out does not leave the reactor dirty: tearDown's stop()
        closes its session (trial would report the open connection and its timer)."""
        clients: list[socket.socket] = []

        def connect() -> bytes:
            client = socket.create_connection(self.system.imap, timeout=10)
            clients.append(client)
            return client.recv(200)

        self.addCleanup(lambda: [c.close() for c in clients])
        reading = deferToThread(connect)
        reading.addCallback(lambda greeting: self.assertTrue(greeting.startswith(b"* OK")))
        return reading

