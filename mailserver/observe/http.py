"""``GET /metrics``: the server's Prometheus registry in the text exposition format."""

from __future__ import annotations

import ipaddress

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.web.resource import Resource
from twisted.web.server import Request

__all__ = ["MetricsResource", "is_loopback"]


def is_loopback(host: str) -> bool:
    """True for an address in 127.0.0.0/8, ``::1`` or an IPv4-mapped loopback address."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


class MetricsResource(Resource):
    """Renders ``registry`` on each GET. With ``loopback_only`` a client outside the loopback
    network gets ``403`` (``[http] metrics_loopback_only``); scrapes from elsewhere then go
    through a local proxy or agent. Collecting runs on the reactor thread: every metric is a
    counter in memory except the queue gauges, two LMDB reads."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry, *, loopback_only: bool = True) -> None:
        super().__init__()
        self.registry = registry
        self.loopback_only = loopback_only

    def render_GET(self, request: Request) -> bytes:
        """The exposition text, or 403 for a client the configuration keeps out."""
        request.setHeader(b"cache-control", b"no-store")
        if self.loopback_only:
            host = getattr(request.getClientAddress(), "host", "")
            if not is_loopback(host):
                request.setResponseCode(403)
                request.setHeader(b"content-type", b"text/plain; charset=utf-8")
                return b"metrics are served to loopback clients only " \
                    b"([http] metrics_loopback_only)\n"
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return bytes(generate_latest(self.registry))
