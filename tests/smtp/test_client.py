"""The outbound client against our own server (a real socket) and against scripted servers
that misbehave: pipelined transactions, per-recipient results, STARTTLS, dot-stuffing at
every boundary, broken replies and timeouts."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions

from mailserver.smtp.client import ProtocolError, SMTPClient, send_mail

MESSAGE = b"From: a@example.net\r\nTo: alice@example.org\r\nSubject: out\r\n\r\nHello.\r\n"


async def connect(port: int, **timeouts: float) -> SMTPClient:
    client = SMTPClient(reactor, timeouts or None)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    greeting = await client.greeting
    assert greeting.code == 220
    return client


@pytest_twisted.ensureDeferred
async def test_pipelined_transaction_reports_each_recipient(smtp_server):
    client = await connect(smtp_server.port)
    reply = await client.ehlo("client.example.net")
    assert reply.code == 250 and client.supports("PIPELINING") and client.supports("SIZE")
    result = await send_mail(
        client, "a@example.net",
        [("alice@example.org", {}), ("nobody@example.org", {}), ("bob@example.org", {})],
        MESSAGE,
    )
    await client.quit()
    assert result.mail.code == 250
    assert result.recipients["nobody@example.org"].code == 550
    assert result.recipients["nobody@example.org"].enhanced == "5.1.1"
    assert result.reply_for("alice@example.org").code == 250
    assert result.reply_for("nobody@example.org").code == 550
    assert smtp_server.messages("alice")[0].endswith(MESSAGE)
    assert len(smtp_server.messages("bob")) == 1


@pytest_twisted.ensureDeferred
async def test_no_valid_recipient_sends_no_message(smtp_server):
    client = await connect(smtp_server.port)
    await client.ehlo("client.example.net")
    result = await send_mail(client, "a@example.net", [("x@elsewhere.test", {})], MESSAGE)
    assert result.recipients["x@elsewhere.test"].enhanced == "5.7.1"
    assert result.data is None
    # the session is still usable
    result = await send_mail(client, "a@example.net", [("alice@example.org", {})], MESSAGE)
    assert result.data.code == 250
    await client.quit()
    assert len(smtp_server.messages("alice")) == 1


@pytest.mark.parametrize("pipelining", [True, False])
@pytest_twisted.ensureDeferred
async def test_dot_stuffing_survives_every_boundary(smtp_server, pipelining):
    body = b"".join(b"." * (n % 3 + 1) + b"x" * n + b"\r\n" for n in range(0, 3000, 97))
    message = b"Subject: dots\r\n\r\n.\r\n" + body + b"..\r\n."
    client = await connect(smtp_server.port)
    await client.ehlo("client.example.net")
    if not pipelining:
        client.extensions.pop("PIPELINING")
    result = await send_mail(client, "a@example.net", [("alice@example.org", {})], message)
    await client.quit()
    assert result.data.code == 250
    assert smtp_server.messages("alice")[0].endswith(message + b"\r\n")


@pytest_twisted.ensureDeferred
async def test_starttls_then_ehlo_again(smtp_server):
    client = await connect(smtp_server.port)
    await client.ehlo("client.example.net")
    assert client.supports("STARTTLS")
    reply = await client.starttls(CertificateOptions(verify=False))
    assert reply.code == 220 and client.secure
    await client.ehlo("client.example.net")
    assert not client.supports("STARTTLS")
    result = await send_mail(client, "a@example.net", [("alice@example.org", {})], MESSAGE)
    await client.quit()
    assert result.data.code == 250
    assert b"with ESMTPS" in smtp_server.messages("alice")[0]


class Scripted(Protocol):
    """A server that sends ``script`` lines, one per line received (first at connect)."""

    def __init__(self, script: list[bytes]) -> None:
        self.script = list(script)

    def connectionMade(self) -> None:
        self._next()

    def dataReceived(self, data: bytes) -> None:
        for _ in range(data.count(b"\n")):
            self._next()

    def _next(self) -> None:
        if self.script:
            self.transport.write(self.script.pop(0))


def scripted_server(script: list[bytes]):
    factory = Factory.forProtocol(lambda: Scripted(script))
    return reactor.listenTCP(0, factory, interface="127.0.0.1")


@pytest_twisted.ensureDeferred
async def test_multiline_reply_and_helo_fallback():
    port = scripted_server([b"220-first\r\n220 second\r\n", b"500 5.5.1 no EHLO\r\n",
                            b"250 ok\r\n"])
    try:
        client = await connect(port.getHost().port)
        reply = await client.ehlo("me")
        assert reply.code == 250 and client.extensions == {}
    finally:
        await port.stopListening()


@pytest.mark.parametrize("bad", [b"hello\r\n", b"250-a\r\n251 b\r\n", b"25\r\n",
                                 b"250 " + b"x" * 5000 + b"\r\n"])
@pytest_twisted.ensureDeferred
async def test_broken_replies_are_protocol_errors(bad):
    port = scripted_server([b"220 hi\r\n", bad])
    try:
        client = await connect(port.getHost().port)
        with pytest.raises(ProtocolError):
            await client.ehlo("me")
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_silent_server_times_out():
    port = scripted_server([b"220 hi\r\n"])
    try:
        client = await connect(port.getHost().port, MAIL=0.2)
        with pytest.raises(ProtocolError, match="timeout"):
            await client.ehlo("me")
    finally:
        await port.stopListening()
