"""``GET /healthz``: a JSON status document for load balancers and start-up scripts."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from twisted.web.resource import Resource
from twisted.web.server import Request


class HealthResource(Resource):
    """Renders the mapping returned by ``status`` as JSON on each GET.

    The response is 200 when ``status()["status"] == "ok"`` and 503 otherwise (starting,
    stopping), so a probe needs to look only at the code. ``status`` must be cheap and must not
    block: it runs on the reactor thread for every request.
    """

    isLeaf = True

    def __init__(self, status: Callable[[], Mapping[str, object]]) -> None:
        super().__init__()
        self._status = status

    def render_GET(self, request: Request) -> bytes:
        """Serialise the current status; never cached."""
        document = dict(self._status())
        request.setResponseCode(200 if document.get("status") == "ok" else 503)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(document, sort_keys=True).encode("utf-8") + b"\n"

    def render_HEAD(self, request: Request) -> bytes:
        """Same status code and headers as GET (twisted.web drops the body)."""
        return self.render_GET(request)
