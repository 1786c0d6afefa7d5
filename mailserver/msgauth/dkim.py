"""DKIM (RFC 6376) verification and signing, RSA and Ed25519 (RFC 8463), with dkimpy.

Design rules:

1. DNS never blocks the reactor and never runs in the crypto thread: the key records named
   by the signatures (``s._domainkey.d``) are looked up first through the shared, cached
   :class:`mailserver.dns.Resolver`; dkimpy then gets a ``dnsfunc`` that only answers from
   those results, and the hashing and public-key work runs in the thread pool.
2. One :class:`~mailserver.msgauth.results.AuthResult` per signature (method ``dkim``), in
   header order, with ``header.d``, ``header.s``, ``header.a`` and ``header.b`` (the first 8
   characters of ``b=``, RFC 6008); ``none`` for an unsigned message. Result words
   (RFC 8601 §2.7.1): a good signature ``pass``; a signature that does not verify (bad body
   hash, bad b=, key too small) ``fail``; a malformed signature ``neutral``; no usable key
   record, ``h=`` without From or an expired ``x=`` ``permerror`` (RFC 6376 §6.1.1-6.1.2);
   a DNS failure ``temperror``.
3. Signing is relaxed/relaxed over the RFC 6376 §5.4.1 recommended fields that the message
   has, with From signed one extra time (over-signed) so that no second From can be added;
   one signature per active key of the domain (RSA first, then Ed25519).
4. At most :data:`MAX_SIGNATURES` signatures are checked per message; the rest are reported
   ``neutral``, so a message cannot make us do unbounded DNS and crypto work.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from dkim.util import InvalidTagValueList, parse_tag_value
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from mailserver.dns import DNSTemporaryError, Resolver
from mailserver.message.headers import header_length, parse_headers
from mailserver.msgauth.keys import DKIMKey, DKIMKeyError, KeyStore, check_domain
from mailserver.msgauth.results import AuthResult

__all__ = [
    "MAX_SIGNATURES",
    "QUIET_LOGGER",
    "DKIMSigner",
    "DKIMVerifier",
    "KeyRecord",
    "answering_from",
    "fetch_keys",
    "signature_fields",
]

log = Logger()

#: Signatures checked per message (RFC 6376 §6.1 lets a verifier limit its work).
MAX_SIGNATURES = 8
#: RSA keys shorter than this never verify (RFC 8301 §3.2).
MIN_RSA_BITS = 1024


@dataclass(frozen=True)
class KeyRecord:
    """A looked-up key record: the TXT text, or None when absent, or a temporary error."""

    text: str | None
    temporary: str = ""


def key_name(domain: bytes | str, selector: bytes | str) -> str:
    """``selector._domainkey.domain`` (RFC 6376 §3.6.2.1), lowercased, without the root dot."""
    if isinstance(domain, bytes):
        domain = domain.decode("ascii", "replace")
    if isinstance(selector, bytes):
        selector = selector.decode("ascii", "replace")
    return f"{selector}._domainkey.{domain}".lower().rstrip(".")


def signature_fields(message: bytes, names: tuple[str, ...]) -> list[dict[bytes, bytes] | None]:
    """The tag lists of every field called one of ``names`` in the header, in order
    (None for one that does not parse)."""
    head = message[: header_length(message)]
    wanted = {n.lower() for n in names}
    found: list[dict[bytes, bytes] | None] = []
    for name, value in parse_headers(head):
        if name.lower() not in wanted:
            continue
        try:
            found.append(parse_tag_value(value))
        except InvalidTagValueList:
            found.append(None)
    return found


_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")


def is_dns_name(name: str) -> bool:
    """Whether ``name`` can be asked for at all (RFC 1035 §2.3.4 lengths, LDH labels plus
    ``_``): a d= or s= that cannot is a permanent error, never a DNS query."""
    return len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


def fetch_keys(resolver: Resolver, names: set[str]) -> Deferred[dict[str, KeyRecord]]:
    """Look up each key record name (TXT, through the resolver's cache); a name that is not
    a DNS name has no record."""
    ordered = sorted(names)

    def one(name: str) -> Deferred[KeyRecord]:
        if not is_dns_name(name):
            return succeed(KeyRecord(None))
        d = resolver.txt(name)

        def found(records: Any) -> KeyRecord:
            if not records.exists or not records.values:
                return KeyRecord(None)
            # RFC 6376 §3.6.2.2: several records give undefined results; take the first
            # that looks like a key record, else the first.
            for value in records.values:
                if "p=" in value:
                    return KeyRecord(value)
            return KeyRecord(records.values[0])

        def failed(failure: Any) -> KeyRecord:
            failure.trap(DNSTemporaryError)
            return KeyRecord(None, temporary=str(failure.value))

        return d.addCallbacks(found, failed)

    gathered = gatherResults([one(name) for name in ordered], consumeErrors=True)
    return gathered.addCallback(lambda records: dict(zip(ordered, records)))


def answering_from(keys: Mapping[str, KeyRecord]) -> Any:
    """A dkimpy ``dnsfunc`` answering only from ``keys`` (already looked up)."""

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        record = keys.get(name.decode("ascii", "replace").lower().rstrip("."))
        if record is None or record.text is None:
            return None
        return record.text.encode("utf-8")

    return lookup


def _text(value: bytes | None) -> str:
    return (value or b"").decode("ascii", "replace")


def _properties(sig: Mapping[bytes, bytes]) -> tuple[tuple[str, str], ...]:
    b = re.sub(rb"\s+", b"", sig.get(b"b", b""))
    props = [
        ("header.d", _text(sig.get(b"d")).lower()),
        ("header.s", _text(sig.get(b"s"))),
        ("header.a", _text(sig.get(b"a"))),
        ("header.b", _text(b[:8])),
    ]
    return tuple((k, v) for k, v in props if v)


class DKIMVerifier:
    """Checks every DKIM-Signature of a message (RFC 6376 §6)."""

    def __init__(
        self, resolver: Resolver, reactor: Any, *, threadpool: Any = None
    ) -> None:
        self.resolver = resolver
        self.reactor = reactor
        self.threadpool = threadpool

    def verify(self, message: bytes) -> Deferred[list[AuthResult]]:
        """One AuthResult per signature (``[none]`` when unsigned); never fails."""
        sigs = signature_fields(message, ("DKIM-Signature",))
        if not sigs:
            return succeed([AuthResult("dkim", "none")])
        names = {
            key_name(sig[b"d"], sig[b"s"])
            for sig in sigs[:MAX_SIGNATURES]
            if sig is not None and b"d" in sig and b"s" in sig
        }
        fetching = fetch_keys(self.resolver, names)
        pool = self.threadpool or self.reactor.getThreadPool()
        fetching.addCallback(
            lambda keys: deferToThreadPool(
                self.reactor, pool, verify_blocking, message, keys, len(sigs)
            )
        )
        return fetching.addErrback(self._unexpected)

    def _unexpected(self, failure: Any) -> list[AuthResult]:
        """A bug, not the message: logged, and reported as temperror so mail still flows."""
        log.failure("DKIM verification failed unexpectedly", failure)
        return [AuthResult("dkim", "temperror", reason="internal error")]


def verify_blocking(
    message: bytes, keys: Mapping[str, KeyRecord], count: int
) -> list[AuthResult]:
    """Blocking: check ``count`` signatures with the looked-up ``keys``."""
    try:
        verifier = dkim.DKIM(message, minkey=MIN_RSA_BITS, logger=QUIET_LOGGER)
    except dkim.DKIMException as error:
        return [AuthResult("dkim", "neutral", reason=f"unparsable message: {error}")] * count
    results = []
    for index in range(count):
        if index >= MAX_SIGNATURES:
            results.append(AuthResult("dkim", "neutral", reason="too many signatures"))
            continue
        results.append(_verify_one(verifier, index, keys))
    return results


def _verify_one(verifier: Any, index: int, keys: Mapping[str, KeyRecord]) -> AuthResult:
    try:
        prep = verifier.verify_headerprep(index)
    except dkim.DKIMException as error:
        sig = getattr(verifier, "signature_fields", None) or {}
        if "x= value is past" in str(error):
            # RFC 6376 §6.1.1: an expired signature MAY be ignored with PERMFAIL.
            return AuthResult("dkim", "permerror", _properties(sig), "signature expired")
        return AuthResult("dkim", "neutral", _properties(sig), f"bad signature: {error}")
    if not prep:
        return AuthResult("dkim", "neutral", reason="signature field not found")
    sig, include, sig_headers = prep
    props = _properties(sig)
    if b"from" not in include:
        # RFC 6376 §6.1.1: h= without From is a PERMFAIL.
        return AuthResult("dkim", "permerror", props, "From not signed")
    record = keys.get(key_name(sig[b"d"], sig[b"s"]))
    if record is None or record.temporary:
        why = record.temporary if record else "key not looked up"
        return AuthResult("dkim", "temperror", props, f"key lookup: {why}")
    if record.text is None:
        return AuthResult("dkim", "permerror", props, "no key record")  # §6.1.2
    try:
        evaluated = dkim.evaluate_pk(key_name(sig[b"d"], sig[b"s"]), record.text)
    except dkim.DKIMException as error:
        return AuthResult("dkim", "permerror", props, f"bad key record: {error}")
    ktag = evaluated[2]
    if ktag is None or (ktag == b"rsa") != sig[b"a"].startswith(b"rsa-"):
        return AuthResult("dkim", "permerror", props, "key type does not match a=")
    # What dkimpy's verify_sig does after its own key look-up, with the key parsed above.
    verifier.pk, verifier.keysize, verifier.ktag, verifier.seqtlsrpt = evaluated
    try:
        good = verifier.verify_sig_process(
            sig, include, sig_headers[index], answering_from(keys)
        )
    except dkim.KeyFormatError as error:
        return AuthResult("dkim", "fail", props, str(error))
    except dkim.DKIMException as error:
        return AuthResult("dkim", "fail", props, str(error).split(" (")[0])
    if good:
        return AuthResult("dkim", "pass", props)
    return AuthResult("dkim", "fail", props, "signature did not verify")


class _Quiet:
    """dkimpy logs verification failures as errors; we report them in the results."""

    def debug(self, *args: Any, **kwargs: Any) -> None:
        pass

    info = warning = error = debug


QUIET_LOGGER = _Quiet()


@dataclass(frozen=True)
class _Prepared:
    """An active key ready to sign: dkimpy's form of the private key, and for RSA the key
    loaded by OpenSSL (loading checks the key: ~0.1 s, so it is done once)."""

    key: DKIMKey
    private: bytes
    rsa: _OpenSSLKey | None


class DKIMSigner:
    """Signs mail of domains that have active keys in a :class:`KeyStore`.

    The prepared keys of a domain are kept until its key directory changes (a keygen, rotate
    or remove renames or unlinks a file there, which changes the directory's mtime), so a
    rotation takes effect with the next message and no restart.
    """

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys
        self._prepared: dict[str, tuple[int, list[_Prepared]]] = {}

    def sign(self, message: bytes, domain: str) -> bytes:
        """Blocking: the DKIM-Signature field(s) to prepend to ``message`` (CRLF line ends),
        empty when ``domain`` has no active key."""
        return b"".join(
            sign_with(p.key, message, p.rsa, p.private) for p in self.prepared(domain)
        )

    def prepared(self, domain: str) -> list[_Prepared]:
        """The active keys of ``domain``, prepared (cached by directory mtime)."""
        try:
            domain = check_domain(domain)
            stamp = os.stat(os.path.join(self.keys.root, domain)).st_mtime_ns
        except (DKIMKeyError, OSError):  # not a domain name, or no keys at all
            return []
        cached = self._prepared.get(domain)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        ready = [
            _Prepared(
                key,
                key.private_for_dkimpy(),
                _OpenSSLKey(key.pem) if key.algorithm == "rsa" else None,
            )
            for key in self.keys.active(domain)
        ]
        if len(self._prepared) >= 1024:
            self._prepared.clear()
        self._prepared[domain] = (stamp, ready)
        return ready


class _Signature:
    def __init__(self, signature: bytes) -> None:
        self.signature = signature


class _OpenSSLKey:
    """An RSA private key with the one method dkimpy calls on an Ed25519 key:
    ``sign(digest).signature``, here RSASSA-PKCS1-v1_5 over the SHA-256 digest by OpenSSL."""

    def __init__(self, pem: bytes) -> None:
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        self.key = key

    def sign(self, digest: bytes) -> _Signature:
        algorithm = utils.Prehashed(hashes.SHA256())
        return _Signature(self.key.sign(digest, padding.PKCS1v15(), algorithm))


class _DKIM(dkim.DKIM):  # type: ignore[misc]
    """dkimpy canonicalises and hashes; OpenSSL makes the RSA signature.

    dkimpy's own RSA is pure Python: about 14 ms per 2048-bit signature holding the GIL (so
    the reactor stalls too); OpenSSL takes well under a millisecond and releases the GIL.
    dkimpy's Ed25519 branch hands the digest to ``pk.sign``, so an RSA signature goes down
    that branch with :class:`_OpenSSLKey` (the a= tag and the hash are already fixed then).
    """

    rsa_key: _OpenSSLKey | None = None

    def gen_header(self, fields: Any, include_headers: Any, canon_policy: Any,
                   header_name: bytes, pk: Any, standardize: bool = False) -> bytes:
        if self.rsa_key is None or self.signature_algorithm != b"rsa-sha256":
            return super().gen_header(  # type: ignore[no-any-return]
                fields, include_headers, canon_policy, header_name, pk, standardize
            )
        self.signature_algorithm = b"ed25519-sha256"
        try:
            return super().gen_header(  # type: ignore[no-any-return]
                fields, include_headers, canon_policy, header_name, self.rsa_key, standardize
            )
        finally:
            self.signature_algorithm = b"rsa-sha256"


def sign_with(
    key: DKIMKey,
    message: bytes,
    rsa_key: _OpenSSLKey | None = None,
    private: bytes | None = None,
) -> bytes:
    """One relaxed/relaxed DKIM-Signature field made with ``key`` (``rsa_key`` and
    ``private``: the key already prepared, else it is prepared here)."""
    signer = _DKIM(message, logger=QUIET_LOGGER, linesep=b"\r\n")
    if key.algorithm == "rsa":
        signer.rsa_key = rsa_key or _OpenSSLKey(key.pem)
    signer.frozen_sign = {b"from"}  # over-sign From (RFC 6376 §8.15)
    headers = signer.default_sign_headers()
    if b"from" not in (h.lower() for h in headers):
        headers = [*headers, b"from"]  # sign the absence of From, at least
    field: bytes = signer.sign(
        key.dns_selector.encode("ascii"),
        key.domain.encode("ascii"),
        private or key.private_for_dkimpy(),
        signature_algorithm=key.signature_algorithm.encode("ascii"),
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=headers,
    )
    if not field.endswith(b"\r\n"):
        field += b"\r\n"
    return field
