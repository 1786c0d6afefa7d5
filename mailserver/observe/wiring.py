"""Wiring of metrics, the mail log and the protocol trace into a built server (called by
``service.build``, like ``api_service`` and ``filtering``, so ``service.py`` stays short).

:func:`install` names each listener's factory after its config key (the ``listener`` label
of every event), turns on the trace of the listeners ``[log] trace`` names, mounts
``/metrics`` on the HTTP root and counts when ``[http] metrics`` is on, and adds an
:class:`Observability` service that keeps the observers on the log publisher while the
server runs.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService, Service
from twisted.logger import ILogObserver, LogPublisher, globalLogPublisher
from twisted.web.resource import Resource

from mailserver.config import Config
from mailserver.listener import ListenerFactory
from mailserver.observe.http import MetricsResource
from mailserver.observe.maillog import MailLog
from mailserver.observe.metrics import Metrics

__all__ = ["Observability", "install"]


class Observability(Service):
    """Adds ``observers`` to ``publisher`` on start and removes them on stop."""

    def __init__(
        self, metrics: Metrics | None, observers: list[ILogObserver], publisher: LogPublisher
    ) -> None:
        self.setName("observability")
        self.metrics = metrics
        self.observers = observers
        self.publisher = publisher

    def startService(self) -> None:
        super().startService()
        for observer in self.observers:
            self.publisher.addObserver(observer)

    def stopService(self) -> None:
        for observer in self.observers:
            self.publisher.removeObserver(observer)
        super().stopService()


def listener_factories(service: MultiService) -> list[tuple[str, ListenerFactory]]:
    """Each listener's config key and its protocol factory (inside the TLS wrapper)."""
    found = []
    for child in service:
        key = getattr(child, "key", None)
        factory = getattr(child, "factory", None)
        factory = getattr(factory, "wrappedFactory", factory)
        if key and isinstance(factory, ListenerFactory):
            found.append((key, factory))
    return found


def install(
    config: Config,
    service: MultiService,
    web_root: Resource,
    reactor: Any,
    *,
    spool: Any = None,
    publisher: LogPublisher | None = None,
) -> Observability:
    """Set up the listeners' labels and traces, ``/metrics`` and the observers of a built
    server; ``spool`` (an ISpool with ``count``) gives the queue gauges."""
    if publisher is None:
        publisher = globalLogPublisher
    traced = set(config.log.trace)
    for key, factory in listener_factories(service):
        factory.listener = key
        factory.trace = key.split(".", 1)[0] in traced
    observers: list[ILogObserver] = [MailLog(publisher)]
    metrics = None
    if config.http.metrics:  # off: nothing is counted at all
        metrics = Metrics()
        if spool is not None:
            metrics.watch_queue(spool, reactor)
        web_root.putChild(
            b"metrics",
            MetricsResource(metrics.registry, loopback_only=config.http.metrics_loopback_only),
        )
        observers.append(metrics)
    observability = Observability(metrics, observers, publisher)
    observability.setServiceParent(service)
    return observability
