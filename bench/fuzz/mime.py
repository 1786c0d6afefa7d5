"""The MIME structure parser (``mailserver.message.mime.parse``), down to the FETCH
BODYSTRUCTURE bytes (``mailserver.imap.response.body_structure``).

Documented outcome: never raises; every offset lies within the data (module docstring).
Invariants: a node above ``MAX_DEPTH`` is multipart if and only if it has parts; header, body
and end offsets are ordered; the structure is JSON-serialisable (it is cached in the index).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from bench.fuzz.harness import Target, check
from mailserver.imap import response
from mailserver.message.mime import MAX_DEPTH, parse

SEEDS = (
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\npre\r\n--b\r\nContent-Type: text/plain"
    b"\r\n\r\nhi\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\nx\r\n--b--\r\n",
    b"Content-Type: multipart/alternative; boundary=\"a b\"\n\n--a b\n\nx\n--a b \n\ny",
    b"Content-Type: text/plain; name*0*=utf-8''%E2%82; name*1*=%AC.txt; charset=\"x\\\"y\"\r\n"
    b"Content-Disposition: attachment; filename=\"=?utf-8?q?a=C3=A9?=\"\r\n\r\n",
    b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nFrom: a@b\r\n\r\nx\r\n--d--",
    b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nU3ViamVjdDogeA==",
)


def _walk(node: Mapping[str, object], size: int, depth: int = 0) -> None:
    header, body = node["header_offset"], node["body_offset"]
    length = node["body_length"]
    check(isinstance(header, int) and isinstance(body, int) and isinstance(length, int),
          "offsets are not numbers")  # fmt: skip
    assert isinstance(header, int) and isinstance(body, int) and isinstance(length, int)
    check(0 <= header <= body <= body + length <= size, f"offsets out of order: {node!r}")
    parts = node.get("parts")
    # At MAX_DEPTH a container is a leaf that keeps its type (tests/message/test_mime.py).
    is_multipart = node["type"] == "multipart" and depth < MAX_DEPTH
    check(is_multipart == (parts is not None), f"multipart without parts at depth {depth}")
    for child in parts or ():
        assert isinstance(child, Mapping)
        check(body <= child["header_offset"], "a part starts before its parent's body")  # type: ignore[operator]
        _walk(child, size, depth + 1)
    inner = node.get("bodystructure")
    if isinstance(inner, Mapping):
        _walk(inner, size, depth + 1)


def one_input(data: bytes) -> None:
    parsed = parse(data)
    check(parsed.size == len(data), "size is not the length of the data")
    _walk(parsed.bodystructure, len(data))
    cached = {"b": parsed.bodystructure, "e": parsed.envelope, "a": parsed.attachments}
    check(json.loads(json.dumps(cached)) == cached, "structure not JSON-serialisable as is")
    for utf8 in (False, True):
        wire = response.body_structure(parsed.bodystructure, utf8=utf8)
        check(wire.startswith(b"(") and wire.endswith(b")"), "BODYSTRUCTURE not a list")


TARGET = Target("mime", one_input, SEEDS)
