"""A throwaway certificate authority for tests that need *verified* TLS (MTA-STS, DANE-less
"verify" policies): a CA, and server certificates it signs for given host names."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import ssl


@dataclass
class TestCA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def trust_root(self) -> ssl.Certificate:
        """For ``ssl.optionsForClientTLS(host, trustRoot=...)``."""
        return ssl.Certificate.loadPEM(self.cert.public_bytes(serialization.Encoding.PEM))

    def client_options(self, host: str) -> ssl.IOpenSSLClientConnectionCreator:
        return ssl.optionsForClientTLS(host, trustRoot=self.trust_root)

    def server_options(self, *hosts: str) -> ssl.CertificateOptions:
        """Server TLS options with a certificate for ``hosts`` signed by this CA."""
        cert_pem, key_pem = self.issue_pem(*hosts)
        return ssl.PrivateCertificate.loadPEM(cert_pem + key_pem).options()

    @property
    def pem(self) -> bytes:
        """The CA certificate (for ``ssl.SSLContext.load_verify_locations(cadata=...)``)."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue_pem(self, *hosts: str) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for ``hosts``, signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem


def make_ca() -> TestCA:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailserver test CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            True,
        )
        .sign(key, hashes.SHA256())
    )
    return TestCA(cert, key)
