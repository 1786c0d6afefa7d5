"""The bounded-memory parse of large message files (mailserver.store.sketch) gives the same
index record as parsing the whole message."""

from __future__ import annotations

import base64
import io
import random
from pathlib import Path

import pytest

from mailserver.store import sketch
from mailserver.store.mailbox import message_meta


@pytest.fixture
def small_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows of a few hundred octets, so messages of a few KiB are sketched."""
    monkeypatch.setattr(sketch, "SMALL", 0)
    monkeypatch.setattr(sketch, "HEAD", 300)
    monkeypatch.setattr(sketch, "WINDOW", 200)
    monkeypatch.setattr(sketch, "DELIMITER_KEEP", 90)
    monkeypatch.setattr(sketch, "PIECE", 37)


def _b64(data: bytes, nl: bytes) -> bytes:
    text = base64.encodebytes(data).replace(b"\n", nl)
    return text


def _messages(nl: bytes) -> list[bytes]:
    rnd = random.Random(7)
    blob = bytes(rnd.randrange(256) for _ in range(6000))
    text = nl.join(
        ("x" * rnd.randrange(0, 120)).encode() for _ in range(200)
    )  # empty, short and long lines
    header = b"From: Alice <alice@example.org>" + nl + b"To: bob@example.org" + nl
    header += b"Subject: a test" + nl + b"Message-ID: <m1@example.org>" + nl
    simple = header + b"Content-Type: text/plain" + nl + nl + text + nl
    multipart = (
        header
        + b'Content-Type: multipart/mixed; boundary="zz"'
        + nl
        + nl
        + b"preamble"
        + nl
        + b"--zz"
        + nl
        + b"Content-Type: text/plain"
        + nl
        + nl
        + text
        + nl
        + b"--zz"
        + nl
        + b'Content-Type: application/octet-stream; name="a.bin"'
        + nl
        + b"Content-Transfer-Encoding: base64"
        + nl
        + nl
        + _b64(blob, nl)
        + b"--zz"
        + nl
        + b"Content-Type: message/rfc822"
        + nl
        + nl
        + b"From: carol@example.org"
        + nl
        + b"Subject: inner"
        + nl
        + b'Content-Type: multipart/alternative; boundary="in"'
        + nl
        + nl
        + b"--in"
        + nl
        + nl
        + text
        + nl
        + b"--in--"
        + nl
        + b"--zz--   "
        + nl
        + b"epilogue with -- dashes"
        + nl
        + text
    )
    unterminated = simple + b"a long last line without an ending " * 20
    no_delimiter = header + b'Content-Type: multipart/mixed; boundary="q"' + nl + nl + text
    return [simple, multipart, unterminated, no_delimiter, multipart + b"\r"]


@pytest.mark.parametrize("nl", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_sketched_meta_equals_whole_parse(
    tmp_path: Path, nl: bytes, small_windows: None
) -> None:
    """Structure, offsets, line counts, attachment sizes and envelope from a sketch equal
    those of mime.parse over the whole message, for CRLF and LF-only mail, with long lines
    read in pieces, a missing final line ending and a multipart without delimiters."""
    for number, data in enumerate(_messages(nl)):
        path = tmp_path / f"m{number}"
        path.write_bytes(data)
        sketched, _ = sketch.sketch(io.BytesIO(data))
        assert len(sketched) < len(data)
        assert sketch.file_meta(str(path)) == message_meta(data), number


def test_sketch_of_large_base64_body_is_small(tmp_path: Path) -> None:
    """With the default windows, a 4 MiB base64 attachment sketches to a small fraction of
    the message, and the record still equals the whole parse."""
    blob = random.Random(3).randbytes(3 * 1024 * 1024)
    data = (
        b'From: a@example.org\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--b\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + _b64(blob, b"\r\n")
        + b"--b--\r\n"
    )
    path = tmp_path / "big"
    path.write_bytes(data)
    with open(path, "rb") as source:
        sketched, _ = sketch.sketch(source)
    assert len(sketched) < len(data) // 10
    assert sketch.file_meta(str(path)) == message_meta(data)


@pytest.mark.parametrize("nl", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_meta_of_bytes_in_memory_equals_meta_of_the_file(tmp_path: Path, nl: bytes) -> None:
    """data_meta (a small message parsed from the bytes delivery just wrote) gives what
    file_meta gives for the file holding those bytes."""
    for number, data in enumerate(_messages(nl)):
        path = tmp_path / f"m{number}"
        path.write_bytes(data)
        assert sketch.data_meta(data) == sketch.file_meta(str(path)), number
