"""TLS material: the self-signed certificate of the embedded defaults, server options, the
reloadable SNI-aware :class:`ServerTLS` every listener uses, and client options for the spool.

:func:`ensure_self_signed` makes a certificate + key once (written atomically, key mode 0600)
and reuses them on later starts while they are valid. :func:`server_options` loads a PEM
certificate (chain) and key into a :class:`twisted.internet.ssl.CertificateOptions` that
refuses anything older than TLS 1.2. Problems raise :class:`ConfigError` naming ``tls.cert``
or ``tls.key``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from zope.interface import implementer

from mailserver.durable import write_atomically
from mailserver.errors import ConfigError

CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"
#: How long a generated certificate is valid.
VALIDITY = datetime.timedelta(days=3650)
#: TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3 suites are fixed by OpenSSL).
MODERN_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"
#: A certificate closer than this to expiry is replaced on the next start.
RENEW_BEFORE = datetime.timedelta(days=30)


def ensure_self_signed(directory: str, hostname: str) -> tuple[str, str]:
    """Return ``(cert_path, key_path)`` of a self-signed certificate for ``hostname``.

    The files live in ``directory`` (created with mode 0700 if missing). Existing files are
    reused, byte for byte, when they parse, match each other, cover ``hostname`` and are not
    about to expire; otherwise a new RSA 2048 key and certificate (SAN: ``hostname`` and
    127.0.0.1) replace them. Both are written atomically with :mod:`mailserver.durable`
    (temp file, fsync, rename, fsync of the directory), the key first and with mode 0600.
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    cert_path = os.path.join(directory, CERT_NAME)
    key_path = os.path.join(directory, KEY_NAME)
    if _reusable(cert_path, key_path, hostname):
        return cert_path, key_path
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = _self_signed(key, hostname)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomically(key_path, key_pem, mode=0o600)
    write_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return cert_path, key_path


def _self_signed(key: rsa.RSAPrivateKey, hostname: str) -> x509.Certificate:
    """A CA:false server certificate for ``hostname`` and 127.0.0.1 signed by ``key``."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        alt_names.insert(0, x509.IPAddress(ipaddress.ip_address(hostname)))
    except ValueError:
        alt_names.insert(0, x509.DNSName(hostname))
    alt_names = list(dict.fromkeys(alt_names))
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def _reusable(cert_path: str, key_path: str, hostname: str) -> bool:
    """True when both files load, match, name ``hostname`` and stay valid for a while."""
    try:
        cert, key = _load_pair(cert_path, key_path)
    except (OSError, ConfigError):
        return False
    now = datetime.datetime.now(datetime.UTC)
    if cert[0].not_valid_after_utc - RENEW_BEFORE < now:
        return False
    try:
        names = cert[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return hostname in names.get_values_for_type(x509.DNSName) or hostname in {
        str(ip) for ip in names.get_values_for_type(x509.IPAddress)
    }


def _load_pair(cert_path: str, key_path: str) -> tuple[list[x509.Certificate], PrivateKeyTypes]:
    """Load the certificate chain and key, checking that the key belongs to the first cert.

    Raises OSError when a file cannot be read, ConfigError when it does not parse or match.
    """
    with open(cert_path, "rb") as handle:
        cert_pem = handle.read()
    with open(key_path, "rb") as handle:
        key_pem = handle.read()
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise ConfigError(
            "tls.cert", f"{cert_path} holds no PEM certificate", "give a PEM certificate file"
        ) from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            "tls.key",
            f"{key_path} holds no unencrypted PEM private key",
            "give the PEM key without a passphrase",
        ) from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, public) != chain[
        0
    ].public_key().public_bytes(serialization.Encoding.DER, public):
        raise ConfigError(
            "tls.key",
            f"{key_path} does not match the certificate in {cert_path}",
            "give the key the certificate was issued for",
        )
    return chain, key


def server_options(cert_path: str, key_path: str) -> ssl.CertificateOptions:
    """CertificateOptions presenting the PEM chain in ``cert_path`` with the key in
    ``key_path``; TLS 1.2 is the lowest version offered.

    Raises ConfigError (key ``tls.cert`` or ``tls.key``) when a file is unreadable, does not
    parse, or the key does not match the certificate.
    """
    for key_name, path in (("tls.cert", cert_path), ("tls.key", key_path)):
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            raise ConfigError(
                key_name,
                f"cannot read {path}: {error.strerror or error}",
                "check the path and that the server's user may read it",
            ) from None
    chain, key = _load_pair(cert_path, key_path)
    return ssl.CertificateOptions(
        # pyOpenSSL (>= 24.3) takes cryptography objects directly; its own are deprecated.
        privateKey=key,
        certificate=chain[0],
        extraCertChain=chain[1:],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        acceptableCiphers=ssl.AcceptableCiphers.fromOpenSSLCipherString(MODERN_CIPHERS),
    )


def _context(cert_path: str, key_path: str) -> SSL.Context:
    """A server context for one certificate: TLS 1.2+, :data:`MODERN_CIPHERS`."""
    return server_options(cert_path, key_path).getContext()


def _sni_pairs(directory: str) -> dict[str, tuple[str, str]]:
    """``<directory>/<hostname>/{cert.pem,key.pem}`` for each host name directory."""
    pairs: dict[str, tuple[str, str]] = {}
    if not directory:
        return pairs
    try:
        names = sorted(os.listdir(directory))
    except OSError as error:
        raise ConfigError(
            "tls.sni_dir",
            f"cannot read {directory}: {error.strerror or error}",
            "create it, or leave tls.sni_dir empty",
        ) from None
    for name in names:
        cert = os.path.join(directory, name, CERT_NAME)
        key = os.path.join(directory, name, KEY_NAME)
        if os.path.isfile(cert) and os.path.isfile(key):
            pairs[name.lower().rstrip(".")] = (cert, key)
    return pairs


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """The one place server TLS is built: a default certificate plus one per host name
    (chosen by SNI, RFC 6066 §3, from ``sni_dir/<name>/cert.pem+key.pem``), TLS 1.2+ with
    :data:`MODERN_CIPHERS`. :meth:`reload` reads every file again (SIGHUP): new connections
    get the new certificates, established ones keep theirs. A reload that fails keeps the
    old certificates and raises ConfigError.

    Usable wherever Twisted takes TLS options: ``transport.startTLS(tls)`` (STARTTLS) and
    ``TLSMemoryBIOFactory(tls, False, factory)`` (implicit TLS).
    """

    def __init__(self, cert_path: str, key_path: str, sni_dir: str = "") -> None:
        self.cert_path = cert_path
        self.key_path = key_path
        self.sni_dir = sni_dir
        self.generation = 0
        self._default: SSL.Context
        self._by_name: dict[str, SSL.Context] = {}
        self.reload()

    def reload(self) -> None:
        """Load every certificate again (all or nothing)."""
        default = _context(self.cert_path, self.key_path)
        by_name = {name: _context(*pair) for name, pair in _sni_pairs(self.sni_dir).items()}
        default.set_tlsext_servername_callback(self._choose)
        self._default, self._by_name = default, by_name
        self.generation += 1

    def names(self) -> list[str]:
        """Host names with their own certificate."""
        return sorted(self._by_name)

    def _choose(self, connection: SSL.Connection) -> None:
        requested = connection.get_servername()
        if requested:
            context = self._by_name.get(requested.decode("ascii", "replace").lower().rstrip("."))
            if context is not None:
                connection.set_context(context)

    # -- what Twisted asks for -----------------------------------------------------------

    def getContext(self) -> SSL.Context:
        return self._default

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self._default, None)


def client_options(host: str, verify: bool, trust_root: Any = None) -> Any:
    """Client TLS for the spool: verified against ``host`` (and the system roots, or
    ``trust_root``) when ``verify``; otherwise encryption without authentication
    (opportunistic STARTTLS, RFC 3207 §4.1 / RFC 7435)."""
    if verify:
        if trust_root is None:
            return ssl.optionsForClientTLS(host)
        return ssl.optionsForClientTLS(host, trustRoot=trust_root)
    return ssl.CertificateOptions(verify=False, raiseMinimumTo=ssl.TLSVersion.TLSv1_2)
