"""ENVELOPE, BODY and BODYSTRUCTURE from the store's cached structures (RFC 9051 §7.5.2)."""

from __future__ import annotations

import datetime as dt

from mailserver.imap import response as r
from mailserver.message.mime import parse


def _text_node(params, size, lines, **extra) -> dict:
    node = {"type": "text", "subtype": "plain", "params": params, "id": None,
            "description": None, "encoding": "7bit", "size": size, "lines": lines, "md5": None,
            "disposition": None, "language": None, "location": None}  # fmt: skip
    node.update(extra)
    return node


# -- the RFC's own examples, from hand-built cached structures ---------------------------------

RFC_ENVELOPE = {
    "date": "Wed, 17 Jul 1996 02:23:25 -0700 (PDT)",
    "subject": "IMAP4rev1 WG mtg summary and minutes",
    "from": [["Terry Gray", None, "gray", "cac.washington.edu"]],
    "sender": [["Terry Gray", None, "gray", "cac.washington.edu"]],
    "reply_to": [["Terry Gray", None, "gray", "cac.washington.edu"]],
    "to": [[None, None, "imap", "cac.washington.edu"]],
    "cc": [
        [None, None, "minutes", "CNRI.Reston.VA.US"],
        ["John Klensin", None, "KLENSIN", "MIT.EDU"],
    ],
    "bcc": None,
    "in_reply_to": None,
    "message_id": "<B27397-0100000@cac.washington.edu>",
}


def test_rfc_fetch_example():
    """The FETCH response example of RFC 9051 §7.5.2 (RFC 3501 §7.4.2), byte for byte."""
    body = _text_node({"charset": "US-ASCII"}, 3028, 92)
    pdt = dt.timezone(dt.timedelta(hours=-7))
    line = r.fetch(
        12,
        [
            ("FLAGS", r.flag_list(["\\Seen"])),
            ("INTERNALDATE", r.date_time(dt.datetime(1996, 7, 17, 2, 44, 25, tzinfo=pdt))),
            ("RFC822.SIZE", b"4286"),
            ("ENVELOPE", r.envelope(RFC_ENVELOPE)),
            ("BODY", r.body_structure(body, extended=False)),
        ],
    )
    assert line == (
        b'* 12 FETCH (FLAGS (\\Seen) INTERNALDATE "17-Jul-1996 02:44:25 -0700" '
        b'RFC822.SIZE 4286 ENVELOPE ("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" '
        b'"IMAP4rev1 WG mtg summary and minutes" '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'((NIL NIL "imap" "cac.washington.edu")) '
        b'((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) '
        b'NIL NIL "<B27397-0100000@cac.washington.edu>") '
        b'BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92))\r\n'
    )


def test_rfc_two_part_example():
    """RFC 9051 §7.5.2: "a two part message consisting of a text and a BASE64-encoded text
    attachment"."""
    node = {
        "type": "multipart",
        "subtype": "mixed",
        "params": {"boundary": "x"},
        "parts": [
            _text_node({"charset": "US-ASCII"}, 1152, 23),
            _text_node(
                {"charset": "US-ASCII", "name": "cc.diff"},
                4554,
                73,
                id="<960723163407.20117h@cac.washington.edu>",
                description="Compiler diff",
                encoding="base64",
            ),
        ],
    }
    assert r.body_structure(node, extended=False) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)'
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") '
        b'"<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73) "MIXED")'
    )


def test_group_syntax_in_envelope():
    """RFC 9051 §7.5.2: a group is a NIL-host start entry and an all-NIL end entry."""
    env = {"to": [[None, None, "undisclosed-recipients", None], [None, None, None, None]]}
    assert r.envelope(env) == (
        b'(NIL NIL NIL NIL NIL ((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) '
        b"NIL NIL NIL NIL)"
    )


# -- real messages through mailserver.message.mime ---------------------------------------------

SIMPLE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: Hello\r\n"
    b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.org>\r\n"
    b"\r\n"
    b"Line one\r\n"
    b"Line two\r\n"
)

ALTERNATIVE = (
    b"From: a@example.org\r\n"
    b"Subject: alt\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="XX"\r\n'
    b"\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Hi=\r\n"
    b"there\r\n"
    b"--XX\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>Hi there</p>\r\n"
    b"--XX--\r\n"
)

FORWARD = (
    b"From: a@example.org\r\n"
    b"Subject: fwd\r\n"
    b"Content-Type: multipart/mixed; boundary=BB\r\n"
    b"\r\n"
    b"--BB\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"See attached.\r\n"
    b"--BB\r\n"
    b"Content-Type: message/rfc822\r\n"
    b'Content-Disposition: attachment; filename="fwd.eml"\r\n'
    b"\r\n"
    b"From: Carol <carol@example.com>\r\n"
    b"Subject: Inner\r\n"
    b"\r\n"
    b"Inner body\r\n"
    b"--BB--\r\n"
)

ALICE = b'(("Alice" NIL "alice" "example.org"))'
CAROL = b'(("Carol" NIL "carol" "example.com"))'


def test_simple_text_message():
    parsed = parse(SIMPLE)
    assert r.body_structure(parsed.bodystructure) == (
        b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 20 2 NIL NIL NIL NIL)'
    )
    assert r.body_structure(parsed.bodystructure, extended=False) == (
        b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 20 2)'
    )
    assert r.envelope(parsed.envelope) == (
        b'("Mon, 1 Jan 2024 10:00:00 +0000" "Hello" '
        + ALICE + b" " + ALICE + b" " + ALICE
        + b' ((NIL NIL "bob" "example.net")) NIL NIL NIL "<1@example.org>")'
    )  # fmt: skip


def test_multipart_alternative():
    """Parts are concatenated without a space; the subtype and multipart extension data
    follow (RFC 9051 §7.5.2 body-type-mpart)."""
    structure = parse(ALTERNATIVE).bodystructure
    assert r.body_structure(structure) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 10 2 NIL NIL NIL NIL)'
        b'("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "7BIT" 15 1 NIL NIL NIL NIL) '
        b'"ALTERNATIVE" ("BOUNDARY" "XX") NIL NIL NIL)'
    )
    assert r.body_structure(structure, extended=False) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 10 2)'
        b'("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "7BIT" 15 1) "ALTERNATIVE")'
    )


def test_message_rfc822_part():
    """A message/rfc822 part carries the inner ENVELOPE, BODYSTRUCTURE and its line count."""
    structure = parse(FORWARD).bodystructure
    inner_envelope = (
        b'(NIL "Inner" ' + CAROL + b" " + CAROL + b" " + CAROL + b" NIL NIL NIL NIL NIL)"
    )
    assert r.body_structure(structure) == (
        b'(("TEXT" "PLAIN" NIL NIL NIL "7BIT" 13 1 NIL NIL NIL NIL)'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 61 '
        + inner_envelope
        + b' ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 10 1 NIL NIL NIL NIL) 4 '
        b'NIL ("ATTACHMENT" ("FILENAME" "fwd.eml")) NIL NIL) '
        b'"MIXED" ("BOUNDARY" "BB") NIL NIL NIL)'
    )
    assert r.body_structure(structure, extended=False) == (
        b'(("TEXT" "PLAIN" NIL NIL NIL "7BIT" 13 1)'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 61 '
        + inner_envelope
        + b' ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 10 1) 4) "MIXED")'
    )


def test_encoded_message_rfc822_is_a_basic_part():
    """A base64 message/rfc822 cannot be described inside: it is a basic body part."""
    data = (
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"RnJvbTogeEB5DQoNCmhp\r\n"
    )
    assert r.body_structure(parse(data).bodystructure) == (
        b'("MESSAGE" "RFC822" NIL NIL NIL "BASE64" 22 NIL NIL NIL NIL)'
    )


def test_language_location_and_md5():
    data = (
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"Content-Language: en, de\r\n"
        b"Content-Location: http://example.org/a.txt\r\n"
        b"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n"
        b"Content-Description: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        b"\r\nx"
    )
    structure = parse(data).bodystructure
    assert r.body_structure(structure, utf8=True) == (
        b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL "Gr\xc3\xbc\xc3\x9fe" "7BIT" 1 1 '
        b'"Q2hlY2sgSW50ZWdyaXR5IQ==" NIL ("en" "de") "http://example.org/a.txt")'
    )
    # A client without UTF-8 gets the description back as an RFC 2047 encoded-word.
    assert b'"=?utf-8?b?R3LDvMOfZQ==?="' in r.body_structure(structure)


def test_non_ascii_strings_for_clients_without_utf8():
    """Display names and subjects become encoded-words; parameters use RFC 2231 (``NAME*``);
    a UTF-8 client gets UTF-8 quoted strings."""
    data = (
        "From: J\u00f6rg <j@example.org>\r\nSubject: Gr\u00fc\u00dfe\r\n"
        'Content-Type: application/pdf; name="r\u00e9sum\u00e9.pdf"\r\n\r\nx'
    ).encode()
    parsed = parse(data)
    legacy = r.envelope(parsed.envelope)
    assert b'"=?utf-8?b?R3LDvMOfZQ==?="' in legacy
    assert b'(("=?utf-8?b?SsO2cmc=?=" NIL "j" "example.org"))' in legacy
    assert legacy.isascii()
    assert b'"Gr\xc3\xbc\xc3\x9fe"' in r.envelope(parsed.envelope, utf8=True)
    assert r.body_structure(parsed.bodystructure) == (
        b'("APPLICATION" "PDF" ("NAME*" "utf-8\'\'r%C3%A9sum%C3%A9.pdf") NIL NIL "7BIT" 1 '
        b"NIL NIL NIL NIL)"
    )
    assert b'("NAME" "r\xc3\xa9sum\xc3\xa9.pdf")' in r.body_structure(
        parsed.bodystructure, utf8=True
    )


def test_eight_bit_address_goes_as_literal():
    """An SMTPUTF8 local part cannot be encoded: a client without UTF-8 gets a literal."""
    env = {"from": [[None, None, "j\u00f6rg", "example.org"]]}
    assert b'((NIL NIL {5}\r\nj\xc3\xb6rg "example.org"))' in r.envelope(env)
    assert b'((NIL NIL "j\xc3\xb6rg" "example.org"))' in r.envelope(env, utf8=True)
