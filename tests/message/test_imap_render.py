"""The IMAP items rendered at delivery (mailserver.message.imap_render) are byte for byte what
the IMAP server's own serialiser (mailserver.imap.response) sends, for the shared corpus and
for generated MIME; the stored form reads back to the same items."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailserver.imap import response
from mailserver.message import imap_render
from mailserver.message.headers import strip_mbox_from
from mailserver.message.mime import parse
from tests.strategies.mime import messages, mime_noise


def _corpus_dir() -> Path:
    shared = os.environ.get("MAILSERVER_SHARED")
    if shared:
        return Path(shared) / "corpus"
    return Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus"


def _check(data: bytes) -> None:
    """Every stored item of ``data`` equals the IMAP serialiser's rendering of its parse
    results, for a client with and without UTF8=ACCEPT, and survives pack/unpack."""
    parsed = parse(data)
    meta = {"envelope": parsed.envelope, "bodystructure": parsed.bodystructure}
    items = imap_render.render(meta)
    assert items is not None
    stored = imap_render.unpack(imap_render.pack(items))
    assert stored == items
    # The stored form: the three items, then each UTF-8 variant that differs, in that order.
    names = ["ENVELOPE", "BODYSTRUCTURE", "BODY"]
    variants = [name for name in names if name + "/utf8" in items]
    assert list(items) == names + [name + "/utf8" for name in variants]
    assert all(items[name + "/utf8"] != items[name] for name in variants)
    for utf8 in (False, True):
        expected = {
            "ENVELOPE": response.envelope(parsed.envelope, utf8=utf8),
            "BODYSTRUCTURE": response.body_structure(parsed.bodystructure, utf8=utf8),
            "BODY": response.body_structure(parsed.bodystructure, extended=False, utf8=utf8),
        }
        for name, value in expected.items():
            assert imap_render.item(stored, name, utf8) == value, (name, utf8)


@pytest.mark.parametrize("tarball", ["ham-train.tar.gz", "spam-train.tar.gz"])
def test_corpus_renders_as_the_imap_serialiser_does(tarball):
    """Every message of the shared corpus: the stored ENVELOPE, BODYSTRUCTURE and BODY equal
    mailserver.imap.response's, for UTF-8 and non-UTF-8 clients."""
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
            _check(strip_mbox_from(handle.read()))
            count += 1
    assert count > 1000


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_generated_mime_renders_as_the_imap_serialiser_does(generated):
    """Generated MIME trees (nested multiparts, message/rfc822, parameters) render alike."""
    data, _entity = generated
    _check(data)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(mime_noise())
def test_broken_mime_renders_as_the_imap_serialiser_does(data):
    """Near-MIME noise (broken parameters, RFC 2231, digests) renders alike."""
    _check(data)


@settings(max_examples=200)
@given(
    st.text(max_size=80),
    st.text(max_size=40),
    st.binary(max_size=40),
)
def test_eight_bit_header_text_renders_as_the_imap_serialiser_does(subject, name, raw):
    """Non-ASCII subjects and display names, quotes, backslashes, CR/LF/NUL and raw 8-bit
    octets: quoted, literal, encoded-word and RFC 2231 forms are chosen alike."""
    data = (
        b"From: " + name.replace("\r", "").replace("\n", "").encode("utf-8", "replace")
        + b" <a@example.org>\r\nSubject: " + subject.replace("\r", "").replace("\n", "").encode()
        + b"\r\nContent-Type: text/plain; name=\"" + raw.replace(b"\r", b"").replace(b"\n", b"")
        + b"\"\r\n\r\nbody\r\n"
    )
    _check(data)


def test_utf8_variant_is_stored_only_when_it_differs():
    """An all-ASCII message stores one form of each item; an 8-bit subject adds the UTF-8
    ENVELOPE apart, and a UTF-8 client gets it while another gets encoded words."""
    plain = imap_render.render(
        {"envelope": parse(b"Subject: hi\r\n\r\nx\r\n").envelope,
         "bodystructure": parse(b"Subject: hi\r\n\r\nx\r\n").bodystructure}
    )
    assert plain is not None and set(plain) == {"ENVELOPE", "BODYSTRUCTURE", "BODY"}
    data = "Subject: Grüße\r\n\r\nx\r\n".encode()
    parsed = parse(data)
    items = imap_render.render({"envelope": parsed.envelope, "bodystructure": parsed.bodystructure})
    assert items is not None
    assert set(items) == {"ENVELOPE", "BODYSTRUCTURE", "BODY", "ENVELOPE/utf8"}
    assert b"=?utf-8?" in imap_render.item(items, "ENVELOPE", False)
    assert "Grüße".encode() in imap_render.item(items, "ENVELOPE", True)


def test_older_layouts_are_not_rendered():
    """Parse results without body offsets (an older layout) or without an envelope are left
    to the server's own rendering: render gives None."""
    parsed = parse(b"Subject: hi\r\n\r\nx\r\n")
    old = {k: v for k, v in parsed.bodystructure.items() if k != "body_offset"}
    assert imap_render.render({"envelope": parsed.envelope, "bodystructure": old}) is None
    assert imap_render.render({"envelope": {}, "bodystructure": parsed.bodystructure}) is None
    assert imap_render.render({}) is None


@pytest.mark.parametrize("damaged", [b"E\x00\x00", b"E\x00\x00\x00\x09abc", b"X\x00\x00\x00\x00"])
def test_damaged_stored_form_is_refused(damaged):
    """A stored form cut short or with an unknown tag raises ValueError (the index then
    answers as if nothing were stored)."""
    with pytest.raises(ValueError):
        imap_render.unpack(damaged)
