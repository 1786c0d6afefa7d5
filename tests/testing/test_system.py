"""MailSystem: SMTP, submission, IMAP and POP3 in-process on free 127.0.0.1 ports, driven by
real clients (smtplib, imaplib, poplib) from a thread, over the in-memory store and the
maildir + LMDB store in a temporary directory."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.threads import deferToThread

from mailserver.errors import InvalidName, MailError, NoSuchUser
from mailserver.testing import DeliveryTimeout, MailSystem, MemoryStore

PASSWORD = "secret"


def note(subject: str, sender: str = "carol@example.net", to: str = "alice@example.org") -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message.set_content("Hello.\n")
    return message.as_bytes(policy=default.clone(linesep="\r\n"))


def subject(data: bytes) -> str:
    return str(BytesParser(policy=default).parsebytes(data)["Subject"])


@pytest.fixture(params=["memory", "maildir"])
def system(request: Any, make_mail_system: Any, tmp_path: Any) -> MailSystem:
    """A started MailSystem over each store; alice and bob @example.org."""
    options = {"data_dir": tmp_path} if request.param == "maildir" else {}
    made = make_mail_system(**options)
    for user in ("alice", "bob"):
        made.call(made.add_user, f"{user}@example.org", PASSWORD)
    return made


def test_listeners_bind_loopback_free_ports(system: MailSystem) -> None:
    """Each protocol listens on its own free port of 127.0.0.1."""
    addresses = [system.smtp, system.submission, system.imap, system.pop3]
    assert {host for host, _ in addresses} == {"127.0.0.1"}
    assert len({port for _, port in addresses}) == 4


async def test_smtp_delivery_reaches_the_inbox(system: MailSystem) -> None:
    """Mail sent to port-25 SMTP lands in the user's INBOX, and wait_for_delivery fires with
    the stored bytes (with the Return-Path delivery added)."""

    def send() -> None:
        with smtplib.SMTP(*system.smtp, timeout=10) as client:
            client.sendmail("carol@example.net", ["alice@example.org"], note("first"))

    await deferToThread(send)
    [stored] = await system.wait_for_delivery("alice@example.org")
    assert stored.startswith(b"Return-Path: <carol@example.net>\r\n")
    assert subject(stored) == "first"
    assert system.messages("bob@example.org") == []


async def test_smtp_refuses_relaying(system: MailSystem) -> None:
    """The port-25 listener accepts local recipients only: another domain is 550 5.7.1 and
    nothing is captured or stored."""

    def send() -> Any:
        with smtplib.SMTP(*system.smtp, timeout=10) as client:
            client.ehlo()
            client.mail("carol@example.net")
            return client.rcpt("dave@elsewhere.test")

    code, text = await deferToThread(send)
    assert code == 550 and text.startswith(b"5.7.1")
    assert system.outbound == []


async def test_submission_captures_outbound_and_delivers_local(system: MailSystem) -> None:
    """An authenticated user's mail to another domain is captured in outbound, not sent;
    the local recipient of the same message gets it in the INBOX."""
    data = note("report", sender="alice@example.org", to="dave@elsewhere.test")

    def send() -> None:
        with smtplib.SMTP(*system.submission, timeout=10) as client:
            client.login("alice@example.org", PASSWORD)
            client.sendmail("alice@example.org", ["dave@elsewhere.test", "bob@example.org"], data)

    await deferToThread(send)
    [captured] = await system.wait_for_outbound()
    assert captured.sender == "alice@example.org"
    assert captured.to == ["dave@elsewhere.test"]
    assert subject(captured.data) == "report"
    [local] = await system.wait_for_delivery("bob@example.org")
    assert subject(local) == "report"


async def test_submission_needs_auth(system: MailSystem) -> None:
    """Submission refuses MAIL before AUTH (530 5.7.0)."""

    def send() -> Any:
        with smtplib.SMTP(*system.submission, timeout=10) as client:
            client.ehlo()
            return client.mail("alice@example.org")

    code, _ = await deferToThread(send)
    assert code == 530


async def test_imap_and_pop3_read_what_smtp_delivered(system: MailSystem) -> None:
    """A delivered message is read back over IMAP (FETCH BODY.PEEK[]) and POP3 (RETR)."""

    def send() -> None:
        with smtplib.SMTP(*system.smtp, timeout=10) as client:
            client.sendmail("carol@example.net", ["alice@example.org"], note("both"))

    await deferToThread(send)
    [stored] = await system.wait_for_delivery("alice@example.org")

    def read_imap() -> bytes:
        client = imaplib.IMAP4(*system.imap, timeout=10)
        try:
            client.login("alice@example.org", PASSWORD)
            client.select("INBOX", readonly=True)
            _, data = client.uid("FETCH", "1", "(BODY.PEEK[])")
            return bytes(data[0][1])
        finally:
            client.logout()

    def read_pop3() -> bytes:
        client = poplib.POP3(*system.pop3, timeout=10)
        try:
            client.user("alice@example.org")
            client.pass_(PASSWORD)
            _, lines, _ = client.retr(1)
            return b"\r\n".join(lines) + b"\r\n"
        finally:
            client.quit()

    assert await deferToThread(read_imap) == stored
    assert await deferToThread(read_pop3) == stored


async def test_starttls_is_offered_with_a_self_signed_certificate(system: MailSystem) -> None:
    """STARTTLS works on the SMTP listener with the generated certificate for mail.test."""

    def send() -> bytes:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP(*system.smtp, timeout=10) as client:
            client.starttls(context=context)
            client.sendmail("carol@example.net", ["alice@example.org"], note("secret"))
            return bytes(client.sock.getpeercert(binary_form=True) or b"")

    assert await deferToThread(send)
    [stored] = await system.wait_for_delivery("alice@example.org")
    assert subject(stored) == "secret"


async def test_wait_for_delivery_counts_what_is_there_already(system: MailSystem) -> None:
    """wait_for_delivery fires at once when the folder already holds ``count`` messages and
    waits for the rest otherwise."""

    def send(n: int) -> None:
        with smtplib.SMTP(*system.smtp, timeout=10) as client:
            for i in range(n):
                client.sendmail("carol@example.net", ["alice@example.org"], note(f"m{i}"))

    await deferToThread(send, 2)
    waiting = system.wait_for_delivery("alice@example.org", count=3)
    assert not waiting.called
    await deferToThread(send, 1)
    found = await waiting
    assert [subject(m) for m in found] == ["m0", "m1", "m0"]


async def test_wait_for_delivery_unknown_user(system: MailSystem) -> None:
    """Waiting for an address without an account fails with NoSuchUser at once."""
    with pytest.raises(NoSuchUser):
        await system.wait_for_delivery("nobody@example.org")


def test_wait_for_delivery_times_out_with_what_it_saw() -> None:
    """After ``timeout`` seconds of the system's clock the wait fails with DeliveryTimeout
    naming the address, the folder and how many messages it holds."""
    clock = task.Clock()
    system = MailSystem(reactor=clock, tls=False)
    store = system.store
    assert isinstance(store, MemoryStore)
    store.create_account("alice@example.org")
    waiting = system.wait_for_delivery("alice@example.org", count=2, timeout=30)
    clock.advance(29)
    assert not waiting.called
    clock.advance(1)
    failure = waiting.result
    waiting.addErrback(lambda _: None)
    assert failure.check(DeliveryTimeout)
    assert str(failure.value) == "alice@example.org INBOX holds 0 message(s) after 30s, expected 2"
    assert clock.getDelayedCalls() == []


def test_blocking_helpers_need_a_call() -> None:
    """Without a blocking call the *_blocking helpers say how to wait instead."""
    system = MailSystem(tls=False)
    with pytest.raises(RuntimeError, match="no blocking call"):
        system.add_user_blocking("alice@example.org")


def test_add_user_needs_a_domain(mail_system: MailSystem) -> None:
    """add_user refuses a name without a domain with InvalidName."""
    adding = mail_system.add_user("alice")
    failure = adding.result
    adding.addErrback(lambda _: None)
    assert failure.check(InvalidName)
    assert str(failure.value) == "an address needs a domain (alice)"


async def test_any_loopback_address(make_mail_system: Any) -> None:
    """``host`` picks another 127.x address; mail still flows there."""
    other = make_mail_system(host="127.0.0.2", tls=False)
    await other.add_user("alice@example.org")
    assert {host for host, _ in (other.smtp, other.imap, other.pop3)} == {"127.0.0.2"}

    def send() -> None:
        with smtplib.SMTP(*other.smtp, timeout=10) as client:
            client.sendmail("carol@example.net", ["alice@example.org"], note("elsewhere"))

    await deferToThread(send)
    [stored] = await other.wait_for_delivery("alice@example.org")
    assert subject(stored) == "elsewhere"


async def test_blocking_helpers_inside_an_async_test_say_to_await(mail_system: MailSystem) -> None:
    """In a pytest-twisted test the code runs on the reactor, so a blocking helper that
    would have to wait raises RuntimeError saying to await the Deferred instead."""
    with pytest.raises(RuntimeError, match="await the Deferred"):
        mail_system.add_user_blocking("carol@example.org")  # bcrypt runs in a thread


async def test_stop_closes_sessions_left_open(make_mail_system: Any) -> None:
    """stop() aborts the sessions clients left open: every factory counts no connection
    afterwards, and each client sees its connection closed."""
    system = make_mail_system(tls=False)

    def connect() -> list[socket.socket]:
        opened = []
        for address in (system.smtp, system.imap, system.pop3):
            client = socket.create_connection(address, timeout=10)
            client.recv(200)  # the greeting: the session is counted
            opened.append(client)
        return opened

    clients = await deferToThread(connect)
    assert sum(f.connections for f in system.factories) == 3
    await system.stop()
    assert [f.connections for f in system.factories] == [0, 0, 0, 0]

    def closed(client: socket.socket) -> bool:
        """Read what is left (e.g. the rest of a long greeting) up to the end."""
        try:
            while client.recv(65536):
                pass
        except ConnectionResetError:  # aborted: a reset rather than a FIN
            pass
        return True

    assert await deferToThread(lambda: [closed(c) for c in clients]) == [True, True, True]
    for client in clients:
        client.close()


async def test_outbound_failure_reaches_the_client(system: MailSystem) -> None:
    """With the outbound capture failing (a relay that is down), submission to another
    domain gets the temporary error and nothing is captured."""
    system.outbound_target.commit_error = MailError("Relay down, try later")
    data = note("later", sender="alice@example.org", to="dave@elsewhere.test")

    def send() -> None:
        with smtplib.SMTP(*system.submission, timeout=10) as client:
            client.login("alice@example.org", PASSWORD)
            client.sendmail("alice@example.org", ["dave@elsewhere.test"], data)

    with pytest.raises(smtplib.SMTPDataError) as raised:
        await deferToThread(send)
    assert raised.value.smtp_code == 451
    assert b"Relay down, try later" in raised.value.smtp_error
    assert system.outbound == []

