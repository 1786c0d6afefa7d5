"""A message as the REST API shows it: headers, text, sanitised HTML, attachments.

Pure functions over the message's bytes (no I/O, no Twisted): the API calls them in the
thread pool. The MIME structure comes from :func:`mailserver.message.mime.parse` (the same
parser the store caches for IMAP), so the part ids given here (``"2"``, ``"1.2"``) are the
IMAP part numbers of RFC 9051 §6.4.5 and name the same parts as ``BODY[1.2]`` does.

Design rules:

1. Never raise on any input: broken MIME, unknown charsets and transfer encodings, binary
   junk all give a best-effort rendering (hypothesis-tested on arbitrary bytes).
2. HTML is sanitised with ammonia (the ``nh3`` binding) by an allow-list: no scripts, event
   handlers, forms, frames, ``<link>``/``<meta>``/``<base>`` elements, no
   ``javascript:``/``data:`` links, no relative URLs (they would point at this server). The
   ``style`` attribute keeps only a list of layout and typography properties, and is dropped
   whole when it mentions ``url(``, ``@import``, ``expression(`` or a CSS escape. A
   ``<style>`` element is kept (moved to the front) only when, its comments removed, it
   cannot load anything: no ``url``, ``image``, ``src``, at-rule other than ``@media``,
   escape, ``<``, ``expression``, ``behavior`` or ``binding`` (CSS exfiltration needs a URL:
   ``input[value^=a] { background: url(...) }``); any other is dropped whole.
3. Remote images (``http:``, ``https:``) are replaced by a placeholder image and counted,
   unless the caller asked for them (``images=True``): loading one tells the sender that the
   mail was read. ``cid:`` images (parts of this message) are kept; the attachments list
   gives each part's Content-ID so the page can map them.
4. Bodies are capped (:data:`MAX_TEXT`, :data:`MAX_HTML` characters) so one huge message
   cannot make a huge JSON answer; ``truncated`` says when that happened.
"""

from __future__ import annotations

import html as html_module
import re
import unicodedata
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import nh3

from mailserver.imap.commands.sections import UnknownEncoding, decode_transfer
from mailserver.message import mime
from mailserver.message.headers import (
    decode_charset,
    decode_header_value,
    parse_headers,
    split_message,
)

__all__ = [
    "BLOCKED_IMAGE",
    "MAX_CSS",
    "MAX_HTML",
    "MAX_TEXT",
    "Part",
    "Rendered",
    "addresses",
    "content_disposition",
    "part_bytes",
    "render",
    "safe_content_type",
    "safe_filename",
    "sanitize_html",
]

#: Characters of text and of (sanitised) HTML given at most.
MAX_TEXT = 1_000_000
MAX_HTML = 2_000_000
#: At most this many header fields are listed.
MAX_HEADERS = 500

#: What a blocked remote image shows instead: a 1x1 transparent GIF.
BLOCKED_IMAGE = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"

_TAGS = (set(nh3.ALLOWED_TAGS) | {"font", "center", "tfoot"}) - {"map", "area"}
_TABLE_ATTRS = {"align", "valign", "width", "height", "bgcolor", "border", "cellpadding",
                "cellspacing", "colspan", "rowspan", "dir"}  # fmt: skip
_ATTRIBUTES: dict[str, set[str]] = {
    **{tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()},
    "*": {"style", "title", "lang", "dir"},
    "font": {"color", "face", "size"},
    "table": set(nh3.ALLOWED_ATTRIBUTES.get("table", set())) | _TABLE_ATTRS,
    "td": set(nh3.ALLOWED_ATTRIBUTES.get("td", set())) | _TABLE_ATTRS,
    "th": set(nh3.ALLOWED_ATTRIBUTES.get("th", set())) | _TABLE_ATTRS,
    "tr": set(nh3.ALLOWED_ATTRIBUTES.get("tr", set())) | _TABLE_ATTRS,
    "img": {"src", "alt", "width", "height", "align", "border"},
    "div": {"align"},
    "p": {"align"},
}
_ATTRIBUTES.pop("area", None)
#: Elements removed with their content (the rest of what is not allowed keeps its text).
_DROPPED = {"script", "style", "title", "textarea", "select", "option", "noscript", "template",
            "iframe", "object", "embed", "frameset", "frame", "noframes", "svg", "math",
            "head", "xmp", "noembed", "plaintext"}  # fmt: skip
_SCHEMES = {"http", "https", "mailto", "cid", "tel"}
#: CSS properties a ``style`` attribute may keep: layout and typography, nothing that loads.
_STYLE_PROPERTIES = {
    "color", "background-color", "font", "font-family", "font-size", "font-style",
    "font-weight", "font-variant", "text-align", "text-decoration", "text-indent",
    "text-transform", "line-height", "letter-spacing", "word-spacing", "white-space",
    "vertical-align", "width", "height", "max-width", "min-width", "max-height",
    "min-height", "margin", "margin-top", "margin-right", "margin-bottom", "margin-left",
    "padding", "padding-top", "padding-right", "padding-bottom", "padding-left", "border",
    "border-top", "border-right", "border-bottom", "border-left", "border-color",
    "border-style", "border-width", "border-collapse", "border-spacing", "border-radius",
    "display", "float", "clear", "direction", "list-style-type", "table-layout",
}  # fmt: skip
_DANGEROUS_CSS = re.compile(r"url\s*\(|@import|expression\s*\(|\\|image-set|behavior|binding",
                            re.IGNORECASE)  # fmt: skip
#: A ``<style>`` element with any of these (comments removed) is dropped (rule 2).
_UNSAFE_STYLESHEET = re.compile(
    r"url|image|cross-fade|element\s*\(|src|expression|behavior|binding|javascript"
    r"|@(?!media\b)|\\|<",
    re.IGNORECASE,
)
_STYLE_OPEN = re.compile(r"<style\b", re.IGNORECASE)
_STYLE_CLOSE = re.compile(r"</style", re.IGNORECASE)
#: Characters of ``<style>`` CSS kept at most.
MAX_CSS = 100_000
_REMOTE = re.compile(r"\s*(?:https?:)?//", re.IGNORECASE)
_UNSAFE_FILENAME = re.compile(r'[\x00-\x1f\x7f"\\/:*?<>|;]+')
#: Attachment types a browser may show as they are; anything else is served as
#: application/octet-stream (an HTML or SVG attachment must never run on the API's origin).
_SAFE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf",
                         "text/plain", "text/calendar", "message/rfc822"})  # fmt: skip

Node = Mapping[str, Any]


@dataclass(frozen=True)
class Part:
    """One attachment (or inline non-text part) of a message."""

    part: str
    filename: str | None
    content_type: str
    size: int
    content_id: str | None = None
    disposition: str | None = None

    def json(self) -> dict[str, object]:
        return {
            "part": self.part,
            "filename": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "content_id": self.content_id,
            "disposition": self.disposition,
        }


@dataclass
class Rendered:
    """A parsed message: what ``GET /folders/{folder}/messages/{uid}`` returns about it."""

    headers: list[tuple[str, str]]
    envelope: dict[str, object]
    text: str | None = None
    html: str | None = None
    attachments: list[Part] = field(default_factory=list)
    remote_images: int = 0  # remote images blocked (0 when images were allowed)
    truncated: bool = False

    def json(self) -> dict[str, object]:
        env = self.envelope
        return {
            "headers": [{"name": n, "value": v} for n, v in self.headers],
            "subject": env.get("subject"),
            "date": env.get("date"),
            "message_id": env.get("message_id"),
            "in_reply_to": env.get("in_reply_to"),
            "from": addresses(env.get("from")),
            "sender": addresses(env.get("sender")),
            "reply_to": addresses(env.get("reply_to")),
            "to": addresses(env.get("to")),
            "cc": addresses(env.get("cc")),
            "text": self.text,
            "html": self.html,
            "attachments": [p.json() for p in self.attachments],
            "remote_images_blocked": self.remote_images,
            "truncated": self.truncated,
        }


def addresses(entries: object) -> list[dict[str, str | None]]:
    """An ENVELOPE address list (``[name, route, local, domain]`` entries) as
    ``[{"name", "address"}]``; group markers are left out."""
    if not isinstance(entries, list | tuple):
        return []
    out: list[dict[str, str | None]] = []
    for entry in entries:
        if not isinstance(entry, list | tuple) or len(entry) < 4:
            continue
        name, _route, local, domain = entry[:4]
        if domain is None:
            continue  # RFC 3501 §7.4.2 group start/end
        out.append({"name": str(name) if name else None, "address": f"{local or ''}@{domain}"})
    return out


def _body(data: bytes, node: Node) -> bytes:
    start = int(node.get("body_offset") or 0)
    return data[start : start + int(node.get("body_length") or 0)]


def _decoded(data: bytes, node: Node) -> bytes:
    body = _body(data, node)
    try:
        return decode_transfer(body, str(node.get("encoding") or ""))
    except (UnknownEncoding, ValueError):
        return body


def _text_of(data: bytes, node: Node) -> str:
    """A text part decoded (transfer encoding, then charset), line ends as ``\n``."""
    params = node.get("params") or {}
    charset = str(params.get("charset") or "us-ascii") if isinstance(params, Mapping) else "utf-8"
    try:
        text = decode_charset(_decoded(data, node), charset)
    except (LookupError, ValueError):
        text = _decoded(data, node).decode("utf-8", "replace")
    return text.replace("\r\n", "\n")


def _is_attachment(node: Node) -> bool:
    disposition = node.get("disposition")
    return (
        isinstance(disposition, list | tuple)
        and bool(disposition)
        and (str(disposition[0]).lower() == "attachment")
    )


def _leaves(root: Node) -> list[tuple[str, Node]]:
    """Every leaf with its IMAP part number, in order; an attached message is one leaf
    (its own text is not the message's text)."""
    out: list[tuple[str, Node]] = []
    stack: list[tuple[str, Node]] = []
    parts = root.get("parts")
    if parts:
        stack = [(str(i), p) for i, p in enumerate(parts, 1)][::-1]
    else:
        stack = [("1", root)]
    while stack:
        number, node = stack.pop()
        children = node.get("parts")
        if children:
            stack.extend([(f"{number}.{i}", p) for i, p in enumerate(children, 1)][::-1])
        else:
            out.append((number, node))
        if len(out) > mime.MAX_PARTS:
            break
    return out


def _locate(root: Node, part: str) -> Node | None:
    for number, node in _leaves(root):
        if number == part:
            return node
    return None


def _content_id(node: Node) -> str | None:
    raw = node.get("id")
    if not raw:
        return None
    return str(raw).strip().strip("<>") or None


def _filename(node: Node) -> str | None:
    disposition = node.get("disposition")
    name: object = None
    if isinstance(disposition, list | tuple) and len(disposition) > 1:
        params = disposition[1]
        if isinstance(params, Mapping):
            name = params.get("filename")
    params = node.get("params")
    if not name and isinstance(params, Mapping):
        name = params.get("name")
    if not name:
        return None
    return decode_header_value(str(name).encode("utf-8", "surrogateescape"))


def render(data: bytes, *, images: bool = False) -> Rendered:
    """Parse ``data`` (a whole message) for display. Never raises."""
    header_block = split_message(data)[0]
    headers = [
        (name, decode_header_value(value))
        for name, value in parse_headers(header_block)[:MAX_HEADERS]
    ]
    parsed = mime.parse(data)
    rendered = Rendered(headers=headers, envelope=dict(parsed.envelope))
    root = parsed.bodystructure
    text_node: Node | None = None
    html_node: Node | None = None
    for number, node in _leaves(root):
        kind = f"{node.get('type')}/{node.get('subtype')}"
        if not _is_attachment(node) and kind == "text/plain" and text_node is None:
            text_node = node
            continue
        if not _is_attachment(node) and kind == "text/html" and html_node is None:
            html_node = node
            continue
        if node.get("type") == "text" and not _is_attachment(node) and not _filename(node):
            continue  # another inline text part (a second alternative): not an attachment
        disposition = node.get("disposition")
        rendered.attachments.append(
            Part(
                part=number,
                filename=_filename(node),
                content_type=kind,
                size=len(_body(data, node)),
                content_id=_content_id(node),
                disposition=str(disposition[0]).lower()
                if isinstance(disposition, list | tuple) and disposition
                else None,
            )
        )
    if text_node is not None:
        rendered.text = _text_of(data, text_node)
    if html_node is not None:
        html = _text_of(data, html_node)
        if len(html) > MAX_HTML * 2:
            html = html[: MAX_HTML * 2]
            rendered.truncated = True
        rendered.html, rendered.remote_images = sanitize_html(html, images=images)
        if len(rendered.html) > MAX_HTML:
            rendered.html = rendered.html[:MAX_HTML]
            rendered.truncated = True
        if rendered.text is None:
            rendered.text = html_to_text(html)
    if rendered.text is not None and len(rendered.text) > MAX_TEXT:
        rendered.text = rendered.text[:MAX_TEXT]
        rendered.truncated = True
    return rendered


def sanitize_html(html: str, *, images: bool = False) -> tuple[str, int]:
    """``html`` made safe to show (see the module's rules) and the number of remote images
    replaced by :data:`BLOCKED_IMAGE` (0 when ``images``)."""
    blocked = 0

    def attribute(element: str, name: str, value: str) -> str | None:
        nonlocal blocked
        if name == "style":
            return None if _DANGEROUS_CSS.search(value) else value
        if element == "img" and name == "src" and _REMOTE.match(value):
            if images:
                return value
            blocked += 1
            return BLOCKED_IMAGE
        return value

    sheets = _safe_stylesheets(html)
    clean = nh3.clean(
        html,
        tags=_TAGS,
        clean_content_tags=_DROPPED,
        attributes=_ATTRIBUTES,
        attribute_filter=attribute,
        strip_comments=True,
        link_rel="noopener noreferrer",
        url_schemes=_SCHEMES,
        filter_style_properties=_STYLE_PROPERTIES,
        url_relative="deny",
        set_tag_attribute_values={"a": {"target": "_blank"}},
    )
    if sheets:
        clean = "".join(f"<style>{css}</style>" for css in sheets) + clean
    return clean, blocked


def _without_comments(css: str) -> str:
    """``css`` without ``/* ... */`` comments (an unclosed one runs to the end)."""
    out: list[str] = []
    position = 0
    while True:
        start = css.find("/*", position)
        if start < 0:
            out.append(css[position:])
            return " ".join(out)
        out.append(css[position:start])
        end = css.find("*/", start + 2)
        if end < 0:
            return " ".join(out)
        position = end + 2


def _safe_stylesheets(html: str) -> list[str]:
    """The CSS of each ``<style>`` element that cannot load anything (rule 2), at most
    :data:`MAX_CSS` characters in all; one linear pass."""
    kept: list[str] = []
    total = 0
    position = 0
    while True:
        opening = _STYLE_OPEN.search(html, position)
        if opening is None:
            return kept
        tag_end = html.find(">", opening.end())
        if tag_end < 0:
            return kept
        closing = _STYLE_CLOSE.search(html, tag_end + 1)
        end = len(html) if closing is None else closing.start()
        css = _without_comments(html[tag_end + 1 : end]).strip()
        if css and not _UNSAFE_STYLESHEET.search(css) and total + len(css) <= MAX_CSS:
            kept.append(css)
            total += len(css)
        if closing is None:
            return kept
        position = closing.end()


def html_to_text(html: str) -> str:
    """The readable text of ``html`` (a fallback when a message has no text/plain part)."""
    html = re.sub(r"(?i)<br\s*/?>|</p\s*>|</div\s*>|</tr\s*>|</h[1-6]\s*>", "\n", html)
    text = html_module.unescape(nh3.clean(html, tags=set(), clean_content_tags=_DROPPED))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def part_bytes(data: bytes, part: str) -> tuple[bytes, str, str | None] | None:
    """The decoded body of leaf ``part`` of ``data``, its content type and file name; None
    when the message has no such leaf part. Never raises."""
    if not re.fullmatch(r"[1-9][0-9]{0,5}(?:\.[1-9][0-9]{0,5}){0,31}", part):
        return None
    root = mime.parse(data).bodystructure
    node = _locate(root, part)
    if node is None:
        return None
    kind = f"{node.get('type')}/{node.get('subtype')}"
    if node.get("type") == "message":
        return _body(data, node), kind, _filename(node)
    return _decoded(data, node), kind, _filename(node)


def safe_content_type(content_type: str) -> str:
    """The type to serve a part as: itself for a few harmless types, else
    ``application/octet-stream``."""
    kind = content_type.lower().strip()
    return kind if kind in _SAFE_TYPES else "application/octet-stream"


def safe_filename(name: str | None, default: str = "attachment") -> str:
    """A file name that is safe in a Content-Disposition and on any file system: no path,
    no control or reserved characters, no leading dots, at most 200 characters."""
    if not name:
        return default
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_FILENAME.sub("_", name)
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")
    return name[:200].strip(" ._") or default


def content_disposition(name: str | None, default: str = "attachment") -> str:
    """``attachment`` with the safe file name, ASCII ``filename`` plus RFC 6266 / RFC 8187
    ``filename*`` for the UTF-8 name."""
    safe = safe_filename(name, default)
    ascii_name = safe.encode("ascii", "replace").decode("ascii").replace("?", "_")
    value = f'attachment; filename="{ascii_name}"'
    if ascii_name != safe:
        value += "; filename*=UTF-8''" + urllib.parse.quote(safe, safe="")
    return value
