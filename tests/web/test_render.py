"""The API's message renderer: headers, bodies, sanitised HTML, attachments, part bytes."""

from __future__ import annotations

import base64
import re
from email.message import EmailMessage
from email.policy import SMTP

from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.web.api import render

HOSTILE_HTML = """<html><head>
<style>body { background: url(http://evil.example/css-bg) }</style>
<link rel="stylesheet" href="http://evil.example/sheet.css">
<meta http-equiv="refresh" content="0;url=http://evil.example/refresh">
<base href="http://evil.example/">
<script>alert('script')</script>
</head>
<body onload="alert('onload')">
<img src="http://tracker.example/pixel.gif" onerror="alert('onerror')">
<img src="https://tracker.example/secure.png" width="1" height="1">
<img src="//tracker.example/protocol-relative.png">
<img srcset="http://tracker.example/srcset.png 1x">
<img src="cid:logo@example">
<a href="javascript:alert('js-link')">click</a>
<a href=" JaVaScRiPt:alert('js-link-2')">click2</a>
<a href="data:text/html,<script>alert('data')</script>">data</a>
<a href="https://good.example/page">good link</a>
<a href="/api/v1/folders">relative</a>
<form action="http://evil.example/form"><input name="q" value="secret"><button>go</button></form>
<iframe src="http://evil.example/frame"></iframe>
<object data="http://evil.example/obj"></object><embed src="http://evil.example/embed">
<svg><script>alert('svg')</script><image href="http://evil.example/svg.png"/></svg>
<p style="color: red; background-image: url(http://evil.example/exfil)">styled</p>
<div style="width: expression(alert('expr'))">expr</div>
<div style="color: \\72 ed; background: u\\72l(http://evil.example/escaped)">escaped</div>
<div style="color: blue; position: fixed">kept</div>
<table background="http://evil.example/table-bg"><tr><td bgcolor="#fff">cell</td></tr></table>
<video poster="http://evil.example/poster.png"></video>
<p>Hello <b>reader</b></p>
</body></html>"""


def _hostile_message() -> bytes:
    message = EmailMessage(policy=SMTP)
    message["From"] = "Mallory <mallory@evil.example>"
    message["To"] = "alice@example.org"
    message["Subject"] = "hostile"
    message.set_content("plain part")
    message.add_alternative(HOSTILE_HTML, subtype="html")
    return message.as_bytes()


def test_hostile_html_keeps_nothing_that_runs_or_loads() -> None:
    """Scripts, handlers, javascript:/data: links, forms, frames, CSS url(), relative and
    remote URLs are all gone; the text and safe styling stay."""
    clean, blocked = render.sanitize_html(HOSTILE_HTML)
    lowered = clean.lower()
    for needle in (
        "<script", "alert", "onload", "onerror", "javascript:", "data:text", "<form",
        "<input", "<button", "<iframe", "<object", "<embed", "<svg", "<style", "<link",
        "<meta", "<base", "url(", "expression", "evil.example", "tracker.example",
        "srcset", "background=", "poster", "/api/v1", "position",
    ):  # fmt: skip
        assert needle not in lowered, needle
    assert blocked == 2  # the http: and https: images; "//" is relative and dropped
    assert clean.count(render.BLOCKED_IMAGE) == 2
    assert 'href="https://good.example/page"' in clean
    assert 'rel="noopener noreferrer"' in clean
    assert 'src="cid:logo@example"' in clean
    assert "color:blue" in clean.replace(" ", "")
    assert "<b>reader</b>" in clean
    assert "styled" in clean and "cell" in clean


def test_style_elements_kept_only_when_they_load_nothing() -> None:
    """A <style> with plain rules and @media stays; one with url(), @import, @font-face,
    image-set(), an escape or a "<" goes whole."""
    html = (
        "<style>/* c */ p { color: red } @media (max-width: 600px) { td { display: block } }"
        "</style>"
        "<style>input[value^=a] { background: url(http://evil.example/a) }</style>"
        '<style>@import "http://evil.example/s.css";</style>'
        "<style>@font-face { font-family: x; src: local(y) }</style>"
        '<style>p { background: image-set("http://evil.example/i.png" 1x) }</style>'
        "<style>p { background: u\\72l(http://evil.example/e) }</style>"
        "<style>a { color: red }</sty</style>"
        "<p>hi</p>"
    )
    clean, _ = render.sanitize_html(html)
    assert clean.startswith("<style>p { color: red } @media (max-width: 600px)")
    assert clean.count("<style>") == 1
    assert "evil.example" not in clean and "font-face" not in clean and "/* c */" not in clean
    assert clean.endswith("<p>hi</p>")


def test_many_unclosed_style_tags_are_linear() -> None:
    """Hostile repetition of ``<style`` without ``>`` or ``</style`` is one linear pass."""
    clean, _ = render.sanitize_html("<style" * 200_000)
    assert "<style" not in clean
    clean, _ = render.sanitize_html("<style>" * 200_000)
    assert "<style" not in clean


def test_images_allowed_on_request() -> None:
    """``images=True`` keeps remote images (and nothing else that was unsafe)."""
    clean, blocked = render.sanitize_html(HOSTILE_HTML, images=True)
    assert blocked == 0
    assert 'src="http://tracker.example/pixel.gif"' in clean
    assert 'src="https://tracker.example/secure.png"' in clean
    assert "onerror" not in clean and "<script" not in clean and "evil.example" not in clean


def test_render_hostile_message() -> None:
    """A whole message: text and sanitised HTML, nothing hostile in any field."""
    rendered = render.render(_hostile_message())
    assert rendered.text is not None and rendered.text.strip() == "plain part"
    assert rendered.html is not None
    assert "<script" not in rendered.html and "alert" not in rendered.html
    assert rendered.remote_images == 2
    assert rendered.attachments == []
    doc = rendered.json()
    assert doc["from"] == [{"name": "Mallory", "address": "mallory@evil.example"}]
    assert doc["subject"] == "hostile"


def _mixed_message() -> bytes:
    message = EmailMessage(policy=SMTP)
    message["From"] = "=?utf-8?q?J=C3=B6rg?= <jorg@example.net>"
    message["To"] = "alice@example.org, Bob <bob@example.org>"
    message["Subject"] = "=?iso-8859-1?q?Gr=FC=DFe?= from Jörg"
    message.set_content("Grüße aus Köln\n", charset="iso-8859-1", cte="quoted-printable")
    message.add_alternative("<p>Grüße <img src='http://x.example/a.png'></p>", subtype="html")
    message.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf",
                           filename="report.pdf")  # fmt: skip
    message.add_attachment(b"\x89PNG\r\n", maintype="image", subtype="png",
                           filename="../../etc/pass\u00e9wd.png")  # fmt: skip
    message.add_attachment("col1,col2\n", subtype="csv", filename="data.csv")
    return message.as_bytes()


def test_render_mixed_message() -> None:
    """Decoded RFC 2047 headers, a Latin-1 text part, the HTML alternative, and each
    attachment with its IMAP part id, decoded bytes and type."""
    data = _mixed_message()
    rendered = render.render(data)
    headers = dict(rendered.headers)
    assert headers["Subject"] == "Grüße from Jörg"
    assert headers["From"].startswith("Jörg")
    assert rendered.text == "Grüße aus Köln\n"
    assert rendered.html is not None and "Grüße" in rendered.html
    assert rendered.remote_images == 1
    parts = {p.filename: p for p in rendered.attachments}
    assert set(parts) == {"report.pdf", "../../etc/passéwd.png", "data.csv"}
    assert parts["report.pdf"].part == "2"
    assert parts["report.pdf"].content_type == "application/pdf"
    found = render.part_bytes(data, parts["report.pdf"].part)
    assert found == (b"%PDF-1.4 fake", "application/pdf", "report.pdf")
    png = render.part_bytes(data, parts["../../etc/passéwd.png"].part)
    assert png is not None and png[0] == b"\x89PNG\r\n"
    csv = render.part_bytes(data, parts["data.csv"].part)
    assert csv is not None and csv[0].replace(b"\r\n", b"\n") == b"col1,col2\n"
    assert render.part_bytes(data, "9") is None
    assert render.part_bytes(data, "1.1.1.1.1") is None
    assert render.part_bytes(data, "../1") is None


def test_html_only_message_gets_a_text_fallback() -> None:
    data = (
        b"From: a@example.org\r\nSubject: html\r\nContent-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(b"<p>Hello&nbsp;<b>world</b></p><script>x()</script>")
    )
    rendered = render.render(data)
    assert rendered.html == "<p>Hello&nbsp;<b>world</b></p>"
    assert rendered.text is not None and "Hello" in rendered.text and "x()" not in rendered.text


def test_unknown_charset_and_encoding_do_not_fail() -> None:
    data = (
        b"Subject: =?x-unknown?q?abc?=\r\nContent-Type: text/plain; charset=x-nonsense\r\n"
        b"Content-Transfer-Encoding: x-weird\r\n\r\nbody \xff\xfe text\r\n"
    )
    rendered = render.render(data)
    assert rendered.text is not None and "body" in rendered.text


def test_safe_filename_and_disposition() -> None:
    assert render.safe_filename("../../etc/passwd") == "passwd"
    assert render.safe_filename("C:\\Windows\\evil.exe") == "evil.exe"
    assert render.safe_filename('a"b\r\nc;d.txt') == "a_b_c_d.txt"
    assert render.safe_filename("...") == "attachment"
    assert render.safe_filename(None, "part-2") == "part-2"
    assert render.safe_filename("\u202etxt.exe") == "txt.exe"  # bidi override dropped
    value = render.content_disposition("résumé.pdf")
    assert value == "attachment; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
    assert render.content_disposition("plain.txt") == 'attachment; filename="plain.txt"'


def test_safe_content_type() -> None:
    assert render.safe_content_type("image/png") == "image/png"
    assert render.safe_content_type("text/html") == "application/octet-stream"
    assert render.safe_content_type("image/svg+xml") == "application/octet-stream"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000))
def test_render_never_raises_on_bytes(data: bytes) -> None:
    """Arbitrary bytes render to something, and every part id listed can be fetched."""
    rendered = render.render(data)
    rendered.json()
    for part in rendered.attachments:
        assert render.part_bytes(data, part.part) is not None


_MIME_PIECES = st.sampled_from([
    b"Content-Type: multipart/mixed; boundary=b\r\n", b"--b\r\n", b"--b--\r\n",
    b"Content-Type: text/html\r\n", b"Content-Type: text/plain; charset=utf-16\r\n",
    b"Content-Transfer-Encoding: base64\r\n", b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Disposition: attachment; filename*=utf-8''%E2%82%AC.txt\r\n",
    b"Content-Type: message/rfc822\r\n", b"\r\n", b"<script>x</script>", b"=C3=A9=\r\n",
    b"<img src=http://e/x onerror=y>", b"QUJD\r\n", b"Subject: =?utf-8?b?w6k=?=\r\n",
])  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(_MIME_PIECES, max_size=40))
def test_render_never_raises_on_mime_like_input(pieces: list[bytes]) -> None:
    """MIME-shaped junk renders; no script or event handler survives in the HTML."""
    rendered = render.render(b"".join(pieces))
    if rendered.html is not None:
        assert "<script" not in rendered.html
        assert not re.search(r"\son\w+=", rendered.html)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=300)))
def test_safe_filename_is_always_safe(name: str | None) -> None:
    """No path separator, quote, control character or leading dot; never empty; the
    Content-Disposition built from it is one ASCII line."""
    safe = render.safe_filename(name)
    assert safe and len(safe) <= 200 and not safe.startswith(".")
    assert not any(c in safe for c in '/\\"\r\n\0')
    assert all(ord(c) >= 0x20 for c in safe)
    value = render.content_disposition(name)
    assert value.isascii() and "\r" not in value and "\n" not in value
