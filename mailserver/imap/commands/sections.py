"""Parts of a message by IMAP section (``BODY[1.2.HEADER]``), decoded parts (``BINARY``) and
the decoded text SEARCH BODY/TEXT looks in.

Sections are cut out of the raw bytes at the offsets of the cached structure
(:mod:`mailserver.message.mime`: every node knows where its header and body start); a
structure without offsets is recomputed from the bytes. Part numbers follow RFC 9051 §6.4.5:
the parts of a multipart are numbered from 1; a message that is not multipart has one part,
``1``, its body; the parts of an attached ``message/rfc822`` are numbered below its own
number, and ``HEADER``/``TEXT`` after a part number apply to such an attached message.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from mailserver.imap.parse_fetch import Section
from mailserver.message import body_text, mime
from mailserver.message.body_text import UnknownEncoding, decode_transfer
from mailserver.message.headers import header_length

__all__ = [
    "UnknownEncoding",
    "binary_part",
    "field_cutter",
    "header_fields",
    "section",
    "structure_of",
    "texts",
]

Node = Mapping[str, Any]
_LINE = re.compile(rb"[^\n]*\n|[^\n]+\Z")


def structure_of(cached: Node, data: bytes | None) -> Node:
    """The cached structure when it has offsets, else the one parsed from ``data``."""
    if "body_offset" in cached or data is None:
        return cached
    return mime.parse(data).bodystructure


def _is_message(node: Node) -> bool:
    return node.get("type") == "message" and isinstance(node.get("bodystructure"), Mapping)


def _locate(root: Node, part: tuple[int, ...]) -> Node | None:
    node = root
    for depth, number in enumerate(part):
        if depth == 0:
            context = root
        elif _is_message(node):
            context = node["bodystructure"]
        elif node.get("parts"):
            context = node
        else:
            return None
        children = context.get("parts")
        if children:
            if number > len(children):
                return None
            node = children[number - 1]
        elif number == 1:
            node = context
        else:
            return None
    return node


def _body(data: bytes, node: Node) -> bytes:
    start = int(node["body_offset"])
    return data[start : start + int(node["body_length"])]


def header_fields(block: bytes, names: tuple[str, ...], exclude: bool) -> bytes:
    """The fields of a header block named (or, with ``exclude``, not named) in ``names``
    (upper-cased), each with its continuation lines, then the blank line (RFC 9051 §6.4.5)."""
    cut = None if exclude else field_cutter(names)
    if cut is not None:  # the common case, in one regex pass
        return cut(block[: header_length(block)])  # up to the first empty line, as below
    return _header_fields(block, names, exclude)


@functools.lru_cache(maxsize=64)
def field_cutter(names: tuple[str, ...]) -> Callable[[bytes], bytes] | None:
    """:func:`header_fields` of ``names`` (not excluded) for a block that ends at its first
    empty line (the form :func:`~mailserver.message.headers.header_length` cuts), or None
    when a name is not ASCII. One regex pass over the block with a line end put in front, so
    every field start follows a ``\n`` (a literal the regex engine scans for); a block that
    ends with a line end (all but a message with neither an empty line nor a final line
    end) has one after every field too, so the fields are group 1 of each match joined by
    ``\n``."""
    if not names or not all(name.isascii() for name in names):
        return None
    pattern = _fields_pattern(names)
    findall, finditer = pattern.findall, pattern.finditer

    def cut(block: bytes) -> bytes:
        if block.endswith(b"\n"):
            fields = findall(b"\n" + block)
            return b"\n".join(fields) + b"\n\r\n" if fields else b"\r\n"
        out = [block[match.start(1) - 1 : match.end(1)] for match in finditer(b"\n" + block)]
        if out and not out[-1].endswith(b"\n"):
            out[-1] += b"\r\n"
        return b"".join(out) + b"\r\n"

    return cut


@functools.lru_cache(maxsize=64)
def _fields_pattern(names: tuple[str, ...]) -> re.Pattern[bytes]:
    """A line end, then (group 1) a field named in ``names`` (ASCII, any case) with its
    continuation lines, up to the line end of its last line."""
    alternatives = b"|".join(re.escape(name.encode("ascii")) for name in names)
    return re.compile(
        rb"\n((?:" + alternatives + rb")[ \t]*:[^\n]*(?:\n[ \t][^\n]*)*)", re.IGNORECASE
    )


def _header_fields(block: bytes, names: tuple[str, ...], exclude: bool) -> bytes:
    """:func:`header_fields` a line at a time."""
    wanted = set(names)
    out: list[bytes] = []
    keep = False
    for line in _LINE.findall(block):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        colon = line.find(b":")
        if colon <= 0:
            keep = False
            continue
        name = line[:colon].rstrip(b" \t").decode("latin-1").upper()
        keep = (name in wanted) != exclude
        if keep:
            out.append(line)
    if out and not out[-1].endswith(b"\n"):
        out[-1] += b"\r\n"
    return b"".join(out) + b"\r\n"


def section(data: bytes, root: Node, spec: Section) -> bytes | None:
    """The octets of ``spec`` in the message ``data`` (structure ``root``), None for a part
    that does not exist."""
    if not spec.part:
        message: Node | None = root
        if spec.text is None:
            return data
    else:
        node = _locate(root, spec.part)
        if node is None:
            return None
        if spec.text is None:
            return _body(data, node)
        if spec.text == "MIME":
            return data[int(node["header_offset"]) : int(node["body_offset"])]
        message = node["bodystructure"] if _is_message(node) else None
        if message is None:
            return b""  # HEADER/TEXT only apply to an attached message
    header = data[int(message["header_offset"]) : int(message["body_offset"])]
    if spec.text == "HEADER":
        return header
    if spec.text == "TEXT":
        return _body(data, message)
    return header_fields(header, spec.fields, exclude=spec.text == "HEADER.FIELDS.NOT")


def binary_part(data: bytes, root: Node, part: tuple[int, ...]) -> bytes | None:
    """``BINARY[part]`` (RFC 3516 §4.2): the part's body decoded; the whole message for
    ``BINARY[]``; None for a part that does not exist."""
    if not part:
        return data
    node = _locate(root, part)
    if node is None:
        return None
    body = _body(data, node)
    if node.get("parts") or _is_message(node):
        return body
    return decode_transfer(body, str(node.get("encoding") or ""))


def texts(data: bytes, root: Node) -> Iterator[str]:
    """The decoded text/* leaves of a message, attached messages included (SEARCH BODY; see
    :mod:`mailserver.message.body_text`)."""
    return body_text.decoded(data, body_text.text_leaves(root))
