"""DKIM signing keys on disk: ``<data>/dkim/<domain>/<selector>.{rsa,ed25519}.key``.

Design rules:

1. One directory per signing domain, one PEM file (PKCS#8, mode 0600) per selector and
   algorithm: RSA 2048 (RFC 8301 §3.2) and Ed25519 (RFC 8463). A key is never overwritten;
   rotation makes a new selector.
2. The selector that signs is named in ``<domain>/active`` (written atomically). ``keygen``
   activates its selector when the domain has none; ``rotate`` always activates the new one and
   keeps the old keys, whose DNS records stay published until the signed mail has been read.
3. Domain and selector names are checked before they become paths (no ``..``, no ``/``):
   selectors are RFC 6376 §3.1 sub-domains, domains LDH labels (A-labels for IDNs).
4. The public half is derived, never stored: :meth:`DKIMKey.dns_record` is the TXT record to
   publish at :attr:`DKIMKey.dns_name` (RFC 6376 §3.6.1, RFC 8463 §4.2).
5. A DNS name holds one key record (RFC 6376 §3.6.2.2), so the two keys of a selector ``S``
   publish under two names: the RSA key at ``S._domainkey``, the Ed25519 key at
   ``S-ed25519._domainkey``. Selectors ending in ``-ed25519`` are therefore not accepted.
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailserver.durable import fsync_directory, write_atomically

__all__ = [
    "ALGORITHMS",
    "DKIMKey",
    "DKIMKeyError",
    "DKIMKeyError",
    "KeyStore",
    "check_domain",
    "check_selector",
]

#: Key algorithms, in the order their signatures are added.
ALGORITHMS = ("rsa", "ed25519")
#: RSA modulus size: RFC 8301 §3.2 requires at least 1024 and recommends 2048.
RSA_BITS = 2048

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})+\Z")
_SELECTOR = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")
_ACTIVE = "active"
#: Appended to a selector for its Ed25519 key's DNS name.
ED25519_SUFFIX = "-ed25519"


class DKIMKeyError(Exception):
    """A key operation that cannot be done: bad name, key exists, no such selector."""


def check_domain(name: str) -> str:
    """``name`` lowercased as an ASCII domain (IDNs as A-labels); DKIMKeyError when not one."""
    text = name.strip().rstrip(".").lower()
    try:
        text = text.encode("idna").decode("ascii")
    except UnicodeError:
        raise DKIMKeyError(f"not a domain name: {name!r}") from None
    if not _DOMAIN.match(text):
        raise DKIMKeyError(f"not a domain name: {name!r} (e.g. example.org)")
    return text


def check_selector(name: str) -> str:
    """``name`` lowercased as an RFC 6376 §3.1 selector; DKIMKeyError when not one."""
    text = name.strip().lower()
    if not _SELECTOR.match(text) or text.endswith(ED25519_SUFFIX):
        raise DKIMKeyError(
            f"not a DKIM selector: {name!r} (letters, digits, '-', dots between; "
            f"not ending in {ED25519_SUFFIX})"
        )
    return text


@dataclass(frozen=True)
class DKIMKey:
    """One private key: its domain, selector, algorithm (``rsa``/``ed25519``) and PEM."""

    domain: str
    selector: str
    algorithm: str
    pem: bytes

    @property
    def signature_algorithm(self) -> str:
        """The ``a=`` tag value of signatures made with this key."""
        return "rsa-sha256" if self.algorithm == "rsa" else "ed25519-sha256"

    def private_for_dkimpy(self) -> bytes:
        """The private key as dkimpy takes it: PEM for RSA, the base64 seed for Ed25519."""
        if self.algorithm == "rsa":
            return self.pem
        key = serialization.load_pem_private_key(self.pem, password=None)
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return base64.b64encode(seed)

    def public_base64(self) -> str:
        """The ``p=`` value: SubjectPublicKeyInfo DER for RSA (RFC 6376 §3.6.1), the raw
        32-byte key for Ed25519 (RFC 8463 §4.2)."""
        key = serialization.load_pem_private_key(self.pem, password=None)
        public = key.public_key()
        if self.algorithm == "rsa":
            der = public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        else:
            der = public.public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        return base64.b64encode(der).decode("ascii")

    @property
    def dns_selector(self) -> str:
        """The ``s=`` of signatures made with this key (design rule 5)."""
        return self.selector + (ED25519_SUFFIX if self.algorithm == "ed25519" else "")

    @property
    def dns_name(self) -> str:
        """Where the public key is published (RFC 6376 §3.6.2.1)."""
        return f"{self.dns_selector}._domainkey.{self.domain}"

    def dns_record(self) -> str:
        """The TXT record value to publish at :attr:`dns_name`."""
        return f"v=DKIM1; k={self.algorithm}; p={self.public_base64()}"


def generate_pem(algorithm: str) -> bytes:
    """A new private key as unencrypted PKCS#8 PEM."""
    if algorithm == "rsa":
        key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = rsa.generate_private_key(
            public_exponent=65537, key_size=RSA_BITS
        )
    elif algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise DKIMKeyError(f"unknown key algorithm {algorithm!r}: rsa or ed25519")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def algorithms_for(choice: str) -> tuple[str, ...]:
    """``rsa``, ``ed25519`` or ``both`` as the algorithms to make."""
    if choice == "both":
        return ALGORITHMS
    if choice in ALGORITHMS:
        return (choice,)
    raise DKIMKeyError(f"unknown key algorithm {choice!r}: rsa, ed25519 or both")


class KeyStore:
    """The signing keys under ``root`` (normally ``<data_dir>/dkim``). Blocking file I/O:
    the server calls it from a worker thread."""

    def __init__(self, root: str) -> None:
        self.root = root

    def _dir(self, domain: str) -> str:
        return os.path.join(self.root, check_domain(domain))

    def domains(self) -> list[str]:
        """Domains with at least one key, sorted."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if _DOMAIN.match(n) and self.keys(n))

    def keys(self, domain: str) -> list[DKIMKey]:
        """Every key of ``domain``, by selector then algorithm."""
        directory = self._dir(domain)
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            parts = name.rsplit(".", 2)
            if len(parts) != 3 or parts[2] != "key" or parts[1] not in ALGORITHMS:
                continue
            selector = parts[0]
            if not _SELECTOR.match(selector):
                continue
            with open(os.path.join(directory, name), "rb") as handle:
                found.append(DKIMKey(check_domain(domain), selector, parts[1], handle.read()))
        order = {a: i for i, a in enumerate(ALGORITHMS)}
        return sorted(found, key=lambda k: (k.selector, order[k.algorithm]))

    def selectors(self, domain: str) -> list[str]:
        return sorted({key.selector for key in self.keys(domain)})

    def active_selector(self, domain: str) -> str | None:
        """The selector that signs for ``domain``, or None when it has none."""
        try:
            with open(os.path.join(self._dir(domain), _ACTIVE), encoding="ascii") as handle:
                text = handle.read().strip()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        return text if _SELECTOR.match(text) else None

    def active(self, domain: str) -> list[DKIMKey]:
        """The keys that sign mail from ``domain`` now (RSA first), empty when none."""
        try:
            selector = self.active_selector(domain)
        except DKIMKeyError:
            return []
        if selector is None:
            return []
        return [key for key in self.keys(domain) if key.selector == selector]

    def generate(
        self, domain: str, selector: str, algorithms: Iterable[str] = ALGORITHMS
    ) -> list[DKIMKey]:
        """Make new keys for ``selector``; activate it when ``domain`` has no active one.

        Refuses (DKIMKeyError) when a key of that selector exists already.
        """
        domain = check_domain(domain)
        selector = check_selector(selector)
        wanted = tuple(algorithms)
        for algorithm in wanted:
            if algorithm not in ALGORITHMS:
                raise DKIMKeyError(f"unknown key algorithm {algorithm!r}: rsa or ed25519")
        if selector in self.selectors(domain):
            raise DKIMKeyError(
                f"selector {selector} of {domain} has keys already; choose another selector "
                f"or: mailserver dkim rotate {domain}"
            )
        directory = self._dir(domain)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        made = []
        for algorithm in wanted:
            pem = generate_pem(algorithm)
            write_atomically(os.path.join(directory, f"{selector}.{algorithm}.key"), pem)
            made.append(DKIMKey(domain, selector, algorithm, pem))
        if self.active_selector(domain) is None:
            self.activate(domain, selector)
        return made

    def activate(self, domain: str, selector: str) -> None:
        """Sign ``domain``'s mail with ``selector`` from now on (it must have keys)."""
        selector = check_selector(selector)
        if selector not in self.selectors(domain):
            raise DKIMKeyError(f"no keys for selector {selector} of {check_domain(domain)}")
        write_atomically(os.path.join(self._dir(domain), _ACTIVE), f"{selector}\n".encode())

    def remove(self, domain: str, selector: str) -> list[DKIMKey]:
        """Delete the keys of an inactive ``selector`` (after rotation, once its DNS records
        are withdrawn); the active selector is refused."""
        domain = check_domain(domain)
        selector = check_selector(selector)
        if selector == self.active_selector(domain):
            raise DKIMKeyError(
                f"selector {selector} signs {domain}'s mail now; rotate to a new one first: "
                f"mailserver dkim rotate {domain}"
            )
        gone = [key for key in self.keys(domain) if key.selector == selector]
        if not gone:
            raise DKIMKeyError(f"no keys for selector {selector} of {domain}")
        directory = self._dir(domain)
        for key in gone:
            os.unlink(os.path.join(directory, f"{key.selector}.{key.algorithm}.key"))
        fsync_directory(directory)
        return gone

    def rotate(
        self,
        domain: str,
        selector: str | None = None,
        algorithms: Sequence[str] | None = None,
        now: float | None = None,
    ) -> list[DKIMKey]:
        """New keys under a new selector (default ``sYYYYMMDD``, then ``-2``, ``-3``...),
        made active; the old keys stay for their published records. ``algorithms`` default
        to those of the active selector (both when there is none)."""
        domain = check_domain(domain)
        if algorithms is None:
            current = {key.algorithm for key in self.active(domain)}
            algorithms = tuple(a for a in ALGORITHMS if a in current) or ALGORITHMS
        if selector is None:
            selector = default_selector(self.selectors(domain), now)
        made = self.generate(domain, selector, algorithms)
        self.activate(domain, made[0].selector)
        return made


def default_selector(taken: Iterable[str], now: float | None = None) -> str:
    """``s`` + the UTC date, made unique against ``taken``."""
    base = time.strftime("s%Y%m%d", time.gmtime(time.time() if now is None else now))
    used = set(taken)
    if base not in used:
        return base
    number = 2
    while f"{base}-{number}" in used:
        number += 1
    return f"{base}-{number}"
