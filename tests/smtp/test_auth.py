"""SMTP AUTH (RFC 4954) on an in-process submission listener: mechanisms, cancel, bad
base64, wrong password, second AUTH, the AUTH= parameter, and 530 before AUTH."""

from __future__ import annotations

import base64
import socket

import pytest
import pytest_twisted

from tests.smtp.conftest import Raw, in_thread, start_submission


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def submission(tls_options):
    """AUTH allowed without TLS, so the dialogs below can stay in plain text."""
    server, port = start_submission(tls_options, auth_needs_tls=False)
    yield server.port
    pytest_twisted.blockon(port.stopListening())


def talk(port: int, steps: list[tuple[str, str]]) -> list[str]:
    raw = Raw(socket.create_connection(("127.0.0.1", port), timeout=10))
    got = [raw.code()]
    for send, expected in steps:
        raw.send(send.encode() + b"\r\n")
        reply = raw.reply()
        got.append(reply[-1])
        assert reply[-1].startswith(expected), (send, expected, reply)
    raw.close()
    return got


@pytest_twisted.ensureDeferred
async def test_plain_login_and_errors(submission):
    await in_thread(talk, submission, [
        ("EHLO c.example", "250 "),
        ("MAIL FROM:<alice@example.org>", "530 5.7.0"),
        ("AUTH CRAM-MD5", "504 5.5.4"),
        ("AUTH PLAIN !!notbase64", "501 5.5.2"),
        ("AUTH PLAIN", "334"),
        ("*", "501 5.0.0"),
        ("AUTH PLAIN " + b64("\0alice@example.org\0wrong"), "535 5.7.8"),
        ("AUTH LOGIN", "334 " + b64("Username:")),
        (b64("alice@example.org"), "334 " + b64("Password:")),
        (b64("secret"), "235 2.7.0"),
        ("AUTH PLAIN " + b64("\0alice@example.org\0secret"), "503 5.5.1"),
        ("MAIL FROM:<alice@example.org> AUTH=<>", "250 2.1.0"),
        ("RCPT TO:<bob@example.org>", "250 2.1.5"),
        ("RSET", "250 2.0.0"),
        ("MAIL FROM:<bob@example.org>", "553 5.7.1"),
    ])


@pytest_twisted.ensureDeferred
async def test_auth_keyword_and_initial_response(submission):
    def check() -> list[str]:
        raw = Raw(socket.create_connection(("127.0.0.1", submission), timeout=10))
        raw.reply()
        raw.send(b"EHLO c.example\r\n")
        ehlo = raw.reply()
        raw.send(f"AUTH PLAIN {b64(chr(0) + 'alice@example.org' + chr(0) + 'secret')}\r\n".encode())
        ok = raw.code()
        raw.close()
        return [*ehlo, ok]

    lines = await in_thread(check)
    assert any(line[4:] == "AUTH PLAIN LOGIN" for line in lines)
    assert lines[-1].startswith("235 2.7.0")


@pytest_twisted.ensureDeferred
async def test_auth_not_allowed_inside_a_transaction(submission):
    await in_thread(talk, submission, [
        ("EHLO c.example", "250 "),
        ("AUTH PLAIN " + b64("\0alice@example.org\0secret"), "235"),
        ("MAIL FROM:<alice@example.org>", "250"),
        ("AUTH LOGIN", "503 5.5.1"),
    ])
