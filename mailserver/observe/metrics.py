"""Prometheus metrics made from the servers' log events (:mod:`mailserver.observe.events`).

:class:`Metrics` owns one :class:`~prometheus_client.CollectorRegistry` per server (never the
library's global default registry) and is itself a :mod:`twisted.logger` observer: wiring adds
it to the log publisher, so no protocol imports a metrics library and the counting happens in
one place. The queue gauges are not counted from events but read from the spool on each scrape
(:class:`QueueCollector`: an O(1) count and the first entry of the id-ordered queue).

Design rules:

1. Cheap in the reactor: an event is one dict look-up on ``mail_event`` and, for the kinds
   counted, a cached child metric's ``inc``/``observe``; events of other kinds cost nothing
   else.
2. Bounded label sets: every label comes from a bounded set (listener config keys, protocol
   verbs or ``UNKNOWN``, reply codes, RFC 3463 status codes, filter actions).
3. An observer never raises: a malformed event is ignored.

The names are :data:`METRIC_NAMES`; the Grafana dashboard in ``etc/grafana/mailserver.json``
queries them, and a test checks that every name it queries is exported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from twisted.logger import ILogObserver
from zope.interface import implementer

from mailserver.observe.events import AUTH, CONNECTION, MAILLOG, MESSAGE, REPLY, VERDICT

__all__ = ["METRIC_NAMES", "Metrics", "QueueCollector"]

#: Every metric family this module exports (as Prometheus names them: counters end in
#: ``_total``, histograms add ``_bucket``, ``_sum`` and ``_count``).
METRIC_NAMES = (
    "mailserver_connections_total",
    "mailserver_connections_open",
    "mailserver_connections_refused_total",
    "mailserver_commands_total",
    "mailserver_replies_total",
    "mailserver_messages_total",
    "mailserver_message_bytes_total",
    "mailserver_auth_total",
    "mailserver_auth_failures_total",
    "mailserver_filter_verdicts_total",
    "mailserver_delivery_attempts_total",
    "mailserver_queue_messages",
    "mailserver_queue_oldest_age_seconds",
    "mailserver_smtp_data_seconds",
    "mailserver_imap_command_seconds",
    "mailserver_delivery_attempt_seconds",
)

#: SMTP end-of-data to final reply: filter checks and the fsync before the 250.
DATA_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: IMAP command to tagged response.
IMAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: One delivery attempt of a queue entry (DNS, connection, the remote's replies).
DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

#: IMAP commands whose duration is the client's, not the server's: not in the histogram.
_OPEN_ENDED = frozenset({"IDLE", "AUTHENTICATE", "UNKNOWN"})


class _Spool(Protocol):
    def count(self) -> int: ...

    def entries(self, after: str = "", limit: int = 100) -> Any: ...


class QueueCollector(Collector):
    """``mailserver_queue_messages`` and ``mailserver_queue_oldest_age_seconds`` read from
    the spool when scraped: its entry count, and the age of its first entry (queue ids are
    time-ordered, so the first is the oldest). Both are LMDB reads, fine on the reactor."""

    def __init__(self, spool: _Spool, clock: Any) -> None:
        self.spool = spool
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        count = GaugeMetricFamily(
            "mailserver_queue_messages", "Messages in the outbound queue (not yet delivered)."
        )
        oldest = GaugeMetricFamily(
            "mailserver_queue_oldest_age_seconds",
            "Age of the oldest message in the outbound queue (0 when it is empty).",
        )
        try:
            size = self.spool.count()
            first = list(self.spool.entries("", 1)) if size else []
        except Exception:  # a closed index (shutting down): report nothing rather than fail
            return
        count.add_metric([], float(size))
        created = float(getattr(first[0], "created", 0.0)) if first else 0.0
        age = max(float(self.clock.seconds()) - created, 0.0) if created else 0.0
        oldest.add_metric([], age)
        yield count
        yield oldest

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("mailserver_queue_messages", "")
        yield GaugeMetricFamily("mailserver_queue_oldest_age_seconds", "")


@implementer(ILogObserver)
class Metrics:
    """The server's metrics in ``registry`` (a new one when not given), counted from log
    events: add the instance to a log publisher (see :mod:`mailserver.observe.wiring`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.connections = Counter(
            "mailserver_connections", "Connections accepted, per listener.", ["listener"],
            registry=r,
        )
        self.connections_open = Gauge(
            "mailserver_connections_open", "Connections open now, per listener.", ["listener"],
            registry=r,
        )
        self.connections_refused = Counter(
            "mailserver_connections_refused",
            "Connections refused by the connection limits, per listener.",
            ["listener"], registry=r,
        )
        self.commands = Counter(
            "mailserver_commands", "Commands received, by protocol, listener and verb.",
            ["protocol", "listener", "verb"], registry=r,
        )
        self.replies = Counter(
            "mailserver_replies",
            "Replies sent, by protocol, listener and code (SMTP 250, IMAP OK/NO/BAD, "
            "POP3 +OK/-ERR).",
            ["protocol", "listener", "code"], registry=r,
        )
        self.messages = Counter(
            "mailserver_messages",
            "SMTP messages by outcome (accepted, deferred, rejected), the phase that decided "
            "it (mail, rcpt, data) and the reason (RFC 3463 status, or the reply code).",
            ["listener", "result", "phase", "reason"], registry=r,
        )
        self.message_bytes = Counter(
            "mailserver_message_bytes", "Bytes of SMTP messages accepted.", ["listener"],
            registry=r,
        )
        self.logins = Counter(
            "mailserver_auth", "Logins, by protocol, listener and result (success, failure).",
            ["protocol", "listener", "result"], registry=r,
        )
        self.auth_failures = Counter(
            "mailserver_auth_failures", "Failed logins, by protocol and listener.",
            ["protocol", "listener"], registry=r,
        )
        self.verdicts = Counter(
            "mailserver_filter_verdicts",
            "Filter decisions on messages, by action (accept, quarantine, reject, ...).",
            ["action"], registry=r,
        )
        self.deliveries = Counter(
            "mailserver_delivery_attempts",
            "Outbound delivery attempts per recipient, by result (delivered, deferred, "
            "failed).",
            ["result"], registry=r,
        )
        self.data_seconds = Histogram(
            "mailserver_smtp_data_seconds",
            "SMTP end of message content to the final reply (the 250 comes after the fsync).",
            ["listener"], buckets=DATA_BUCKETS, registry=r,
        )
        self.imap_seconds = Histogram(
            "mailserver_imap_command_seconds",
            "IMAP command to its tagged response, by command (IDLE and AUTHENTICATE not "
            "included).",
            ["verb"], buckets=IMAP_BUCKETS, registry=r,
        )
        self.delivery_seconds = Histogram(
            "mailserver_delivery_attempt_seconds",
            "Outbound delivery attempts, per recipient: the duration of the attempt (all "
            "domains of the queue entry at once) that gave the result.",
            ["result"], buckets=DELIVERY_BUCKETS, registry=r,
        )
        self._children: dict[tuple[Any, ...], Any] = {}
        self._handlers: Mapping[str, Callable[[Mapping[str, Any]], None]] = {
            CONNECTION: self._connection,
            REPLY: self._reply,
            AUTH: self._auth,
            MESSAGE: self._message,
            VERDICT: self._verdict,
            MAILLOG: self._maillog,
        }

    def watch_queue(self, spool: _Spool, clock: Any) -> None:
        """Report the outbound queue of ``spool`` on each scrape."""
        self.registry.register(QueueCollector(spool, clock))

    def __call__(self, event: Mapping[str, Any]) -> None:
        kind = event.get("mail_event")
        if kind is None:
            return
        handler = self._handlers.get(kind)
        if handler is None:
            return
        try:
            handler(event)
        except (KeyError, TypeError, ValueError):
            pass  # rule 3: an event without the fields its kind promises is not counted

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached (rule 1)."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # -- one method per event kind -------------------------------------------------------

    def _connection(self, event: Mapping[str, Any]) -> None:
        listener, state = event["listener"], event["state"]
        if state == "open":
            self._child(self.connections, listener).inc()
            self._child(self.connections_open, listener).inc()
        elif state == "closed":
            self._child(self.connections_open, listener).dec()
        elif state == "refused":
            self._child(self.connections_refused, listener).inc()

    def _reply(self, event: Mapping[str, Any]) -> None:
        protocol, listener = event["protocol"], event["listener"]
        for verb in event.get("commands", ()):  # the commands this reply is the first to
            self._child(self.commands, protocol, listener, verb).inc()
        self._child(self.replies, protocol, listener, event["code"]).inc()
        if protocol == "imap" and event["verb"] not in _OPEN_ENDED:
            self._child(self.imap_seconds, event["verb"]).observe(event["elapsed"])

    def _auth(self, event: Mapping[str, Any]) -> None:
        protocol, listener, result = event["protocol"], event["listener"], event["result"]
        self._child(self.logins, protocol, listener, result).inc()
        if result == "failure":
            self._child(self.auth_failures, protocol, listener).inc()

    def _message(self, event: Mapping[str, Any]) -> None:
        listener, result, phase = event["listener"], event["result"], event["phase"]
        reason = "" if result == "accepted" else (event["enhanced"] or event["code"])
        self._child(self.messages, listener, result, phase, reason).inc()
        if phase == "data":
            self._child(self.data_seconds, listener).observe(event["elapsed"])
            if result == "accepted":
                self._child(self.message_bytes, listener).inc(event["size"])

    def _verdict(self, event: Mapping[str, Any]) -> None:
        self._child(self.verdicts, event["action"]).inc()

    def _maillog(self, event: Mapping[str, Any]) -> None:
        if event.get("direction") != "out":
            return
        result = event["result"]
        self._child(self.deliveries, result).inc()
        self._child(self.delivery_seconds, result).observe(event["elapsed"])
