"""Server TLS on the real process: certificates by SNI from tls.sni_dir, TLS 1.2 as the
floor, and SIGHUP reloading every certificate without dropping established sessions."""

from __future__ import annotations

import signal
import smtplib
import ssl
import time
from pathlib import Path

import pytest
import pytest_twisted
from cryptography import x509
from twisted.internet.threads import deferToThread

from tests.e2e.conftest import ServerProcess
from tests.pki import make_ca

pytestmark = pytest.mark.e2e


def write_pair(directory: Path, cert: bytes, key: bytes) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert.pem").write_bytes(cert)
    (directory / "key.pem").write_bytes(key)
    (directory / "key.pem").chmod(0o600)
    return directory / "cert.pem", directory / "key.pem"


def context(ca_pem: bytes, **versions: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    for name, value in versions.items():
        setattr(ctx, name, value)
    return ctx


def peer_certificate(port: int, ca_pem: bytes, name: str) -> tuple[x509.Certificate, object]:
    """STARTTLS with SNI ``name`` (verified against the CA); the certificate and the open
    session."""
    client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    client._host = name  # smtplib sends this as SNI and checks the certificate against it
    client.starttls(context=context(ca_pem))
    der = client.sock.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der), client


@pytest_twisted.ensureDeferred
async def test_sni_choice_and_reload_on_sighup(tmp_path):
    ca = make_ca()
    cert, key = write_pair(tmp_path / "default", *ca.issue_pem("mail.example.org"))
    write_pair(tmp_path / "sni" / "mx.other.test", *ca.issue_pem("mx.other.test"))
    server = ServerProcess(
        tmp_path / "server",
        {"tls": {"cert": str(cert), "key": str(key), "sni_dir": str(tmp_path / "sni")}},
        listen_keys=("http.listen", "smtp.listen"),
    )
    await deferToThread(server.start)
    port = server.ports["smtp.listen"]

    def check() -> None:
        default, first = peer_certificate(port, ca.pem, "mail.example.org")
        other, second = peer_certificate(port, ca.pem, "mx.other.test")
        assert default.subject != other.subject
        second.quit()
        # TLS 1.1 and older are refused
        with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, OSError)):
            old = smtplib.SMTP("127.0.0.1", port, timeout=10)
            old._host = "mail.example.org"
            old.starttls(context=context(ca.pem, maximum_version=ssl.TLSVersion.TLSv1_1,
                                         minimum_version=ssl.TLSVersion.TLSv1))
        # new certificate on disk, SIGHUP: new sessions get it, the open one goes on
        write_pair(tmp_path / "default", *ca.issue_pem("mail.example.org"))
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "TLS certificates reloaded" not in server.output():
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        renewed, third = peer_certificate(port, ca.pem, "mail.example.org")
        assert renewed.serial_number != default.serial_number
        assert first.noop()[0] == 250  # the session from before the reload still works
        first.quit()
        third.quit()

    await deferToThread(check)
    assert server.stop() == 0


@pytest_twisted.ensureDeferred
async def test_bad_certificate_on_reload_keeps_the_old_one(tmp_path):
    ca = make_ca()
    cert, key = write_pair(tmp_path / "default", *ca.issue_pem("mail.example.org"))
    server = ServerProcess(
        tmp_path / "server", {"tls": {"cert": str(cert), "key": str(key)}},
        listen_keys=("http.listen", "smtp.listen"),
    )
    await deferToThread(server.start)

    def check() -> None:
        before, session = peer_certificate(server.ports["smtp.listen"], ca.pem, "mail.example.org")
        session.quit()
        key.write_bytes(b"not a key")
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "TLS reload failed" not in server.output():
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        after, session = peer_certificate(server.ports["smtp.listen"], ca.pem, "mail.example.org")
        session.quit()
        assert after.serial_number == before.serial_number

    await deferToThread(check)
    server.stop()
