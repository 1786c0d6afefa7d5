"""STARTTLS (RFC 3207): the upgrade, the state reset and the command-injection defence."""

from __future__ import annotations

import smtplib
import ssl

import pytest_twisted

from tests.smtp.conftest import in_thread
from tests.smtp.test_session import MESSAGE


def insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest_twisted.ensureDeferred
async def test_starttls_then_mail(smtp_server):
    """After STARTTLS and a new EHLO, mail flows and the Received header records TLS."""

    def send():
        with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
            client.ehlo("c.example")
            client.starttls(context=insecure_context())
            code, text = client.ehlo("c.example")
            assert b"STARTTLS" not in text
            client.sendmail("bob@example.net", ["alice@example.org"], MESSAGE)

    await in_thread(send)
    [stored] = smtp_server.messages("alice")
    assert b"with ESMTPS id" in stored
    assert b"(using TLSv1." in stored


@pytest_twisted.ensureDeferred
async def test_commands_pipelined_after_starttls_are_discarded(smtp_server):
    """Plaintext sent after STARTTLS in the same packet is never executed (RFC 3207 §4.2)."""

    def talk():
        raw = smtp_server.connect()
        raw.reply()
        raw.send(b"EHLO c.example\r\n")
        raw.reply()
        raw.send(b"STARTTLS\r\nMAIL FROM:<injected@example.net>\r\n")
        assert raw.code().startswith("220 2.0.0")
        raw.buffer = b""
        raw.starttls()
        raw.send(b"MAIL FROM:<a@example.net>\r\n")
        before_ehlo = raw.code()
        raw.send(b"EHLO c.example\r\n")
        raw.reply()
        raw.send(b"MAIL FROM:<a@example.net>\r\n")
        after_ehlo = raw.code()
        raw.close()
        return before_ehlo, after_ehlo

    before_ehlo, after_ehlo = await in_thread(talk)
    assert before_ehlo.startswith("503 5.5.1")  # state was reset: EHLO needed again
    assert after_ehlo.startswith("250 2.1.0")


@pytest_twisted.ensureDeferred
async def test_starttls_twice_and_with_arguments(smtp_server):
    """STARTTLS with an argument gets 501; a second STARTTLS inside TLS gets 503."""

    def talk():
        raw = smtp_server.connect()
        raw.reply()
        raw.send(b"EHLO c\r\nSTARTTLS now\r\n")
        raw.reply()
        with_argument = raw.code()
        raw.send(b"STARTTLS\r\n")
        raw.code()
        raw.starttls()
        raw.send(b"EHLO c\r\n")
        raw.reply()
        raw.send(b"STARTTLS\r\n")
        again = raw.code()
        raw.close()
        return with_argument, again

    with_argument, again = await in_thread(talk)
    assert with_argument.startswith("501")
    assert again.startswith("503 5.5.1")
