"""MTA-STS (RFC 8461): a domain's published promise that its MX hosts speak verified TLS.

:meth:`MTASTS.policy` returns the domain's policy or None:

1. the ``_mta-sts.<domain>`` TXT record (``v=STSv1; id=...``, §3.1) says a policy exists
   and names its version;
2. a cached policy whose id still matches and whose ``max_age`` has not run out is used as
   it is; otherwise the policy is fetched from ``https://mta-sts.<domain>/.well-known/
   mta-sts.txt`` with treq (verified HTTPS, no redirects, at most 64 KiB, §3.3) and cached;
3. when the TXT record or the fetch fails, a cached policy that has not expired still
   applies (§5.1: a policy is not dropped because of a DNS or HTTPS failure).

In ``enforce`` mode the courier uses only MX hosts that match the policy (§4.1) and only
with a verified certificate for the MX host name; ``testing`` mode only logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import treq
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from mailserver.dns import DNSTemporaryError, Resolver

__all__ = ["MTASTS", "Policy", "PolicyError", "mx_matches", "parse_policy", "parse_txt"]

log = Logger(namespace="mailserver.spool.mtasts")

MAX_POLICY = 64 * 1024
MAX_AGE = 31557600  # RFC 8461 §3.2: at most one year
_ID = re.compile(r"[A-Za-z0-9]{1,32}")


class PolicyError(ValueError):
    """A TXT record or policy file that does not follow RFC 8461."""


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed policy: mode (enforce/testing/none), MX patterns, max_age, TXT id."""

    mode: str
    mx: tuple[str, ...]
    max_age: int
    id: str = ""

    def allows(self, host: str) -> bool:
        """Whether ``host`` is a permitted MX (always True unless the mode is enforce)."""
        return self.mode != "enforce" or mx_matches(host, self.mx)


def parse_txt(records: Iterable[str]) -> str | None:
    """The policy id from the ``_mta-sts`` TXT records, or None when there is no valid one
    (§3.1: exactly one record starting with ``v=STSv1``)."""
    found = [r for r in records if r.replace(" ", "").startswith("v=STSv1")]
    if len(found) != 1:
        return None
    fields = {}
    for part in found[0].split(";"):
        key, _, value = part.strip().partition("=")
        if key:
            fields[key.strip()] = value.strip()
    identifier = fields.get("id", "")
    return identifier if _ID.fullmatch(identifier) else None


def parse_policy(text: str, identifier: str = "") -> Policy:
    """Parse a policy file (§3.2); PolicyError when it is not valid."""
    fields: dict[str, list[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise PolicyError(f"line without ':': {line[:60]!r}")
        fields.setdefault(key.strip(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise PolicyError("version must be STSv1")
    mode = (fields.get("mode") or [""])[0]
    if mode not in ("enforce", "testing", "none"):
        raise PolicyError(f"unknown mode {mode!r}")
    try:
        max_age = int((fields.get("max_age") or [""])[0])
    except ValueError:
        raise PolicyError("max_age must be a number of seconds") from None
    if not 0 <= max_age <= MAX_AGE:
        raise PolicyError("max_age out of range")
    mx = tuple(pattern.lower().rstrip(".") for pattern in fields.get("mx", []))
    if mode != "none" and not mx:
        raise PolicyError("mx patterns are required unless mode is none")
    return Policy(mode, mx, max_age, identifier)


def mx_matches(host: str, patterns: Iterable[str]) -> bool:
    """§4.1: an exact name, or ``*.domain`` matching exactly one more label on the left."""
    host = host.lower().rstrip(".")
    for pattern in patterns:
        if pattern.startswith("*."):
            label, _, rest = host.partition(".")
            if label and rest == pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


class MTASTS:
    """Policy discovery with a cache on the reactor's clock. ``agent`` is a treq-compatible
    HTTP agent (tests pass one that trusts their own CA); ``url`` has ``{domain}``."""

    def __init__(
        self,
        reactor: Any,
        resolver: Resolver,
        *,
        agent: Any = None,
        url: str = "https://mta-sts.{domain}/.well-known/mta-sts.txt",
        timeout: float = 30.0,
    ) -> None:
        self.reactor = reactor
        self.resolver = resolver
        self.agent = agent
        self.url = url
        self.timeout = timeout
        self._cache: dict[str, tuple[float, Policy]] = {}

    def _cached(self, domain: str) -> Policy | None:
        entry = self._cache.get(domain)
        if entry is None:
            return None
        expires, policy = entry
        if self.reactor.seconds() >= expires:
            del self._cache[domain]
            return None
        return policy

    @inlineCallbacks
    def policy(self, domain: str) -> Any:
        """Deferred[Policy | None] for ``domain``; never fails."""
        domain = domain.lower().rstrip(".")
        cached = self._cached(domain)
        try:
            txt = yield self.resolver.txt(f"_mta-sts.{domain}")
        except DNSTemporaryError:
            return cached
        identifier = parse_txt(txt.values)
        if identifier is None:
            return cached  # §5.1: no record; a cached policy stays valid until it expires
        if cached is not None and cached.id == identifier:
            return cached
        try:
            policy = yield self._fetch(domain, identifier)
        except Exception as error:
            log.info("MTA-STS policy of {domain} not fetched: {error}", domain=domain,
                     error=error)
            return cached
        self._cache[domain] = (self.reactor.seconds() + policy.max_age, policy)
        return policy

    @inlineCallbacks
    def _fetch(self, domain: str, identifier: str) -> Any:
        kwargs: dict[str, Any] = {"allow_redirects": False, "timeout": self.timeout}
        if self.agent is not None:
            kwargs["agent"] = self.agent
        response = yield treq.get(self.url.format(domain=domain), **kwargs)
        if response.code != 200:
            raise PolicyError(f"HTTP {response.code}")
        if isinstance(response.length, int) and response.length > MAX_POLICY:
            raise PolicyError("policy larger than 64 KiB")
        content_type = response.headers.getRawHeaders(b"content-type", [b""])[0]
        if not content_type.lower().startswith(b"text/plain"):
            raise PolicyError(f"content type {content_type!r}, not text/plain")
        body = yield treq.content(response)
        if len(body) > MAX_POLICY:
            raise PolicyError("policy larger than 64 KiB")
        return parse_policy(body.decode("utf-8"), identifier)
