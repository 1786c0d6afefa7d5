"""The tokenizer: headers, MIME decoding, HTML, URLs; never raises, bounded output."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.filter.spam.tokenize import MAX_TOKENS, tokenize


def test_mbox_line_headers_and_body_words():
    """A leading mbox line is not a header; subject and from words carry their prefix."""
    tokens = tokenize(
        b"From someone@x Sat Jan 1 00:00:00 2002\n"
        b"From: John Smith <john@mail.example.com>\nSubject: Cheap Offer NOW\n"
        b"To: a@b.example\n\nHello there friend, price $100 today!!\n"
    )
    assert "subject:cheap" in tokens and "subject:offer" in tokens
    assert "from:name:john" in tokens and "from:domain:mail.example.com" in tokens
    assert "hello" in tokens and "friend" in tokens and "money" in tokens
    assert "punct:bangs" in tokens
    assert not any(token.startswith("hdr:from ") for token in tokens)


def test_skipped_headers_and_corpus_artefacts():
    """Received, Delivered-To, X-Spam-* and the corpus's taint.org never become tokens."""
    tokens = tokenize(
        b"Received: from relay.example (relay.example [192.0.2.1])\n"
        b"Delivered-To: zzzz@spamassassin.taint.org\nX-Spam-Status: Yes, hits=9\n"
        b"From: a@spamassassin.taint.org\nSubject: hi\n\nbody text here\n"
    )
    assert not [t for t in tokens if "taint.org" in t or "received" in t]
    assert not [t for t in tokens if "x-spam" in t or "delivered-to" in t]
    assert "hdr:subject" in tokens


def test_base64_quoted_printable_and_charsets():
    """Encoded parts are decoded; an unknown charset still gives words."""
    encoded = base64.b64encode("Größe wunderbar café".encode()).decode()
    tokens = tokenize(
        b"Subject: =?utf-8?q?caf=C3=A9_special?=\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="XX"\n\n'
        b"--XX\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
        + encoded.encode()
        + b"\n--XX\nContent-Type: text/plain; charset=x-unknown-charset\n"
        b"Content-Transfer-Encoding: quoted-printable\n\nsoft=\nbreak word\n"
        b"--XX\nContent-Type: application/octet-stream; name=run.exe\n"
        b"Content-Disposition: attachment; filename=run.exe\n\nAAAA\n--XX--\n"
    )
    assert "größe" in tokens and "wunderbar" in tokens
    assert "subject:café" in tokens and "subject:charset:utf-8" in tokens
    assert "softbreak" in tokens
    assert "attach:ext:exe" in tokens and "cte:base64" in tokens


def test_html_features_and_urls():
    """HTML gives its text plus tag, colour, hidden-text and URL tokens."""
    tokens = tokenize(
        b"Content-Type: text/html\n\n<html><body><font color=#ffffff>hidden words</font>"
        b"<div style='display:none'>x</div><img src='http://1.2.3.4/a.gif'>"
        b"<a href=\"http://www.shop.example.com/buy/now.html?id=1\">Buy&nbsp;now</a>"
        b"</body></html>\n"
    )
    assert "html:tag:img" in tokens and "html:white-text" in tokens
    assert "html:hidden" in tokens and "url:ip" in tokens
    assert "url:domain:example.com" in tokens and "url:path:buy" in tokens
    assert "buy" in tokens and "hidden" in tokens
    assert not any(token.startswith("<") for token in tokens)


def test_huge_message_is_bounded():
    """A multi-megabyte message gives at most MAX_TOKENS tokens."""
    tokens = tokenize(b"Subject: big\n\n" + b"word%d " * 10 + b"lorem ipsum dolor " * 400_000)
    assert 0 < len(tokens) <= MAX_TOKENS
    assert "len:truncated" in tokens


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_never_raises_on_any_bytes(data):
    """Any bytes give a bounded token list of strings."""
    tokens = tokenize(data)
    assert isinstance(tokens, list) and len(tokens) <= MAX_TOKENS
    assert all(isinstance(token, str) for token in tokens)


_PIECES = st.sampled_from([
    b"From x\n", b"Content-Type: multipart/mixed; boundary=b\n", b"--b\n", b"--b--\n",
    b"Content-Transfer-Encoding: base64\n", b"Content-Type: text/html; charset=bogus\n",
    b"\n", b"<font color=", b"<!--", b"http://", b"=?utf-8?b?", b"?=", b"\xff\xfe", b"===",
    b"Subject: ", b"<a href='", b"@", b"$5", b"\r\n",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=40))
def test_never_raises_on_mime_shaped_junk(pieces):
    """Broken MIME made of the parser's own delimiters never raises."""
    tokens = tokenize(b"".join(pieces))
    assert len(tokens) <= MAX_TOKENS


def test_comments_scripts_and_unclosed_markup():
    """Comments split no words; script/style text is not visible; unclosed openers (a
    quadratic case for lazy regexes) end the visible text instead of hanging."""
    tokens = tokenize(
        b"Content-Type: text/html\n\n<p>fr<!-- x -->ee <script>var secret;</script>shown"
        b"<style>p{color:red}</style> end"
    )
    assert "free" in tokens and "html:comment-in-word" in tokens
    assert "shown" in tokens and "end" in tokens
    assert "secret" not in tokens and "var" not in tokens
    for opener in (b"x<!--", b"<script>", b"<a ", b"<style"):
        tokens = tokenize(b"Content-Type: text/html\n\nbefore " + opener * 100_000)
        assert "before" in tokens and len(tokens) < 100


def test_mailing_list_links_are_one_footer_token():
    """A list's own links (listinfo, archive redirects) name the list, not the message."""
    tokens = tokenize(
        b"Subject: hi\n\nbuy now http://example.com/offer/cheap\n"
        b"https://lists.example.net/lists/listinfo/spamassassin-sightings\n"
        b"http://archive.example.com/redir.php3?list=webmake-talk\n"
    )
    assert tokens.count("url:list-footer") == 2
    assert "url:path:offer" in tokens and "url:host:example.com" in tokens
    assert not any("sightings" in t or "webmake" in t or "lists.example" in t for t in tokens)


def test_header_layout_tokens_name_the_mailer_not_the_content():
    """An unusual spelling of a header name, and the layout of Message-ID and Date (digits,
    upper- and lower-case runs folded), are tokens; the usual spelling adds none."""
    tokens = tokenize(
        b"From: a@b.example\nMiME-Version: 1.0\nContent-Type: text/plain\n"
        b"Message-ID: <3a4b5c$12ab$0a@mail.example>\nDate: Mon, 12 Aug 2002 10:00:00\n"
        b"Subject: hi\n\nhello there\n"
    )
    assert "hdr:spelled:MiME-Version" in tokens and "hdr:mime-version" in tokens
    assert not [t for t in tokens if t in ("hdr:spelled:Content-Type", "hdr:spelled:From")]
    assert "message-id:shape:<9a9a9a$9a$9a@a.a>" in tokens
    assert "date:shape:Aa,_9_Aa_9_9:9:9" in tokens
    other = tokenize(
        b"From: c@d.example\nMessage-ID: <7e8f9a$34cd$1b@other.example>\n"
        b"Date: Tue, 13 Aug 2002 11:22:33\nSubject: hi\n\nhello\n"
    )
    assert "message-id:shape:<9a9a9a$9a$9a@a.a>" in other
    assert "date:shape:Aa,_9_Aa_9_9:9:9" in other


def test_mailing_list_headers_are_not_tokens():
    """The headers a list server adds (List-*, X-Mailman-*, X-BeenThere, Precedence,
    Errors-To, Sender, X-Loop, Mailing-List) give no token: the same message posted to a
    list and sent directly tokenises alike."""
    direct = (
        b"From: Ann <ann@example.com>\nTo: list@lists.example.org\nSubject: cheap offer\n"
        b"Message-ID: <1a2b@example.com>\nDate: Mon, 12 Aug 2002 10:00:00 +0000\n\n"
        b"buy now while stocks last\n"
    )
    posted = direct.replace(
        b"Subject:",
        b"Sender: list-admin@lists.example.org\nErrors-To: list-admin@lists.example.org\n"
        b"X-Mailman-Version: 2.0.13\nPrecedence: bulk\nX-BeenThere: list@lists.example.org\n"
        b"List-Id: The list <list.lists.example.org>\nList-Unsubscribe: <mailto:u@example>\n"
        b"List-Post: <mailto:list@lists.example.org>\nX-Loop: list@lists.example.org\n"
        b"Mailing-List: contact list-help@example.org; run by ezmlm\nSubject:",
    )
    assert tokenize(posted) == tokenize(direct)
    assert "hdr:subject" in tokenize(posted)
