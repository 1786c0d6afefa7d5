"""DNS list self-tests (RFC 5782 §5): is each zone answering like a list, or answering everything?

:class:`ZoneSelfTests` is the part of :class:`mailserver.filter.dnsbl.DNSBLCheck` that asks the
test entries and keeps each zone's state; the check owns one and delegates ``start()``,
``stop()``, ``selftest()``, ``zone_status()`` and ``broken(zone)`` to it. It knows zones only
by name and gets the check's own answer matching (``listing``) and cache forgetting
(``changed``) passed in, so it never imports the check. :class:`DNSBLSelfTests` runs them as a
service.

Design rules:

1. Every zone is self-tested with RFC 5782 §5's test entries, once at ``start()`` (or lazily at
   the first connection) and then every ``interval`` seconds on the reactor's clock: an
   address zone must list 127.0.0.2 and must not list 127.0.0.1 (nor ::ffff:127.0.0.1, the
   IPv6 form), a domain zone must list ``test`` and must not list ``invalid``, whatever
   ``skip_networks`` says. A zone used both ways gets both sets of entries.
2. A zone that lists a must-not entry (with a code the zone's pattern counts) answers "listed"
   for everything (shut down and wildcarded, an expired domain, a list refusing our resolver
   with an ordinary code): it is *broken*, logged, not asked, and its listings give no points
   and no refusal until a later self-test passes. When a zone turns broken or passes again,
   the check's cached answers from that zone are forgotten (``changed``).
3. A zone missing its must-be entry is only logged (some lists leave it out) and still used.
4. A self-test that gets no answer (DNS down, ``timeout`` per look-up on the reactor's clock)
   leaves the zone's state as it was: zones are used until proven broken.
5. Verdicts wait for the first self-test while it runs (:meth:`ZoneSelfTests.first_run`), so
   the first connections never meet a broken zone's refusals.
6. ``stop()`` leaves nothing scheduled on the reactor and cancels the look-ups in flight; zone
   states stay as they were. A later connection does not restart the self-tests; ``start()``
   does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    TimeoutError,
    gatherResults,
    succeed,
)
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailserver.filter.addresses import reversed_name

__all__ = [
    "BROKEN",
    "NO_TEST_ENTRY",
    "OK",
    "UNCHECKED",
    "DNSBLSelfTests",
    "Probe",
    "ZoneSelfTests",
    "zone_probes",
]

# The check's namespace: these are the DNS lists' log lines, wherever the code lives.
log = Logger(namespace="mailserver.filter.dnsbl")

#: zone_status() values (a state may carry ": detail" after its word).
UNCHECKED = "unchecked"
OK = "ok"
BROKEN = "broken"
NO_TEST_ENTRY = "no test entry"


@dataclass(frozen=True, slots=True)
class Probe:
    """One RFC 5782 §5 test entry: the name asked under the zone, whether a conforming list
    lists it, and how the logs and zone_status() name it."""

    key: str
    listed: bool
    label: str


# RFC 5782 §5: IPv4 lists MUST list 127.0.0.2 and MUST NOT list 127.0.0.1; IPv6 lists the
# same as ::FFFF:7F00:2 / ::FFFF:7F00:1 (only the must-not one is asked: an IPv4-only list
# has neither); domain lists MUST list TEST and MUST NOT list INVALID.
ADDRESS_PROBES = (
    Probe("2.0.0.127", True, "127.0.0.2"),
    Probe("1.0.0.127", False, "127.0.0.1"),
    Probe(reversed_name(ipaddress.IPv6Address("::ffff:7f00:1")), False, "::ffff:127.0.0.1"),
)
DOMAIN_PROBES = (Probe("test", True, "test"), Probe("invalid", False, "invalid"))


def zone_probes(
    address_zones: Iterable[str], domain_zones: Iterable[str]
) -> dict[str, tuple[Probe, ...]]:
    """The test entries per zone name (rule 1): address zones (block and allow lists) get
    the address entries, domain zones the domain entries, a zone that is both gets both."""
    probes: dict[str, tuple[Probe, ...]] = {}
    for name in address_zones:
        probes.setdefault(name, ADDRESS_PROBES)
    for name in domain_zones:
        probes[name] = probes.get(name, ()) + DOMAIN_PROBES
    return probes


class ZoneSelfTests:
    """The self-tests of one check's zones, asked through ``resolver`` (a
    :class:`mailserver.dns.Resolver`) on ``reactor``'s clock.

    ``probes`` are the test entries per zone name (:func:`zone_probes`); ``listing(zone,
    name, value)`` says whether an A record ``value`` for ``name`` is a listing the check
    would count; ``changed(zone)`` is called when a zone turns broken or passes again.
    ``interval`` is the time between self-tests (None or 0: never self-test, every zone stays
    "unchecked"); ``timeout`` bounds each look-up.
    """

    def __init__(
        self,
        reactor: Any,
        resolver: Any,
        probes: dict[str, tuple[Probe, ...]],
        *,
        listing: Callable[[str, str, str], bool],
        changed: Callable[[str], None],
        timeout: float = 5.0,
        interval: float | None = 3600.0,
    ) -> None:
        self.reactor = reactor
        self.resolver = resolver
        self.timeout = timeout
        self.interval = interval if interval and interval > 0 else None
        self._probes = dict(probes)
        self._listing = listing
        self._changed = changed
        self._status = dict.fromkeys(self._probes, UNCHECKED)
        self._loop: LoopingCall | None = None
        self._stopped = False
        self._tested = False  # a self-test has finished since start()
        self._running: list[Deferred[dict[str, str]]] | None = None  # waiters of the run
        self._in_flight: set[Deferred[Any]] = set()

    def zone_status(self) -> dict[str, str]:
        """Each zone's self-test state: "unchecked", "ok", "no test entry: ... not listed"
        (used) or "broken: ... listed" (ignored)."""
        return dict(self._status)

    def broken(self, zone: str) -> bool:
        """Is ``zone``'s last self-test result "broken" (its listings ignored)?"""
        return self._status.get(zone, "").startswith(BROKEN)

    def start(self) -> Deferred[dict[str, str]]:
        """Self-test every zone now and then every ``interval`` seconds; fires with
        zone_status() when the first self-test is done (at once when there is nothing to do).
        Calling it again while running only waits for the running self-test."""
        self._stopped = False
        if self.interval is None or not self._probes:
            return succeed(self.zone_status())
        if self._loop is not None and self._loop.running:
            return self.selftest() if self._running is not None else succeed(self.zone_status())
        self._tested = False
        self._loop = LoopingCall(self.selftest)
        self._loop.clock = self.reactor
        first = self.selftest()
        self._loop.start(self.interval, now=False).addErrback(
            lambda f: log.failure("DNS list self-tests stopped", f)
        )
        return first

    def stop(self) -> None:
        """Stop the self-tests (rule 6)."""
        self._stopped = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for d in list(self._in_flight):
            d.cancel()

    def selftest(self) -> Deferred[dict[str, str]]:
        """Self-test every zone now (or wait for the self-test already running); fires with
        zone_status() and never fails."""
        waiter: Deferred[dict[str, str]] = Deferred()
        if self._running is not None:
            self._running.append(waiter)
            return waiter
        self._running = [waiter]
        runs = [Deferred.fromCoroutine(self._selftest_zone(zone, probes))
                for zone, probes in self._probes.items()]
        gatherResults(runs).addBoth(self._selftested)
        return waiter

    def autostart(self) -> None:
        """The first connection starts the self-tests when nobody called start()."""
        if self._loop is None and not self._stopped:
            self.start()

    def first_run(self) -> Deferred[dict[str, str]] | None:
        """While the first self-test since start() runs, a Deferred that fires when it is done
        (rule 5); otherwise None."""
        if not self._tested and self._running is not None:
            return self.selftest()
        return None

    def _selftested(self, result: Any) -> None:
        if isinstance(result, Failure):  # a bug: DeferredList consumes the look-ups' errors
            log.failure("DNS list self-test failed", result)
        self._tested = True
        waiters, self._running = self._running or [], None
        for waiter in waiters:
            waiter.callback(self.zone_status())

    async def _selftest_zone(self, zone: str, probes: tuple[Probe, ...]) -> None:
        asked = []
        for probe in probes:
            d: Deferred[tuple[str, ...]] = Deferred.fromCoroutine(self._probe(zone, probe))
            d.addTimeout(self.timeout, self.reactor)
            self._in_flight.add(d)
            d.addBoth(self._landed, d)
            asked.append(d)
        results = await DeferredList(asked, consumeErrors=True)
        if self._stopped:
            return
        answers = [(probe, codes) for probe, (ok, codes) in zip(probes, results) if ok]
        bad = [(p, codes) for p, codes in answers if codes and not p.listed]
        missing = [p for p, codes in answers if p.listed and not codes]
        if bad:
            probe, codes = bad[0]
            self._set_status(zone, f"{BROKEN}: {probe.label} listed", ", ".join(codes))
        elif len(answers) < len(probes):
            error = next(r for ok, r in results if not ok)
            why = (f"no answer within {self.timeout}s"
                   if error.check(TimeoutError, CancelledError) else str(error.value))
            log.warn("DNS list {zone}: self-test failed ({why}); the zone stays {status}",
                     zone=zone, why=why, status=self._status[zone])
        elif missing:
            self._set_status(zone, f"{NO_TEST_ENTRY}: {missing[0].label} not listed", "")
        else:
            self._set_status(zone, OK, "")

    def _landed(self, result: Any, d: Deferred[Any]) -> Any:
        self._in_flight.discard(d)
        return result

    async def _probe(self, zone: str, probe: Probe) -> tuple[str, ...]:
        """The codes ``zone`` lists a test entry with that the check would count."""
        name = f"{probe.key}.{zone}"
        records = await self.resolver.lookup(name, "A")
        return tuple(v for v in records.values if self._listing(zone, name, v))

    def _set_status(self, zone: str, status: str, codes: str) -> None:
        old = self._status[zone]
        self._status[zone] = status
        if old.startswith(BROKEN) != status.startswith(BROKEN):
            # Answers kept from before the change would outlive it: forget them.
            self._changed(zone)
        if status.startswith(BROKEN):
            log.warn("DNS list {zone} is broken: {status} ({codes}), which RFC 5782 §5 says "
                     "no list may list (answering everything: shut down, wildcarded, or "
                     "refusing our queries?); its listings are ignored until a self-test "
                     "passes", zone=zone, status=status, codes=codes)
        elif old.startswith(BROKEN):
            log.info("DNS list {zone} passes its self-test again ({status}); its listings "
                     "count again", zone=zone, status=status)
        elif status.startswith(NO_TEST_ENTRY) and status != old:
            log.warn("DNS list {zone}: {status} (RFC 5782 §5 test entry missing, or not a "
                     "code the zone's pattern counts); still used", zone=zone,
                     status=status)
        elif status != old:
            log.info("DNS list {zone} self-test: {status}", zone=zone, status=status)


class SelfTested(Protocol):
    """What :class:`DNSBLSelfTests` runs: a DNSBLCheck, or a ZoneSelfTests itself."""

    def start(self) -> Deferred[dict[str, str]]: ...

    def stop(self) -> None: ...


class DNSBLSelfTests(Service):
    """A service that runs a :class:`~mailserver.filter.dnsbl.DNSBLCheck`'s zone self-tests
    while it runs."""

    def __init__(self, check: SelfTested) -> None:
        self.check = check

    def startService(self) -> None:
        super().startService()
        self.check.start()

    def stopService(self) -> Any:
        self.check.stop()
        return super().stopService()
