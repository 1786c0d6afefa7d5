"""Tests for the byte-offset-exact MIME structure parser."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailserver.message.headers import strip_mbox_from
from mailserver.message.mime import (
    MAX_DEPTH,
    MAX_PARTS,
    parse,
    parse_content_disposition,
    parse_content_type,
)


def body_of(data: bytes, node: dict) -> bytes:
    """The encoded body bytes a node's offsets point at."""
    return data[node["body_offset"] : node["body_offset"] + node["body_length"]]


def header_of(data: bytes, node: dict) -> bytes:
    """The header bytes (blank line included) a node's offsets point at."""
    return data[node["header_offset"] : node["body_offset"]]


def check_offsets(data: bytes, node: dict) -> int:
    """Assert every node's offsets lie within data and nest; return the node count."""
    assert 0 <= node["header_offset"] <= node["body_offset"]
    assert node["body_offset"] + node["body_length"] <= len(data)
    assert node["body_length"] >= 0
    count = 1
    for child in node.get("parts", []):
        assert node["body_offset"] <= child["header_offset"]
        assert child["body_offset"] + child["body_length"] <= node["body_offset"] + node["size"]
        count += check_offsets(data, child)
    if "bodystructure" in node:
        assert node["bodystructure"]["header_offset"] == node["body_offset"]
        count += check_offsets(data, node["bodystructure"])
    return count


SIMPLE = (
    b'From: "Alice Example" <alice@example.org>\r\n'
    b'To: bob@example.net, "Carol" <carol@example.com>\r\n'
    b"Subject: =?utf-8?q?Hello_w=C3=B6rld?=\r\n"
    b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.org>\r\n"
    b"In-Reply-To: <0@example.org>\r\n"
    b"\r\n"
    b"Line one\r\n"
    b"Line two\r\n"
)


def test_simple_text_message():
    """A single-part message is one text/plain node spanning the whole body."""
    parsed = parse(SIMPLE)
    node = parsed.bodystructure
    assert parsed.size == len(SIMPLE)
    assert parsed.has_8bit is False
    assert node["type"] == "text" and node["subtype"] == "plain"
    assert node["params"] == {"charset": "us-ascii"}
    assert node["encoding"] == "7bit"
    assert node["header_offset"] == 0
    assert header_of(SIMPLE, node).endswith(b"<0@example.org>\r\n\r\n")
    assert body_of(SIMPLE, node) == b"Line one\r\nLine two\r\n"
    assert node["size"] == 20
    assert node["lines"] == 2
    assert node["id"] is None and node["description"] is None and node["md5"] is None
    assert node["disposition"] is None and node["language"] is None
    assert node["location"] is None
    assert parsed.attachments == []


def test_simple_envelope():
    """The envelope decodes the subject and lists addresses as [name, route, local, domain]."""
    envelope = parse(SIMPLE).envelope
    alice = [["Alice Example", None, "alice", "example.org"]]
    assert envelope == {
        "date": "Mon, 1 Jan 2024 10:00:00 +0000",
        "subject": "Hello wörld",
        "from": alice,
        "sender": alice,
        "reply_to": alice,
        "to": [[None, None, "bob", "example.net"], ["Carol", None, "carol", "example.com"]],
        "cc": None,
        "bcc": None,
        "in_reply_to": "<0@example.org>",
        "message_id": "<1@example.org>",
    }


def test_lf_only_message_sizes_are_of_given_bytes():
    """With LF-only line ends, sizes and line counts are of the bytes as given."""
    data = SIMPLE.replace(b"\r\n", b"\n")
    node = parse(data).bodystructure
    assert body_of(data, node) == b"Line one\nLine two\n"
    assert node["size"] == 18
    assert node["lines"] == 2


def test_unterminated_last_line_counts():
    """A last body line without a line end still counts as a line."""
    data = b"Subject: x\r\n\r\none\r\ntwo"
    node = parse(data).bodystructure
    assert node["lines"] == 2
    assert node["size"] == 8


_BODY_PIECES = st.sampled_from([b"x", b"\r", b"\n", b"\r\n", b"--b", b"\r\n--b\r\n"])


@settings(max_examples=300)
@given(st.lists(_BODY_PIECES).map(b"".join))
def test_text_line_counts_are_the_lines_of_each_body(body):
    """A text leaf's ``lines`` is the number of LFs in its body, plus one for a last line
    without a LF, whether the leaf is the whole message or a part between delimiters."""

    def lines(data: bytes) -> int:
        return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)

    single = b"Subject: x\r\n\r\n" + body
    node = parse(single).bodystructure
    assert node["lines"] == lines(body_of(single, node)) == lines(body)
    multi = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n\r\n' + body
    for part in parse(multi).bodystructure.get("parts", []):
        assert part["lines"] == lines(body_of(multi, part))


@settings(max_examples=200)
@given(
    st.binary(max_size=90),
    st.integers(1, 300),
    st.sampled_from([b"\n", b"\r\n", b"\n\n\n", b""]),
    st.integers(0, 30000),
)
def test_line_counts_of_big_bodies(line, repeat, extra, at):
    """Bodies of many lines, long or short, dense line ends inserted anywhere, with or
    without a last LF: ``lines`` is the number of LFs plus one for an unterminated last
    line, as counted octet by octet."""
    body = (line + b"\n") * repeat
    body = body[:at] + extra + body[at:]
    for text in (body, body + b"tail"):
        data = b"Subject: x\r\n\r\n" + text
        expected = text.count(b"\n") + (not text.endswith(b"\n"))
        assert parse(data).bodystructure["lines"] == expected


ALTERNATIVE = (
    b'Content-Type: multipart/alternative; boundary="b1"\r\n'
    b"MIME-Version: 1.0\r\n"
    b"\r\n"
    b"preamble\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"plain\r\n"
    b"--b1  \r\n"
    b"Content-Type: text/html\r\n"
    b"Content-Transfer-Encoding: Quoted-Printable\r\n"
    b"\r\n"
    b"<p>html</p>\r\n"
    b"--b1x is not a delimiter\r\n"
    b"--b1--\r\n"
    b"epilogue\r\n"
)


def test_multipart_alternative():
    """Parts end before the line break that precedes the next delimiter (RFC 2046 §5.1.1)."""
    parsed = parse(ALTERNATIVE)
    root = parsed.bodystructure
    assert (root["type"], root["subtype"]) == ("multipart", "alternative")
    assert root["params"] == {"boundary": "b1"}
    assert body_of(ALTERNATIVE, root).startswith(b"preamble\r\n--b1\r\n")
    plain, html = root["parts"]
    assert plain["params"] == {"charset": "utf-8"}
    assert header_of(ALTERNATIVE, plain) == b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    assert body_of(ALTERNATIVE, plain) == b"plain"
    assert (plain["size"], plain["lines"]) == (5, 1)
    assert html["subtype"] == "html"
    assert html["encoding"] == "quoted-printable"
    assert html["params"] == {}
    assert body_of(ALTERNATIVE, html) == b"<p>html</p>\r\n--b1x is not a delimiter"
    assert (html["size"], html["lines"]) == (37, 2)
    assert parsed.attachments == []


MIXED = (
    b"From: a@example.org\n"
    b"Content-Type: multipart/mixed; boundary=XyZ\n"
    b"\n"
    b"--XyZ\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"See attached.\n"
    b"--XyZ\n"
    b'Content-Type: application/pdf; name="fallback.pdf"\n'
    b"Content-Transfer-Encoding: base64\n"
    b"Content-Disposition: attachment;\n"
    b" filename*0*=UTF-8''%E2%82%AC%20rates;\n"
    b' filename*1=".pdf"; size=21\n'
    b"Content-ID: <pdf@example.org>\n"
    b"Content-Language: en, de\n"
    b"Content-Location: http://example.org/rates.pdf\n"
    b"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n"
    b"\n"
    b"JVBERi0xLjQK\n"
    b"JSVFT0YK\n"
    b"--XyZ--\n"
)


def test_multipart_mixed_base64_attachment_with_rfc2231_filename():
    """A base64 attachment is located exactly and its RFC 2231 file name is decoded."""
    parsed = parse(MIXED)
    text, pdf = parsed.bodystructure["parts"]
    assert body_of(MIXED, text) == b"See attached."
    assert body_of(MIXED, pdf) == b"JVBERi0xLjQK\nJSVFT0YK"
    assert pdf["size"] == 21
    assert pdf["lines"] is None
    assert pdf["encoding"] == "base64"
    assert pdf["disposition"] == ["attachment", {"filename": "€ rates.pdf", "size": "21"}]
    assert pdf["id"] == "<pdf@example.org>"
    assert pdf["language"] == ["en", "de"]
    assert pdf["location"] == "http://example.org/rates.pdf"
    assert pdf["md5"] == "Q2hlY2sgSW50ZWdyaXR5IQ=="
    assert parsed.attachments == [
        {
            "part": "2",
            "filename": "€ rates.pdf",
            "content_type": "application/pdf",
            "size": 21,
            "encoding": "base64",
        }
    ]


NESTED = (
    b"From: outer@example.org\n"
    b"Subject: fwd\n"
    b'Content-Type: multipart/mixed; boundary="outer"\n'
    b"\n"
    b"--outer\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"see below\n"
    b"--outer\n"
    b"Content-Type: message/rfc822\n"
    b"Content-Description: =?utf-8?q?weitergeleitet_=C3=BC?=\n"
    b"\n"
    b"From: Inner <inner@example.org>\n"
    b"Reply-To: replies@example.org\n"
    b"Subject: inner subject\n"
    b'Content-Type: multipart/alternative; boundary="inner"\n'
    b"\n"
    b"--inner\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"inner text\n"
    b"--inner\n"
    b'Content-Type: image/png; name="pic.png"\n'
    b"Content-Transfer-Encoding: base64\n"
    b"\n"
    b"iVBORw0KGgo=\n"
    b"--inner--\n"
    b"--outer--\n"
)


def test_nested_message_rfc822():
    """An encapsulated message carries its own envelope and offset-exact body structure."""
    parsed = parse(NESTED)
    text, message = parsed.bodystructure["parts"]
    assert body_of(NESTED, text) == b"see below"
    assert (message["type"], message["subtype"]) == ("message", "rfc822")
    assert message["description"] == "weitergeleitet ü"
    inner_bytes = body_of(NESTED, message)
    assert inner_bytes.startswith(b"From: Inner <inner@example.org>\n")
    assert inner_bytes.endswith(b"iVBORw0KGgo=\n--inner--")
    assert message["size"] == len(inner_bytes)
    assert message["lines"] == inner_bytes.count(b"\n") + 1
    envelope = message["envelope"]
    assert envelope["subject"] == "inner subject"
    assert envelope["from"] == [["Inner", None, "inner", "example.org"]]
    assert envelope["sender"] == envelope["from"]
    assert envelope["reply_to"] == [[None, None, "replies", "example.org"]]
    inner = message["bodystructure"]
    assert inner["header_offset"] == message["body_offset"]
    assert (inner["type"], inner["subtype"]) == ("multipart", "alternative")
    inner_text, image = inner["parts"]
    assert body_of(NESTED, inner_text) == b"inner text"
    assert body_of(NESTED, image) == b"iVBORw0KGgo="
    assert image["params"] == {"name": "pic.png"}
    assert [a["part"] for a in parsed.attachments] == ["2"]
    assert parsed.attachments[0]["content_type"] == "message/rfc822"
    assert parsed.envelope["subject"] == "fwd"


def test_eight_bit_headers():
    """Raw UTF-8 and latin-1 header bytes decode, groups are kept, and has_8bit is set."""
    data = (
        b"From: J\xc3\xb6rg <j\xc3\xb6rg@example.de>\n"
        b"Subject: caf\xe9\n"
        b"To: undisclosed-recipients:;\n"
        b"Cc: Team: a@example.org, B <b@example.org>;\n"
        b"\n"
        b"Gr\xc3\xbc\xc3\x9fe\n"
    )
    parsed = parse(data)
    assert parsed.has_8bit is True
    envelope = parsed.envelope
    assert envelope["subject"] == "café"
    assert envelope["from"] == [["Jörg", None, "jörg", "example.de"]]
    assert envelope["to"] == [[None, None, "undisclosed-recipients", None], [None] * 4]
    assert envelope["cc"] == [
        [None, None, "Team", None],
        [None, None, "a", "example.org"],
        ["B", None, "b", "example.org"],
        [None] * 4,
    ]
    assert parsed.bodystructure["size"] == len("Grüße\n".encode())


def test_envelope_absent_fields_are_none():
    """Without From, Sender and Reply-To are None as well, and an explicit Sender is used."""
    assert parse(b"Subject: x\n\n").envelope["sender"] is None
    envelope = parse(b"From: a@x\nSender: s@x\n\n").envelope
    assert envelope["sender"] == [[None, None, "s", "x"]]
    assert envelope["reply_to"] == [[None, None, "a", "x"]]
    assert envelope["date"] is None and envelope["message_id"] is None


def test_missing_closing_boundary_runs_to_end():
    """Without a close delimiter the last part runs to the end of its parent."""
    data = (
        b"Content-Type: multipart/mixed; boundary=b\n\n"
        b"--b\n\nA\n"
        b"--b\nContent-Type: text/html\n\nlast\n"
    )
    first, last = parse(data).bodystructure["parts"]
    assert body_of(data, first) == b"A"
    assert header_of(data, first) == b"\n"
    assert body_of(data, last) == b"last\n"
    assert last["body_offset"] + last["body_length"] == len(data)


@pytest.mark.parametrize("content_type", [b"multipart/mixed", b'multipart/mixed; boundary=""'])
def test_multipart_without_boundary_is_text(content_type):
    """A multipart without a usable boundary is described as text/plain."""
    data = b"Content-Type: " + content_type + b"\n\nsome text\n"
    node = parse(data).bodystructure
    assert (node["type"], node["subtype"]) == ("text", "plain")
    assert node["params"] == {"charset": "us-ascii"}
    assert body_of(data, node) == b"some text\n"


def test_multipart_without_delimiters_has_one_headerless_part():
    """A multipart body with no delimiter line is one headerless text/plain part."""
    data = b"Content-Type: multipart/alternative; boundary=zz\n\nno parts here\n"
    root = parse(data).bodystructure
    (part,) = root["parts"]
    assert part["header_offset"] == part["body_offset"] == root["body_offset"]
    assert body_of(data, part) == b"no parts here\n"
    assert (part["type"], part["subtype"]) == ("text", "plain")


@pytest.mark.parametrize("content_type", [b"garbage", b"text", b"/html", b"te xt/plain", b""])
def test_bogus_content_type_is_text_plain(content_type):
    """An unparseable Content-Type is text/plain; charset=us-ascii (RFC 2045 §5.2)."""
    node = parse(b"Content-Type: " + content_type + b"\n\nbody\n").bodystructure
    assert (node["type"], node["subtype"], node["params"]) == (
        "text",
        "plain",
        {"charset": "us-ascii"},
    )


def test_digest_children_default_to_message_rfc822():
    """Parts of a multipart/digest without Content-Type are message/rfc822 (RFC 2046 §5.1.5)."""
    data = (
        b"Content-Type: multipart/digest; boundary=d\n\n"
        b"--d\n\nSubject: one\n\nfirst\n"
        b"--d\nContent-Type: text/plain\n\nnot a message\n"
        b"--d--\n"
    )
    first, second = parse(data).bodystructure["parts"]
    assert (first["type"], first["subtype"]) == ("message", "rfc822")
    assert first["envelope"]["subject"] == "one"
    assert body_of(data, first["bodystructure"]) == b"first"
    assert (second["type"], second["subtype"]) == ("text", "plain")


def test_depth_is_capped():
    """Containers nested deeper than MAX_DEPTH are described as leaves."""
    levels = MAX_DEPTH + 8
    data = b""
    for level in range(levels):
        data += b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (level, level)
    data += b"Content-Type: text/plain\n\ndeep\n"
    node = parse(data).bodystructure
    depth = 0
    while "parts" in node:
        node = node["parts"][0]
        depth += 1
    assert depth == MAX_DEPTH
    assert (node["type"], node["subtype"]) == ("multipart", "mixed")
    assert body_of(data, node).endswith(b"deep\n")


def test_part_count_is_capped():
    """After MAX_PARTS parts, further delimiters are ignored and the last part runs to the end."""
    data = b"Content-Type: multipart/mixed; boundary=a\n\n" + b"--a\n\nx\n" * (MAX_PARTS + 5)
    parts = parse(data).bodystructure["parts"]
    assert len(parts) == MAX_PARTS
    assert body_of(data, parts[0]) == b"x"
    assert parts[-1]["body_offset"] + parts[-1]["body_length"] == len(data)
    assert body_of(data, parts[-1]).startswith(b"x\n--a\n")


def test_encoded_message_rfc822_is_a_leaf():
    """A base64-encoded message/rfc822 cannot be described from its bytes and stays a leaf."""
    data = b"Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\nU3ViamVjdDogeAoK\n"
    node = parse(data).bodystructure
    assert "bodystructure" not in node and "envelope" not in node
    assert node["lines"] == 1


def test_single_part_attachment_is_part_one():
    """A message whose whole body is a non-text part lists it as attachment part "1"."""
    data = (
        b"Content-Type: application/octet-stream\n"
        b'Content-Disposition: attachment; filename="=?utf-8?q?r=C3=A9sum=C3=A9.bin?="\n'
        b"\n"
        b"\x00\x01\x02"
    )
    assert parse(data).attachments == [
        {
            "part": "1",
            "filename": "résumé.bin",
            "content_type": "application/octet-stream",
            "size": 3,
            "encoding": "7bit",
        }
    ]


def test_content_type_parameters():
    """Parameters are lower-cased names with quoted, RFC 2231 and latin-1 values decoded."""
    assert parse_content_type(
        b"Text/HTML; Charset=\"UTF-8\"; name*=iso-8859-1''caf%E9.txt; (comment) format=flowed"
    ) == ("text", "html", {"charset": "UTF-8", "name": "café.txt", "format": "flowed"})
    assert parse_content_type(b'text/plain; name="a;b"; broken; x=1') == (
        "text",
        "plain",
        {"name": "a;b", "x": "1"},
    )
    assert parse_content_type(b"text/plain; title*1=b; title*0=a") == (
        "text",
        "plain",
        {"title": "ab"},
    )
    assert parse_content_disposition(b"Inline") == ["inline", {}]
    assert parse_content_disposition(b"") is None
    assert parse_content_disposition(None) is None


def test_result_is_json_serialisable():
    """Envelope, body structure and attachments survive a JSON round trip unchanged."""
    for data in (SIMPLE, ALTERNATIVE, MIXED, NESTED):
        parsed = parse(data)
        payload = [parsed.envelope, parsed.bodystructure, parsed.attachments]
        assert json.loads(json.dumps(payload, ensure_ascii=False)) == payload


@given(st.binary(max_size=2000))
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_parse_never_raises_on_random_bytes(data):
    """parse accepts any bytes and keeps every offset within the data."""
    parsed = parse(data)
    assert parsed.size == len(data)
    check_offsets(data, parsed.bodystructure)
    json.dumps([parsed.envelope, parsed.bodystructure, parsed.attachments])


_FRAGMENTS = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=a",
        b"Content-Type: multipart/digest; boundary=b",
        b'Content-Type: multipart/alternative; boundary="a"',
        b"Content-Type: message/rfc822",
        b"Content-Type: text/plain; name*0*=utf-8''%FF; name*1=x",
        b"Content-Disposition: attachment; filename=x",
        b"Content-Transfer-Encoding: base64",
        b"From: A <a@b>, (c) d@, :;<>",
        b"Subject: =?utf-8?b?@@?= =?x?q?=FF?=",
        b"--a",
        b"--a--",
        b"--b",
        b"--b--",
        b"",
        b" folded",
        b"text \xff\xfe",
        b"\r",
    ]
)


@given(st.lists(_FRAGMENTS, max_size=40), st.sampled_from([b"\n", b"\r\n"]))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_parse_never_raises_on_mime_like_input(lines, newline):
    """parse accepts arbitrary mixtures of MIME headers and boundaries with sane offsets."""
    data = newline.join(lines)
    parsed = parse(data)
    check_offsets(data, parsed.bodystructure)
    for attachment in parsed.attachments:
        assert 0 <= attachment["size"] <= len(data)
    json.dumps([parsed.envelope, parsed.bodystructure, parsed.attachments])


def _corpus_dir() -> Path:
    """The shared corpus directory: $MAILSERVER_SHARED/corpus, else ../shared/corpus next to
    the checkout."""
    shared = os.environ.get("MAILSERVER_SHARED")
    if shared:
        return Path(shared) / "corpus"
    return Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus"


@pytest.mark.parametrize("tarball", ["ham-train.tar.gz", "spam-train.tar.gz"])
def test_corpus_parses(tarball):
    """Every message of the shared spam/ham corpus parses with offsets inside the message."""
    path = _corpus_dir() / tarball
    if not path.exists():
        pytest.skip(f"corpus not available: {path} (set MAILSERVER_SHARED to the shared folder)")
    count = 0
    with tarfile.open(path) as archive:
        for member in archive:
            if not member.isfile():
                continue
            handle = archive.extractfile(member)
            assert handle is not None
            data = strip_mbox_from(handle.read())
            parsed = parse(data)
            assert parsed.size == len(data), member.name
            check_offsets(data, parsed.bodystructure)
            json.dumps([parsed.envelope, parsed.bodystructure, parsed.attachments])
            count += 1
    assert count > 1000


def test_pathological_headers_parse_in_linear_time():
    """Huge headers full of separators, colons and quotes parse quickly (no quadratic scans)."""
    size = 100_000
    data = (
        b"Content-Type: text/plain" + b";a" * size + b"=b\n"
        b"Content-Disposition: attachment" + b'; x="' * size + b"\n"
        b"To: a@" + b":" * size + b"\n"
        b"Cc: " + b"(" * size + b"\n"
        b"Subject: " + b"=?x?q?" * size + b"\n"
        b"\n" + b"--" * size
    )
    parsed = parse(data)
    assert parsed.size == len(data)
    check_offsets(data, parsed.bodystructure)
