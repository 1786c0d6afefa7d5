"""Properties of the MIME structure parser (``mailserver.message.mime.parse``) on generated
messages.

A message built from an entity tree (leaves, multiparts with their own boundaries, attached
messages; CRLF or LF) parses back to that tree, each leaf's body found again through the
node's offsets; for MIME-like noise parse never raises, its offsets stay within the data and
its structure serialises as BODYSTRUCTURE.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings

from mailserver.imap import response
from mailserver.message.mime import parse
from tests.strategies import mime as mst

_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(mst.messages())
def test_messages_parse_to_their_tree(drawn):
    """Types, subtypes, parameters, parts, attached messages and leaf bodies all come back."""
    data, entity = drawn
    parsed = parse(data)
    assert parsed.size == len(data)
    mst.check_against(data, parsed.bodystructure, entity)


def _offsets(node: dict, size: int) -> None:
    assert 0 <= node["header_offset"] <= node["body_offset"]
    assert node["body_offset"] + node["body_length"] <= size
    assert ("parts" in node) == (node["type"] == "multipart") or "id" in node
    for child in node.get("parts", ()):
        assert child["header_offset"] >= node["body_offset"]
        _offsets(child, size)
    if "bodystructure" in node:
        _offsets(node["bodystructure"], size)


@_SETTINGS
@given(mst.mime_noise())
def test_mime_noise_never_raises(data):
    """parse accepts MIME-like noise: offsets in order and within the data, the structure
    JSON-serialisable as it is cached, and BODYSTRUCTURE serialisable for both client kinds."""
    parsed = parse(data)
    _offsets(parsed.bodystructure, len(data))
    cached = [parsed.envelope, parsed.bodystructure, parsed.attachments]
    assert json.loads(json.dumps(cached)) == cached
    for utf8 in (False, True):
        assert response.body_structure(parsed.bodystructure, utf8=utf8).startswith(b"(")
