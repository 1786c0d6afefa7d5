"""Wiring of the filter pipeline for the server (part of ``service.py``'s wiring, kept apart
so that each stays readable): which checks run on port 25 and on submission, in what order,
and the services they need (a DNS thread pool of their own, the greylist's pruning).

Order on port 25, cheapest and most decisive first: lists (allow/block), rate limits, DNS
lists, reverse DNS and HELO signals, greylisting, the virus scan, the spam classifiers.
Submission (authenticated users) gets per-user rate limits and the virus scan only.

The DNS-based checks use their own resolver on their own small thread pool: a block list
that stops answering then ties up only those threads, never the pool that the store,
bcrypt and the spool share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from mailserver.config import Config, FilterConfig
from mailserver.db import Database
from mailserver.dns import Resolver
from mailserver.filter.clamd import VirusCheck
from mailserver.filter.classifications import ClassificationLog
from mailserver.filter.dnsbl import DNSBLCheck, DNSBLSelfTests, parse_zone
from mailserver.filter.feedback import VerdictFeedback
from mailserver.filter.greylist import GreylistCheck, settings_from
from mailserver.filter.lists import ListCheck, ListStore
from mailserver.filter.outcome import FilterPolicy
from mailserver.filter.pipeline import FilteringTarget
from mailserver.filter.ratelimit import Limit, RateLimitCheck
from mailserver.filter.signals import HeloCheck, ReverseDNSCheck
from mailserver.filter.spam.check import SpamCheck
from mailserver.filter.spam.model import ModelStore
from mailserver.filter.spam.training import OnlineTrainer
from mailserver.interfaces import IAccount, ICheck, IDeliveryTarget, IUserDirectory
from mailserver.msgauth.spf import SPFChecker

__all__ = ["Filters"]

log = Logger(namespace="mailserver.filter")

#: Threads for the filter's DNS look-ups (DNSBL, reverse DNS, HELO, greylist SPF).
DNS_THREADS = 8


class Filters(MultiService):
    """The checks built from ``[filter]``; ``inbound(target)`` and ``submission(target)``
    wrap a delivery target in a pipeline. A service: start it with the server."""

    def __init__(
        self,
        config: Config,
        db: Database,
        directory: IUserDirectory,
        account: Callable[[str], IAccount],
        reactor: Any,
    ) -> None:
        super().__init__()
        section = config.filter
        self.section = section
        self.reactor = reactor
        self.policy = FilterPolicy(
            quarantine_score=section.quarantine_score,
            reject_score=section.reject_score,
            timeout=section.timeout,
            add_headers=section.add_headers,
        )
        self.classifications = ClassificationLog(db, reactor)
        self.models = ModelStore(db)
        self._pool = ThreadPool(minthreads=0, maxthreads=DNS_THREADS, name="filter-dns")
        _PoolService(self._pool).setServiceParent(self)
        resolver = Resolver(
            reactor,
            config.delivery.nameservers,
            timeout=section.dnsbl_timeout,
            threadpool=self._pool,
        )
        hostname = config.server.hostname
        self.inbound_checks = _inbound_checks(config, db, directory, resolver, reactor, self)
        self.submission_checks = _submission_checks(section, reactor)
        self.trainer = OnlineTrainer(
            reactor,
            self.models,
            account,
            learn_global=section.learn_global,
            record=self.classifications.record,
        )
        log.info(
            "filter on {host}: port 25 checks {inbound}; submission checks {submission}",
            host=hostname,
            inbound=", ".join(c.name for c in self.inbound_checks) or "none",
            submission=", ".join(c.name for c in self.submission_checks) or "none",
        )

    def inbound(self, target: IDeliveryTarget) -> FilteringTarget:
        """The port-25 pipeline in front of ``target`` (an MX avatar)."""
        return FilteringTarget(
            target, self.inbound_checks, self.reactor, self.policy,
            record=self.classifications.record,
        )

    def submission(self, target: IDeliveryTarget) -> IDeliveryTarget:
        """Submission's pipeline in front of a user's target (itself when no check runs)."""
        if not self.submission_checks:
            return target
        # Outgoing mail carries no spam status of ours (nothing was scored for spam).
        policy = replace(self.policy, add_headers=False)
        return FilteringTarget(target, self.submission_checks, self.reactor, policy)

    def feedback(self) -> VerdictFeedback:
        """The IMAP Junk hook: records the user's verdict and trains their model."""
        return VerdictFeedback(on_judged=self.trainer if self.section.spam else None)


def _inbound_checks(
    config: Config,
    db: Database,
    directory: IUserDirectory,
    resolver: Resolver,
    reactor: Any,
    service: MultiService,
) -> list[ICheck]:
    section = config.filter
    hostname = config.server.hostname
    checks: list[ICheck] = []
    if section.lists:
        checks.append(ListCheck(ListStore(db, reactor)))
    rates = RateLimitCheck(
        reactor,
        connections=_limit(section.rate_connections, section.rate_window),
        messages=_limit(section.rate_messages, section.rate_window),
        recipients=_limit(section.rate_recipients, section.rate_window),
        exempt_networks=section.rate_exempt_networks,
    )
    checks.append(rates)
    zones = [parse_zone(z) for z in section.dnsbl_zones]
    allow = [parse_zone(z, default_score=-1.0) for z in section.dnswl_zones]
    domains = [parse_zone(z) for z in section.rhsbl_zones]
    if zones or allow or domains:
        dnsbl = DNSBLCheck(
            reactor, resolver, zones, allow_zones=allow, domain_zones=domains,
            timeout=section.dnsbl_timeout, selftest_interval=section.dnsbl_selftest_interval,
        )
        checks.append(dnsbl)
        DNSBLSelfTests(dnsbl).setServiceParent(service)
    if section.signals:
        checks.append(ReverseDNSCheck(reactor, resolver, timeout=section.dnsbl_timeout))
        checks.append(
            HeloCheck(
                reactor, resolver, own_names=(hostname,), is_local_domain=directory.has_domain,
                timeout=section.dnsbl_timeout,
            )
        )
    if section.greylist:
        spf = SPFChecker(resolver, receiver=hostname, clock=reactor)
        greylist = GreylistCheck(db, reactor, settings_from(section), spf=spf)
        checks.append(greylist)
        _Pruning(greylist, section.greylist_prune_interval, reactor).setServiceParent(service)
    checks.extend(_virus(section, reactor))
    if section.spam:
        checks.append(
            SpamCheck(
                reactor,
                ModelStore(db),
                quarantine_score=section.quarantine_score,
                max_points=section.spam_points,
                resolve=directory.resolve,
            )
        )
    return checks


def _submission_checks(section: FilterConfig, reactor: Any) -> list[ICheck]:
    checks: list[ICheck] = []
    if section.rate_user_messages or section.rate_user_recipients:
        users = RateLimitCheck(
            reactor,
            user_messages=_limit(section.rate_user_messages, section.rate_user_window),
            user_recipients=_limit(section.rate_user_recipients, section.rate_user_window),
            exempt_networks=(),
        )
        checks.append(users)
    checks.extend(_virus(section, reactor))
    return checks


def _virus(section: FilterConfig, reactor: Any) -> list[ICheck]:
    if not section.clamd:
        return []
    return [
        VirusCheck(
            reactor,
            section.clamd,
            timeout=section.clamd_timeout,
            fail=section.virus_fail,
            max_size=section.virus_max_size,
        )
    ]


def _limit(count: int, window: float) -> Limit | None:
    return Limit(count, window) if count else None


class _PoolService(Service):
    """Starts and stops a thread pool with the server."""

    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()


class _Pruning(Service):
    """Deletes expired greylist records every ``interval`` seconds."""

    def __init__(self, greylist: GreylistCheck, interval: float, reactor: Any) -> None:
        self.greylist = greylist
        self.interval = interval
        self.loop = LoopingCall(self._prune)
        self.loop.clock = reactor

    def _prune(self) -> Any:
        d = self.greylist.prune()
        d.addCallback(lambda n: n and log.info("greylist: {n} expired record(s) pruned", n=n))
        d.addErrback(lambda f: log.failure("greylist pruning failed", f))
        return d

    def startService(self) -> None:
        super().startService()
        self.loop.start(self.interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self.loop.running:
            self.loop.stop()
