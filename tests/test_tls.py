"""mailserver.tls: the self-signed certificate and the server's TLS options."""

from __future__ import annotations

import ipaddress
import os
import stat

import pytest
from cryptography import x509
from OpenSSL import SSL
from twisted.internet import ssl

from mailserver.errors import ConfigError
from mailserver.tls import ensure_self_signed, server_options


def test_creates_self_signed_certificate(tmp_path):
    """A missing certificate is created for the hostname and 127.0.0.1."""
    cert_path, key_path = ensure_self_signed(str(tmp_path / "tls"), "mail.example")
    cert = x509.load_pem_x509_certificate(open(cert_path, "rb").read())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["mail.example"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert cert.issuer == cert.subject


def test_key_file_is_private(tmp_path):
    """The key file is readable by its owner only (mode 0600)."""
    _, key_path = ensure_self_signed(str(tmp_path), "localhost")
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600


def test_reused_on_second_call(tmp_path):
    """A second call returns the same files with the same bytes."""
    first = ensure_self_signed(str(tmp_path), "localhost")
    before = [open(p, "rb").read() for p in first]
    second = ensure_self_signed(str(tmp_path), "localhost")
    assert second == first
    assert [open(p, "rb").read() for p in second] == before


def test_replaced_when_hostname_changes(tmp_path):
    """A certificate for another hostname is replaced, not reused."""
    cert_path, _ = ensure_self_signed(str(tmp_path), "a.example")
    before = open(cert_path, "rb").read()
    ensure_self_signed(str(tmp_path), "b.example")
    assert open(cert_path, "rb").read() != before


def test_replaced_when_corrupt(tmp_path):
    """A corrupt certificate file is replaced by a fresh pair."""
    cert_path, key_path = ensure_self_signed(str(tmp_path), "localhost")
    open(cert_path, "w").write("garbage")
    ensure_self_signed(str(tmp_path), "localhost")
    assert server_options(cert_path, key_path) is not None


def test_server_options_build(tmp_path):
    """server_options gives CertificateOptions with a usable context, TLS 1.2 at least."""
    options = server_options(*ensure_self_signed(str(tmp_path), "localhost"))
    assert isinstance(options, ssl.CertificateOptions)
    assert options.getContext() is not None
    for old in (SSL.OP_NO_TLSv1, SSL.OP_NO_TLSv1_1):
        assert options._options & old


def test_mismatched_key_is_config_error(tmp_path):
    """A key that does not belong to the certificate names tls.key."""
    cert_path, _ = ensure_self_signed(str(tmp_path / "a"), "localhost")
    _, other_key = ensure_self_signed(str(tmp_path / "b"), "localhost")
    with pytest.raises(ConfigError) as info:
        server_options(cert_path, other_key)
    assert info.value.key == "tls.key"


def test_unreadable_files_are_config_errors(tmp_path):
    """A missing or non-PEM certificate names tls.cert."""
    _, key_path = ensure_self_signed(str(tmp_path), "localhost")
    with pytest.raises(ConfigError) as info:
        server_options(str(tmp_path / "absent.pem"), key_path)
    assert info.value.key == "tls.cert"
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(ConfigError) as info:
        server_options(str(bogus), key_path)
    assert info.value.key == "tls.cert"
