"""``/mail/``: the web mail page, a single document with its script and style sheet.

The page is plain files (``static/index.html``, ``app.css`` and the JavaScript modules
``app.js``, ``core.js``, ``folders.js``, ``reader.js``, ``compose.js``, ``settings.js``,
``live.js``: no build step, no external resource) that talk to the REST API at ``/api/v1``
with the session cookie of :mod:`mailserver.web.api.session_routes`, and follow the
account's changes on its live update stream (``GET /api/v1/events``). This resource only
serves them.

Design rules:

1. **A strict Content-Security-Policy** (:data:`PAGE_CSP`) on every reply: scripts and
   styles only from this server (no inline script or style, no ``eval``), images from this
   server or ``data:``, requests only to this server, frames only from this server, the
   page never framed by another, no ``<base>``, forms only to this server. A message's
   HTML is held by three locks: the API's sanitiser, the frame's ``sandbox`` attribute
   (no ``allow-scripts``, no ``allow-same-origin``) and the frame document's own policy
   (``GET /api/v1/folders/{f}/messages/{uid}/frame``, see
   :mod:`mailserver.web.api.session_routes` rule 5).
2. The files are read once at construction (they are small) and served from memory with
   ``Cache-Control: no-cache`` and a strong ETag, ``X-Content-Type-Options: nosniff``,
   ``Referrer-Policy: no-referrer`` and ``X-Frame-Options: DENY``.
3. Only the files of :data:`FILES` exist; anything else below ``/mail/`` is 404, and
   ``/mail`` redirects to ``/mail/`` (the page's relative URLs need the slash).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from twisted.web.resource import Resource

__all__ = ["FILES", "PAGE_CSP", "WebmailResource"]

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
#: URL path below /mail/ -> (file in static/, content type).
FILES: Mapping[str, tuple[str, str]] = {
    "": ("index.html", "text/html; charset=utf-8"),
    "index.html": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "core.js": ("core.js", "text/javascript; charset=utf-8"),
    "folders.js": ("folders.js", "text/javascript; charset=utf-8"),
    "reader.js": ("reader.js", "text/javascript; charset=utf-8"),
    "compose.js": ("compose.js", "text/javascript; charset=utf-8"),
    "settings.js": ("settings.js", "text/javascript; charset=utf-8"),
    "live.js": ("live.js", "text/javascript; charset=utf-8"),
    "app.css": ("app.css", "text/css; charset=utf-8"),
}
STATIC = Path(__file__).resolve().parent / "static"
_HEADERS = {
    b"content-security-policy": PAGE_CSP.encode("ascii"),
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"x-frame-options": b"DENY",
    b"cross-origin-opener-policy": b"same-origin",
}


class WebmailResource(Resource):
    """The page and its files (see the module docstring); ``static`` is the directory
    holding them (the package's ``static/`` by default)."""

    isLeaf = True

    def __init__(self, static: Path = STATIC) -> None:
        super().__init__()
        self._files: dict[str, tuple[bytes, str, bytes]] = {}
        for path, (name, content_type) in FILES.items():
            data = (static / name).read_bytes()
            etag = b'"' + hashlib.sha256(data).hexdigest()[:32].encode("ascii") + b'"'
            self._files[path] = (data, content_type, etag)

    def render_GET(self, request: Any) -> bytes:
        for name, value in _HEADERS.items():
            request.setHeader(name, value)
        if not request.postpath:  # "/mail" itself: the page's relative URLs need "/mail/"
            request.setResponseCode(301)
            request.setHeader(b"location", b"/mail/")
            return b""
        path = b"/".join(request.postpath).decode("latin-1")
        found = self._files.get(path)
        if found is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found\n"
        data, content_type, etag = found
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"etag", etag)
        request.setHeader(b"content-type", content_type.encode("ascii"))
        if request.getHeader(b"if-none-match") == etag:
            request.setResponseCode(304)
            return b""
        return data

    def render_HEAD(self, request: Any) -> bytes:
        return self.render_GET(request)
