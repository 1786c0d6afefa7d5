"""Greylisting (RFC 6647): refuse an unknown (client network, sender, recipient) for a while.

A real mail server queues a 4xx and retries; much spam software never does. The practice,
the wording and the defaults follow postgrey, with a shorter first delay so that mail
carrying one-time codes is held for about a minute, not five.

Design rules:

1. **The triplet** is the client's network (IPv4 /24, IPv6 /64: a sending farm retries from
   another address of the same network), the envelope sender (``<>`` for bounces) and the
   recipient, all lower-cased. The sender is normalised like postgrey does, so that VERP and
   BATV senders that differ per message do not make every message a new triplet: a
   ``prvs=``/``btv1=`` tag and a ``+extension`` are dropped and every run of digits
   standing alone in the local part becomes ``#``.
2. **States.** Unknown → recorded, ``450 4.2.0 Greylisted, try again in N seconds``. A
   retry before ``delay`` → the same reply with the seconds left (nothing written). A
   retry between ``delay`` and ``window`` after the first attempt → passes, and so does
   every later message of the triplet; a retry after ``window`` starts over. Every record
   is forgotten ``max_age`` after it was last seen: lazily when looked up, and for good by
   :meth:`GreylistCheck.prune`, which the service runs periodically.
3. **Exemptions.** Authenticated peers; clients in ``exempt`` networks (a parameter: tests
   greylist loopback); client networks that passed greylisting with ``auto_allow``
   different triplets (postgrey's auto-whitelist-clients); and a sender whose domain has
   passed greylisting ``known_domain_passes`` times before *and* whose SPF result for this
   client is ``pass`` (so a known domain's new server or a new recipient is not delayed,
   while a forged known sender still is). SPF is evaluated only for a known domain, with
   :class:`mailserver.msgauth.spf.SPFChecker`. Peers with a trusted verdict (allow lists)
   are skipped by the pipeline before this check runs.
4. **Time and storage.** Time is the injected ``IReactorTime`` (tests use ``task.Clock``).
   Every look-up is a few LMDB gets on the reactor (DESIGN decision 7), never a scan; every
   change goes through ``db.write`` (group commit) and the verdict waits for it. A record's
   ``last`` is refreshed at most every ``touch_interval`` seconds, so steady traffic causes
   about one write per triplet per hour, not one per message.
5. **Layout** (sub-db ``greylist``, values JSON): ``t`` + 16 bytes of SHA-256 of
   ``network NUL sender NUL recipient`` → ``{first, last, passed}`` (``passed``: the time it
   passed, 0 while waiting); ``c`` + client network → ``{passes, last}``; ``d`` + sender
   domain → ``{passes, last}``. ``passes`` counts the triplets that passed by retrying.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from mailserver.filter.addresses import client_ip, in_networks
from mailserver.filter.session import Abstaining
from mailserver.interfaces import ICheck
from mailserver.message.address import domain_to_ascii
from mailserver.types import ACCEPT, Action, Address, Envelope, Peer, Verdict

__all__ = [
    "GreylistCheck",
    "GreylistCounts",
    "GreylistSession",
    "GreylistSettings",
    "client_network",
    "sender_key",
    "settings_from",
]

log = Logger(namespace="mailserver.filter.greylist")

TABLE = b"greylist"
#: Records looked at per write transaction when pruning.
PRUNE_BATCH = 1000

# BATV (draft-levine-smtp-batv) tags: prvs=KDDDSSSSSS=user, btv1==...==user
_BATV = re.compile(r"^(?:prvs=[^=]+=|btv1==[^=]*==)", re.IGNORECASE)
_NUMBERS = re.compile(r"\b\d+\b")


@dataclass(frozen=True)
class GreylistSettings:
    """Greylisting parameters (seconds, counts, prefix lengths); see the module docstring.

    Raises ValueError naming the field when a value makes no sense.
    """

    delay: float = 60.0
    window: float = 86400.0
    max_age: float = 35 * 86400.0
    auto_allow: int = 5
    known_domain_passes: int = 1
    ipv4_prefix: int = 24
    ipv6_prefix: int = 64
    exempt: tuple[str, ...] = ()
    touch_interval: float = 3600.0
    spf_timeout: float = 10.0
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not 0 <= self.delay < self.window:
            raise ValueError("greylist delay must be at least 0 and less than the window")
        if self.window > self.max_age:
            raise ValueError("greylist window must not be longer than max_age")
        if self.auto_allow < 0 or self.known_domain_passes < 0:
            raise ValueError("greylist auto_allow and known_domain_passes must be 0 or more")
        if not 0 <= self.ipv4_prefix <= 32 or not 0 <= self.ipv6_prefix <= 128:
            raise ValueError("greylist prefixes: ipv4 0-32, ipv6 0-128")
        if self.touch_interval < 0 or self.spf_timeout <= 0:
            raise ValueError("greylist touch_interval and spf_timeout must be positive")
        networks = []
        for text in self.exempt:
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError as error:
                raise ValueError(f"greylist exempt network {text!r}: {error}") from None
        object.__setattr__(self, "networks", tuple(networks))


def settings_from(section: Any) -> GreylistSettings:
    """GreylistSettings from a config section holding ``greylist_delay``,
    ``greylist_window``, ``greylist_max_age``, ``greylist_auto_allow``,
    ``greylist_known_domain_passes``, ``greylist_ipv4_prefix``, ``greylist_ipv6_prefix``
    and ``greylist_exempt_networks`` (each optional; absent or None: the default)."""
    defaults = GreylistSettings()
    values: dict[str, Any] = {}
    for name in (
        "delay",
        "window",
        "max_age",
        "auto_allow",
        "known_domain_passes",
        "ipv4_prefix",
        "ipv6_prefix",
    ):
        value = getattr(section, f"greylist_{name}", None)
        values[name] = getattr(defaults, name) if value is None else value
    values["exempt"] = tuple(getattr(section, "greylist_exempt_networks", None) or ())
    return GreylistSettings(**values)


@dataclass(frozen=True, slots=True)
class GreylistCounts:
    """What the ``greylist`` sub-db holds (for the command line)."""

    waiting: int = 0
    passed: int = 0
    clients: int = 0
    auto_allowed: int = 0
    domains: int = 0
    known_domains: int = 0
    expired: int = 0


def client_network(address: str, settings: GreylistSettings) -> str:
    """The client's network as text (``192.0.2.0/24``); the address as given when it is not
    an IP address (e.g. a unix socket peer)."""
    ip = client_ip(address)
    if ip is None:
        return address.strip().lower()
    prefix = settings.ipv4_prefix if ip.version == 4 else settings.ipv6_prefix
    return str(ipaddress.ip_network((ip, prefix), strict=False))


def _domain(address: Address | None) -> str:
    if address is None:
        return ""
    try:
        return domain_to_ascii(address.domain).lower()
    except ValueError:
        return address.domain.lower()


def sender_key(sender: Address | None) -> str:
    """The triplet's sender: ``<>`` for the null sender, otherwise the address lower-cased
    with BATV tags, ``+extension`` and stand-alone numbers normalised (postgrey's rules)."""
    if sender is None:
        return "<>"
    local = _BATV.sub("", sender.local.lower())
    local = local.partition("+")[0] or local
    local = _NUMBERS.sub("#", local)
    return f"{local}@{_domain(sender)}"


def _triplet_key(network: str, sender: str, recipient: str) -> bytes:
    digest = hashlib.sha256(f"{network}\0{sender}\0{recipient}".encode("utf-8", "replace"))
    return b"t" + digest.digest()[:16]


def _counter_key(prefix: bytes, name: str) -> bytes:
    return prefix + name.encode("utf-8", "replace")


def _fresh(record: dict[str, Any] | None, now: float, max_age: float) -> bool:
    return record is not None and now - float(record.get("last", 0)) <= max_age


@implementer(ICheck)
class GreylistCheck:
    """Greylisting over ``db`` (a :class:`mailserver.db.Database`), timed by ``clock`` (an
    IReactorTime). ``spf`` is an SPFChecker (``check(ip, sender, helo) -> Deferred[
    AuthResult]``) for the known-good-sender exemption; None turns that exemption off."""

    name = "greylist"
    honours_allow_list = True

    def __init__(
        self,
        db: Any,
        clock: Any,
        settings: GreylistSettings | None = None,
        spf: Any = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings or GreylistSettings()
        self.spf = spf

    def session(self, peer: Peer) -> GreylistSession:
        return GreylistSession(self, peer)

    # maintenance

    def prune(self) -> Deferred[int]:
        """Delete every record not seen for ``max_age`` and every waiting triplet whose retry
        window has closed, ``PRUNE_BATCH`` records per write; fires with the number deleted."""
        return Deferred.fromCoroutine(self._prune())

    async def _prune(self) -> int:
        now = self.clock.seconds()
        start: bytes | None = b""
        removed = 0
        while start is not None:
            done, start = await self.db.write(self._prune_batch(start, now))
            removed += done
        return removed

    def _prune_batch(self, start: bytes, now: float) -> Any:
        settings = self.settings

        def write(txn: Any) -> tuple[int, bytes | None]:
            doomed = []
            after = None
            for seen, (key, value) in enumerate(txn.range(TABLE, start, None)):
                if seen == PRUNE_BATCH:
                    after = key
                    break
                record = _load(value)
                if not _valid(record) or _expired(key, record, now, settings):
                    doomed.append(key)
            for key in doomed:
                txn.delete(TABLE, key)
            return len(doomed), after

        return write

    def counts(self) -> GreylistCounts:
        """Count the records (a scan: for the command line, not for mail)."""
        now = self.clock.seconds()
        settings = self.settings
        tally = dict.fromkeys(GreylistCounts.__slots__, 0)
        with self.db.read() as txn:
            for key, value in txn.prefix(TABLE, b""):
                record = _load(value)
                if not _valid(record) or _expired(key, record, now, settings):
                    tally["expired"] += 1
                elif key[:1] == b"t":
                    tally["passed" if record.get("passed") else "waiting"] += 1
                elif key[:1] == b"c":
                    tally["clients"] += 1
                    passes = int(record.get("passes", 0))
                    tally["auto_allowed"] += bool(settings.auto_allow) and (
                        passes >= settings.auto_allow
                    )
                elif key[:1] == b"d":
                    tally["domains"] += 1
                    passes = int(record.get("passes", 0))
                    tally["known_domains"] += bool(settings.known_domain_passes) and (
                        passes >= settings.known_domain_passes
                    )
        return GreylistCounts(**tally)


def _load(value: bytes) -> dict[str, Any]:
    try:
        record = json.loads(value)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _get(txn: Any, key: bytes) -> dict[str, Any] | None:
    """The record at ``key``: None when absent, or not a record (never an exception)."""
    raw = txn.get(TABLE, key)
    if raw is None:
        return None
    record = _load(raw)
    return record if _valid(record) else None


def _valid(record: dict[str, Any]) -> bool:
    try:
        float(record.get("first", 0)), float(record.get("last", 0))
        int(record.get("passes", 0)), float(record.get("passed", 0) or 0)
    except (TypeError, ValueError):
        return False
    return True


def _expired(key: bytes, record: dict[str, Any], now: float, settings: GreylistSettings) -> bool:
    """Whether the record is past its age (or window, while waiting); a damaged one is."""
    try:
        if now - float(record.get("last", 0)) > settings.max_age:
            return True
        waiting = key[:1] == b"t" and not record.get("passed")
        return waiting and now - float(record.get("first", 0)) > settings.window
    except (TypeError, ValueError):
        return True


class GreylistSession(Abstaining):
    """One connection; its client network, and SPF results per sender, are worked out once."""

    def __init__(self, check: GreylistCheck, peer: Peer) -> None:
        self.check = check
        self.peer = peer
        settings = check.settings
        self.network = client_network(peer.address, settings)
        self.exempt = peer.authenticated_as is not None or _in(peer.address, settings.networks)
        self._spf: dict[str, bool] = {}

    def recipient(self, envelope: Envelope, address: Address) -> Verdict | Deferred[Verdict]:
        if self.exempt or envelope.authenticated_as:
            return ACCEPT
        check, settings = self.check, self.check.settings
        now = check.clock.seconds()
        sender = sender_key(envelope.sender)
        recipient = f"{address.local}@{_domain(address)}".lower()
        domain = _domain(envelope.sender)
        key = _triplet_key(self.network, sender, recipient)
        client_key = _counter_key(b"c", self.network)
        domain_key = _counter_key(b"d", domain) if domain else None
        with check.db.read() as txn:
            record = _get(txn, key)
            client = _get(txn, client_key)
            known = _get(txn, domain_key) if domain_key else None
        triplet = f"{self.network} {sender} -> {recipient}"

        if (
            settings.auto_allow
            and _fresh(client, now, settings.max_age)
            and int(client.get("passes", 0)) >= settings.auto_allow
        ):
            verdict = self._accept("GREYLIST_AUTO_ALLOWED", f"client {self.network} auto-allowed")
            return self._touch(client_key, client, now, verdict)
        if record is not None and _expired(key, record, now, settings):
            record = None
        if record is not None and record.get("passed"):
            return self._touch(key, record, now, self._accept("", f"{triplet} passed before"))
        if record is not None and now - float(record.get("first", now)) >= settings.delay:
            waited = now - float(record.get("first", now))
            verdict = self._accept("GREYLIST_PASSED", f"{triplet} retried after {waited:.0f} s")
            return self._write(self._pass_write(key, client_key, domain_key, now), verdict)
        if (
            check.spf is not None
            and settings.known_domain_passes
            and _fresh(known, now, settings.max_age)
            and int(known.get("passes", 0)) >= settings.known_domain_passes
        ):
            return Deferred.fromCoroutine(self._known(envelope, key, record, now, triplet))
        return self._greylist(key, record, now, triplet)

    # outcomes

    def _accept(self, rule: str, reason: str) -> Verdict:
        return Verdict(Action.ACCEPT, check=GreylistCheck.name, rule=rule, reason=reason)

    def _greylist(
        self, key: bytes, record: dict[str, Any] | None, now: float, triplet: str
    ) -> Verdict | Deferred[Verdict]:
        delay = self.check.settings.delay
        if record is None:
            verdict = _tempfail(delay, f"{triplet} is new")
            return self._write(_new_write(key, now, self.check.settings), verdict)
        left = float(record.get("first", now)) + delay - now
        return _tempfail(left, f"{triplet} retried too early")

    async def _known(
        self, envelope: Envelope, key: bytes, record: dict[str, Any] | None, now: float,
        triplet: str,
    ) -> Verdict:
        """The sender's domain passed greylisting before: SPF pass exempts the triplet."""
        sender = str(envelope.sender)
        passed = self._spf.get(sender)
        if passed is None:
            passed = await self._spf_pass(envelope)
            self._spf[sender] = passed
        if not passed:
            return await _maybe(self._greylist(key, record, now, triplet))
        verdict = self._accept("GREYLIST_SPF_KNOWN", f"{triplet}: known sender domain, SPF pass")
        return await self._write(_passed_write(key, now), verdict)

    async def _spf_pass(self, envelope: Envelope) -> bool:
        check = self.check
        helo = envelope.helo or self.peer.helo
        d = check.spf.check(self.peer.address, str(envelope.sender), helo)
        d.addTimeout(check.settings.spf_timeout, check.clock)
        try:
            result = await d
        except Exception as error:  # a DNS failure or the timeout: just greylist
            log.info("greylist SPF check failed: {error}", error=error)
            return False
        return getattr(result, "result", "") == "pass"

    def _touch(
        self, key: bytes, record: dict[str, Any], now: float, verdict: Verdict
    ) -> Verdict | Deferred[Verdict]:
        if now - float(record.get("last", 0)) < self.check.settings.touch_interval:
            return verdict

        def write(txn: Any) -> None:
            current = _get(txn, key)
            if current is not None:
                current["last"] = max(float(current.get("last", 0)), now)
                txn.put_json(TABLE, key, current)

        return self._write(write, verdict)

    def _write(self, function: Any, verdict: Verdict) -> Deferred[Verdict]:
        d: Deferred[Any] = self.check.db.write(function)
        return d.addCallback(lambda _: verdict)

    def _pass_write(
        self, key: bytes, client_key: bytes, domain_key: bytes | None, now: float
    ) -> Any:
        max_age = self.check.settings.max_age

        def write(txn: Any) -> None:
            current = _get(txn, key) or {"first": now}
            if current.get("passed"):
                return  # another session passed it meanwhile: counted once
            first = current.get("first", now)
            txn.put_json(TABLE, key, {"first": first, "last": now, "passed": now})
            for counter in (client_key, domain_key):
                if counter is None:
                    continue
                old = _get(txn, counter)
                passes = int(old.get("passes", 0)) if _fresh(old, now, max_age) else 0
                txn.put_json(TABLE, counter, {"passes": passes + 1, "last": now})

        return write


def _new_write(key: bytes, now: float, settings: GreylistSettings) -> Any:
    def write(txn: Any) -> None:
        current = _get(txn, key)
        if current is not None and not _expired(key, current, now, settings):
            return  # another session recorded it first: keep the earlier attempt
        txn.put_json(TABLE, key, {"first": now, "last": now, "passed": 0})

    return write


def _passed_write(key: bytes, now: float) -> Any:
    """Record a triplet exempted by SPF as passed (no counter: it did not retry)."""

    def write(txn: Any) -> None:
        current = _get(txn, key) or {}
        first = float(current.get("first", now))
        txn.put_json(TABLE, key, {"first": first, "last": now, "passed": now})

    return write


def _tempfail(seconds: float, reason: str) -> Verdict:
    wait = max(1, math.ceil(seconds))
    return Verdict(
        Action.TEMPFAIL,
        check=GreylistCheck.name,
        rule="GREYLIST",
        reason=reason,
        code=450,
        enhanced="4.2.0",
        text=f"Greylisted, try again in {wait} seconds",
    )


async def _maybe(result: Verdict | Deferred[Verdict]) -> Verdict:
    return await result if isinstance(result, Deferred) else result


def _in(address: str, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    ip = client_ip(address)
    return ip is not None and in_networks(ip, networks)

