"""Wiring (mailserver.observe.wiring): listeners labelled by their config keys (inside the
TLS wrapper too), traces switched on by [log] trace, /metrics mounted and counted only with
[http] metrics, observers on the publisher only while the service runs."""

from __future__ import annotations

from twisted.application.service import MultiService
from twisted.cred.portal import Portal
from twisted.internet.task import Clock
from twisted.logger import LogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.resource import Resource

from mailserver.config import loads
from mailserver.imap.factory import IMAPFactory, IMAPPolicy
from mailserver.observe.metrics import Metrics
from mailserver.observe.wiring import install
from mailserver.service import ListenerService
from mailserver.smtp.factory import SMTPFactory, SMTPPolicy
from mailserver.testing import self_signed_tls


def server(clock: Clock) -> tuple[MultiService, SMTPFactory, IMAPFactory]:
    root = MultiService()
    smtp = SMTPFactory(Portal(None), SMTPPolicy(), None, reactor=clock)
    tls = self_signed_tls("localhost")
    imap = IMAPFactory(Portal(None), IMAPPolicy(), tls, reactor=clock)
    ListenerService("smtp.listen", "tcp:0:interface=127.0.0.1", smtp, clock).setServiceParent(
        root
    )
    wrapped = TLSMemoryBIOFactory(tls, False, imap)
    ListenerService("imap.tls_listen", "tcp:0:interface=127.0.0.1", wrapped, clock
                    ).setServiceParent(root)
    return root, smtp, imap


def test_listeners_labelled_traced_and_metrics_mounted():
    """Each factory gets its listener key; [log] trace names the config section, so
    "imap" traces imap.tls_listen and smtp.listen stays untraced; /metrics is mounted."""
    clock = Clock()
    root, smtp, imap = server(clock)
    web = Resource()
    publisher = LogPublisher()
    observability = install(loads('[log]\ntrace = ["imap"]\n'), root, web, clock,
                            publisher=publisher)
    assert (smtp.listener, smtp.trace) == ("smtp.listen", False)
    assert (imap.listener, imap.trace) == ("imap.tls_listen", True)
    assert b"metrics" in web.children
    assert isinstance(observability.metrics, Metrics)

    observability.startService()
    publisher({"mail_event": "verdict", "action": "accept"})
    observability.stopService()
    publisher({"mail_event": "verdict", "action": "accept"})  # not observed any more
    registry = observability.metrics.registry
    assert registry.get_sample_value("mailserver_filter_verdicts_total",
                                     {"action": "accept"}) == 1


def test_metrics_off_counts_nothing_and_mounts_nothing():
    """[http] metrics = false: no /metrics resource and no metrics observer; the mail log
    still runs."""
    clock = Clock()
    root, _smtp, _imap = server(clock)
    web = Resource()
    observability = install(loads("[http]\nmetrics = false\n"), root, web, clock,
                            publisher=LogPublisher())
    assert b"metrics" not in web.children
    assert observability.metrics is None
    assert [type(o).__name__ for o in observability.observers] == ["MailLog"]
