"""The metrics observer (mailserver.observe.metrics): each event kind moves its metric, in a
registry of its own; the queue gauges are read from the spool when scraped; /metrics serves
the registry to loopback clients."""

from __future__ import annotations

import json
import re
import urllib.request
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest

from mailserver.db import Database
from mailserver.observe.http import MetricsResource, is_loopback
from mailserver.observe.metrics import METRIC_NAMES, Metrics
from mailserver.spool.queue import LmdbSpool
from mailserver.types import Address, Envelope

DASHBOARD = Path(__file__).resolve().parents[2] / "etc" / "grafana" / "mailserver.json"


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_every_metric_lives_in_its_own_registry():
    """Two Metrics never share state, and nothing is put in the library's global registry."""
    first, second = Metrics(), Metrics()
    first({"mail_event": "verdict", "action": "accept"})
    assert value(first, "mailserver_filter_verdicts_total", action="accept") == 1
    assert value(second, "mailserver_filter_verdicts_total", action="accept") is None
    assert REGISTRY.get_sample_value("mailserver_filter_verdicts_total",
                                     {"action": "accept"}) is None


def test_connections_total_open_and_refused():
    """open counts a connection and raises the open gauge; closed lowers it; refused is
    counted apart."""
    metrics = Metrics()
    for state in ("open", "open", "closed", "refused"):
        metrics({"mail_event": "connection", "listener": "imap.listen", "state": state,
                 "peer": "127.0.0.1"})
    assert value(metrics, "mailserver_connections_total", listener="imap.listen") == 2
    assert value(metrics, "mailserver_connections_open", listener="imap.listen") == 1
    assert value(metrics, "mailserver_connections_refused_total", listener="imap.listen") == 1


def test_commands_replies_and_imap_latency():
    """Commands by verb (as the replies name them), replies by code; IMAP replies feed the
    command histogram, except IDLE (its time is the client's). A traced command's own
    event is not counted again."""
    metrics = Metrics()
    base = {"protocol": "imap", "listener": "imap.listen", "session": "s"}
    metrics({"mail_event": "command", "verb": "SELECT", **base})  # traced: the log's only
    metrics({"mail_event": "command", "verb": "", **base})  # a SASL line: not a command
    metrics({"mail_event": "reply", "verb": "SELECT", "code": "OK", "elapsed": 0.002,
             "commands": ("SELECT",), **base})
    metrics({"mail_event": "reply", "verb": "IDLE", "code": "OK", "elapsed": 600.0,
             "commands": ("IDLE",), **base})
    labels = {"protocol": "imap", "listener": "imap.listen"}
    assert value(metrics, "mailserver_commands_total", verb="SELECT", **labels) == 1
    assert value(metrics, "mailserver_commands_total", verb="IDLE", **labels) == 1
    assert value(metrics, "mailserver_commands_total", verb="", **labels) is None
    assert value(metrics, "mailserver_replies_total", code="OK", **labels) == 2
    assert value(metrics, "mailserver_imap_command_seconds_count", verb="SELECT") == 1
    assert value(metrics, "mailserver_imap_command_seconds_sum", verb="SELECT") == 0.002
    assert value(metrics, "mailserver_imap_command_seconds_count", verb="IDLE") is None


def test_messages_by_result_phase_and_reason_with_data_latency():
    """An accepted message counts its bytes and its end-of-data latency; a refusal is
    counted by its RFC 3463 status."""
    metrics = Metrics()
    base = {"mail_event": "message", "listener": "smtp.listen", "size": 1000}
    metrics({**base, "result": "accepted", "phase": "data", "enhanced": "2.0.0",
             "code": "250", "elapsed": 0.03})
    metrics({**base, "result": "rejected", "phase": "rcpt", "enhanced": "5.1.1",
             "code": "550", "elapsed": 0.0})
    metrics({**base, "result": "rejected", "phase": "data", "enhanced": "", "code": "554",
             "elapsed": 0.01})
    name = "mailserver_messages_total"
    assert value(metrics, name, listener="smtp.listen", result="accepted", phase="data",
                 reason="") == 1
    assert value(metrics, name, listener="smtp.listen", result="rejected", phase="rcpt",
                 reason="5.1.1") == 1
    assert value(metrics, name, listener="smtp.listen", result="rejected", phase="data",
                 reason="554") == 1
    assert value(metrics, "mailserver_message_bytes_total", listener="smtp.listen") == 1000
    assert value(metrics, "mailserver_smtp_data_seconds_count", listener="smtp.listen") == 2


def test_logins_failures_verdicts_and_deliveries():
    """auth events count logins and failures; verdicts by action; outbound mail log lines
    count delivery attempts by result and their duration; inbound ones are not attempts."""
    metrics = Metrics()
    auth = {"mail_event": "auth", "protocol": "smtp", "listener": "submission.listen"}
    metrics({**auth, "result": "failure"})
    metrics({**auth, "result": "success"})
    metrics({"mail_event": "verdict", "action": "quarantine", "queue_id": "Q"})
    metrics({"mail_event": "maillog", "direction": "out", "result": "deferred",
             "elapsed": 1.5})
    metrics({"mail_event": "maillog", "direction": "in", "result": "accepted"})
    labels = {"protocol": "smtp", "listener": "submission.listen"}
    assert value(metrics, "mailserver_auth_failures_total", **labels) == 1
    assert value(metrics, "mailserver_auth_total", result="success", **labels) == 1
    assert value(metrics, "mailserver_filter_verdicts_total", action="quarantine") == 1
    assert value(metrics, "mailserver_delivery_attempts_total", result="deferred") == 1
    assert value(metrics, "mailserver_delivery_attempts_total", result="accepted") is None
    assert value(metrics, "mailserver_delivery_attempt_seconds_sum", result="deferred") == 1.5


def test_malformed_and_foreign_events_are_ignored():
    """Events without mail_event, of other kinds, or missing their fields change nothing
    and raise nothing."""
    metrics = Metrics()
    metrics({"log_format": "hello"})
    metrics({"mail_event": "something else"})
    metrics({"mail_event": "connection"})
    metrics({"mail_event": "reply", "protocol": "imap"})
    assert value(metrics, "mailserver_connections_total", listener="x") is None


@pytest.fixture
def spool(tmp_path):
    db = Database.open(str(tmp_path / "index"), map_size=32 << 20, reactor=reactor, sync=False)
    yield LmdbSpool(db, str(tmp_path / "spool"), reactor, fsync=False)
    pytest_twisted.blockon(db.close())


async def enqueue(spool: LmdbSpool) -> Any:
    delivery = spool.start(Envelope(sender=Address("a", "example.org")))
    await delivery.add_recipient(Address("x", "remote.test"), {})
    await delivery.body(BytesIO(b"Subject: out\r\n\r\nbody\r\n"))
    return await delivery.commit()


@pytest_twisted.ensureDeferred
async def test_queue_gauges_are_read_from_the_spool_on_scrape(spool):
    """mailserver_queue_messages is the spool's entry count and the oldest age is measured
    from the first (oldest) entry's creation time on the given clock; empty means 0."""
    clock = Clock()
    metrics = Metrics()
    metrics.watch_queue(spool, clock)
    assert value(metrics, "mailserver_queue_messages") == 0
    assert value(metrics, "mailserver_queue_oldest_age_seconds") == 0
    await enqueue(spool)
    await enqueue(spool)
    oldest = spool.entries("", 1)[0]
    clock.advance(oldest.created + 90)
    assert value(metrics, "mailserver_queue_messages") == 2
    assert value(metrics, "mailserver_queue_oldest_age_seconds") == 90


def test_loopback_addresses():
    """127.0.0.0/8, ::1 and IPv4-mapped loopback are loopback; others and junk are not."""
    assert is_loopback("127.0.0.1") and is_loopback("127.3.4.5") and is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("192.0.2.1") and not is_loopback("::ffff:192.0.2.1")
    assert not is_loopback("") and not is_loopback("localhost")


def test_metrics_refused_to_a_remote_client_when_loopback_only():
    """A client outside the loopback network gets 403 and no metrics; with
    loopback_only off it gets the exposition."""
    metrics = Metrics()
    metrics({"mail_event": "verdict", "action": "accept"})
    request = DummyRequest([b""])
    request.client = IPv4Address("TCP", "192.0.2.1", 40000)
    body = MetricsResource(metrics.registry).render_GET(request)
    assert request.responseCode == 403 and b"mailserver_" not in body
    request = DummyRequest([b""])
    request.client = IPv4Address("TCP", "192.0.2.1", 40000)
    body = MetricsResource(metrics.registry, loopback_only=False).render_GET(request)
    assert b'mailserver_filter_verdicts_total{action="accept"} 1.0' in body


@pytest_twisted.ensureDeferred
async def test_metrics_served_over_http_on_loopback():
    """GET /metrics on a real listener on 127.0.0.1 returns the text format with every
    family of METRIC_NAMES described."""
    metrics = Metrics()
    metrics({"mail_event": "reply", "protocol": "smtp", "listener": "smtp.listen",
             "verb": "EHLO", "code": "250", "elapsed": 0.0, "commands": ("EHLO",)})
    root = Resource()
    root.putChild(b"metrics", MetricsResource(metrics.registry))
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/metrics"

        def fetch() -> tuple[str, str]:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.headers["content-type"], response.read().decode()

        content_type, text = await deferToThread(fetch)
    finally:
        await port.stopListening()
    assert content_type.startswith("text/plain")
    families = {family.name for family in text_string_to_metric_families(text)}
    exported = {name.removesuffix("_total") for name in METRIC_NAMES} - {
        "mailserver_queue_messages", "mailserver_queue_oldest_age_seconds"}
    assert exported <= families
    assert 'mailserver_commands_total{listener="smtp.listen",protocol="smtp",verb="EHLO"} 1.0' \
        in text


def dashboard_metrics(document: Any) -> set[str]:
    """Every mailserver_* name the dashboard's panel targets query."""
    names: set[str] = set()
    for panel in document["panels"]:
        for target in panel.get("targets", []):
            names.update(re.findall(r"mailserver_[a-z_]+", target["expr"]))
    return names


def test_dashboard_queries_only_exported_metrics(spool):
    """Every metric the sample Grafana dashboard queries is in the registry (a histogram's
    _bucket/_sum/_count series count as the histogram), and it shows every family."""
    document = json.loads(DASHBOARD.read_text())
    metrics = Metrics()
    metrics.watch_queue(spool, Clock())
    registry: CollectorRegistry = metrics.registry
    series: set[str] = set()
    for family in registry.collect():
        series.add(family.name)
        if family.type == "counter":
            series.add(family.name + "_total")
        if family.type == "histogram":
            series.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    queried = dashboard_metrics(document)
    assert queried, "the dashboard queries nothing"
    assert queried <= series, sorted(queried - series)
    shown = {name.removesuffix("_bucket") for name in queried}
    assert set(METRIC_NAMES) <= shown | {n + "_total" for n in shown}
