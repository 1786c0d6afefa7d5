"""ARC (RFC 8617) chain validation with dkimpy: one ``arc`` result for a forwarded message.

Design rules:

1. As for DKIM (see :mod:`mailserver.msgauth.dkim`), the key records named by every
   ARC-Seal and ARC-Message-Signature are looked up first through the shared, cached
   resolver, and dkimpy validates in the thread pool with a ``dnsfunc`` that only answers
   from those results.
2. Result words (RFC 8617 §4.4, RFC 8601): no ARC header fields ``none``; a valid chain
   ``pass``; anything else ``fail`` (a broken seal, a newest ARC-Message-Signature that does
   not verify, a chain some hop already marked ``cv=fail``, an incomplete or duplicated set,
   more than :data:`MAX_INSTANCES` sets, §4.2.1; or, to bound the DNS work, keys of more
   than :data:`MAX_KEYS` distinct selectors). A key look-up that failed is a failure too:
   RFC 8617 §5.2.1 makes every ARC failure permanent, DNS failures included (unlike DKIM).
3. The result carries ``header.oldest-pass`` (RFC 8617 §10.1.1) when the chain passes: the
   lowest instance whose ARC-Message-Signature still verifies (0 when the first does,
   meaning the message is unchanged since it entered the chain), and the newest sealer's
   ``header.d`` and ``header.s`` so that a DMARC override can name who vouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dkim
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from mailserver.dns import Resolver
from mailserver.msgauth.dkim import (
    QUIET_LOGGER,
    KeyRecord,
    answering_from,
    fetch_keys,
    key_name,
    signature_fields,
)
from mailserver.msgauth.results import AuthResult

__all__ = ["MAX_INSTANCES", "MAX_KEYS", "ARCVerifier", "validate_blocking"]

log = Logger()

#: RFC 8617 §4.2.1: no more than 50 ARC sets.
MAX_INSTANCES = 50
#: Distinct seal and message-signature keys looked up per message: a bound on the DNS work a
#: message can cause (real chains have a handful of hops); more fail the chain.
MAX_KEYS = 16
_ARC_FIELDS = ("ARC-Seal", "ARC-Message-Signature")


class ARCVerifier:
    """Validates the ARC chain of a message (RFC 8617 §5.2)."""

    def __init__(self, resolver: Resolver, reactor: Any, *, threadpool: Any = None) -> None:
        self.resolver = resolver
        self.reactor = reactor
        self.threadpool = threadpool

    def verify(self, message: bytes) -> Deferred[AuthResult]:
        """The ``arc`` AuthResult of ``message``; never fails."""
        sets = signature_fields(message, _ARC_FIELDS + ("ARC-Authentication-Results",))
        if not sets:
            return succeed(AuthResult("arc", "none"))
        sigs = signature_fields(message, _ARC_FIELDS)
        if len(sigs) > 2 * MAX_INSTANCES:
            return succeed(AuthResult("arc", "fail", reason="more than 50 ARC sets"))
        names = {
            key_name(sig[b"d"], sig[b"s"])
            for sig in sigs
            if sig is not None and b"d" in sig and b"s" in sig
        }
        if len(names) > MAX_KEYS:
            return succeed(AuthResult("arc", "fail", reason=f"more than {MAX_KEYS} ARC keys"))
        fetching = fetch_keys(self.resolver, names)
        pool = self.threadpool or self.reactor.getThreadPool()
        fetching.addCallback(
            lambda keys: deferToThreadPool(self.reactor, pool, validate_blocking, message, keys)
        )
        return fetching.addErrback(self._unexpected)

    def _unexpected(self, failure: Any) -> AuthResult:
        """A bug, not the message: logged, and reported as temperror so mail still flows."""
        log.failure("ARC validation failed unexpectedly", failure)
        return AuthResult("arc", "temperror", reason="internal error")


def validate_blocking(message: bytes, keys: Mapping[str, KeyRecord]) -> AuthResult:
    """Blocking: validate the chain of ``message`` with the looked-up ``keys``."""
    try:
        arc = dkim.ARC(message, logger=QUIET_LOGGER)
        count, _ = arc.sorted_arc_headers()
        if count > MAX_INSTANCES:
            return AuthResult("arc", "fail", reason="more than 50 ARC sets")
        cv, instances, comment = arc.verify(dnsfunc=answering_from(keys))
    except (dkim.DKIMException, IndexError, KeyError, ValueError) as error:
        return AuthResult("arc", "fail", reason=f"invalid ARC set: {error}")
    if cv == dkim.CV_None:
        return AuthResult("arc", "none")
    if cv == dkim.CV_Pass:
        return AuthResult("arc", "pass", _pass_properties(instances))
    if any(record.temporary for record in keys.values()):
        # RFC 8617 §5.2.1: all failures are permanent, DNS failures included.
        return AuthResult("arc", "fail", reason=f"key look-up failed: {comment}")
    return AuthResult("arc", "fail", reason=str(comment))


def _pass_properties(instances: list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    newest = instances[0]
    return (
        ("header.oldest-pass", str(_oldest_pass(instances))),
        ("header.d", newest["as-domain"].decode("ascii", "replace").lower()),
        ("header.s", newest["as-selector"].decode("ascii", "replace")),
    )


def _oldest_pass(instances: list[dict[str, Any]]) -> int:
    """RFC 8617 §5.2 step 6: the oldest instance whose AMS still verifies; 0 if the first does."""
    oldest = instances[0]["instance"]
    for result in instances[1:]:
        if not result.get("ams-valid"):
            break
        oldest = result["instance"]
    return 0 if oldest == 1 else oldest
