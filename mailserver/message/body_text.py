"""The decoded text SEARCH BODY and TEXT look in: the text/* leaves of a message's cached
structure, their transfer encoding undone and their charset decoded.

A leaf (only the standard library and :mod:`mailserver.message.headers`), shared by the IMAP
server and the store, which keeps each message's leaves packed (:func:`pack`) so a body
search needs no decoding of the cached structure (issue 6). Guarantees:

1. :func:`text_leaves` lists the leaves in the order SEARCH reads them: every ``text/*``
   leaf, attached messages' included, depth first, each as (body offset, body length,
   transfer encoding, charset); :func:`decoded` turns one into text.
2. :func:`contains` is ``any(wanted in text.casefold() for text in decoded(...))``, answered
   without decoding a leaf whose octets are all ASCII in a charset that maps ASCII to
   itself (then case folding is ASCII lower-casing, and a non-ASCII ``wanted`` cannot be in
   it).
3. :func:`unpack` gives back what :func:`pack` was given; :func:`pack` gives None for
   leaves it cannot hold (a charset or encoding name over 255 octets).
"""

from __future__ import annotations

import binascii
import codecs
import functools
import quopri
import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from mailserver.message.headers import decode_charset

__all__ = [
    "Leaf",
    "UnknownEncoding",
    "contains",
    "decode_transfer",
    "decoded",
    "pack",
    "stored_form",
    "text_leaves",
    "unpack",
]

#: A text leaf: (body offset, body length, transfer encoding, charset).
Leaf = tuple[int, int, str, str]
Node = Mapping[str, Any]

_IDENTITY = frozenset({"7bit", "8bit", "binary", ""})
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
_HEAD = struct.Struct(">QQBB")
#: Codecs (by ``codecs.lookup(...).name``) that decode every ASCII octet to itself.
_ASCII_SAFE = frozenset(
    {"ascii", "utf-8", "utf-8-sig", "koi8-r", "koi8-u", "mac-roman", "cp437", "cp850"}
    | {f"iso8859-{n}" for n in range(1, 17)}
    | {f"cp125{n}" for n in range(9)}
)


class UnknownEncoding(ValueError):
    """A part's Content-Transfer-Encoding cannot be decoded (RFC 3516 ``[UNKNOWN-CTE]``)."""


def decode_transfer(body: bytes, encoding: str) -> bytes:
    """``body`` without its Content-Transfer-Encoding (RFC 2045 §6)."""
    encoding = encoding.lower()
    if encoding in _IDENTITY:
        return body
    if encoding == "base64":
        clean = _NOT_BASE64.sub(b"", body)
        clean = clean[: len(clean) - len(clean) % 4] if len(clean) % 4 == 1 else clean
        try:
            return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
        except binascii.Error as error:
            raise UnknownEncoding(str(error)) from None
    if encoding == "quoted-printable":
        return quopri.decodestring(body)
    raise UnknownEncoding(encoding)


def _is_message(node: Node) -> bool:
    return node.get("type") == "message" and isinstance(node.get("bodystructure"), Mapping)


def text_leaves(root: Node) -> list[Leaf]:
    """The text leaves of a structure with body offsets, in search order."""
    out: list[Leaf] = []
    stack: list[Node] = [root]
    while stack:
        node = stack.pop()
        parts = node.get("parts")
        if parts:
            stack.extend(reversed(parts))
            continue
        if _is_message(node):
            stack.append(node["bodystructure"])
            continue
        if node.get("type") != "text":
            continue
        params = node.get("params") or {}
        out.append(
            (
                int(node["body_offset"]),
                int(node["body_length"]),
                str(node.get("encoding") or ""),
                str(params.get("charset") or "utf-8"),
            )
        )
    return out


def _raw(data: bytes, leaf: Leaf) -> bytes:
    start, length, encoding, _charset = leaf
    body = data[start : start + length]
    try:
        return decode_transfer(body, encoding)
    except UnknownEncoding:
        return body


def decoded(data: bytes, leaves: Sequence[Leaf]) -> Iterator[str]:
    """The text of each leaf of the message ``data``."""
    for leaf in leaves:
        yield decode_charset(_raw(data, leaf), leaf[3])


@functools.lru_cache(maxsize=256)
def _ascii_safe(charset: str) -> bool:
    """True when :func:`decode_charset` gives ASCII octets as themselves in ``charset``:
    a codec that maps ASCII to itself, or one Python does not know (then UTF-8, cp1252 or
    Latin-1 is used)."""
    try:
        return codecs.lookup(charset).name in _ASCII_SAFE
    except (LookupError, ValueError):
        return True


def contains(wanted: str, data: bytes, leaves: Sequence[Leaf]) -> bool:
    """True when a leaf's text holds ``wanted`` (already case-folded), case-insensitively."""
    ascii_wanted = wanted.encode("ascii") if wanted.isascii() else None
    for leaf in leaves:
        raw = _raw(data, leaf)
        if raw.isascii() and _ascii_safe(leaf[3]):
            if ascii_wanted is not None and ascii_wanted in raw.lower():
                return True
            continue
        if wanted in decode_charset(raw, leaf[3]).casefold():
            return True
    return False


def pack(leaves: Sequence[Leaf]) -> bytes | None:
    """The stored form of ``leaves``; None when a name is too long to hold."""
    out = []
    for start, length, encoding, charset in leaves:
        names = encoding.encode("utf-8", "surrogatepass"), charset.encode("utf-8", "surrogatepass")
        if len(names[0]) > 255 or len(names[1]) > 255:
            return None
        out += [_HEAD.pack(start, length, len(names[0]), len(names[1])), *names]
    return b"".join(out)


def stored_form(structure: object) -> bytes | None:
    """:func:`pack` of the leaves of a cached structure, or None when it is not in the
    current layout (no body offsets) or cannot be packed."""
    if not isinstance(structure, Mapping) or "body_offset" not in structure:
        return None
    try:
        return pack(text_leaves(structure))
    except (KeyError, TypeError, ValueError):
        return None


def unpack(data: bytes) -> list[Leaf]:
    """The leaves of a stored form; ValueError when it is cut short."""
    out: list[Leaf] = []
    position, end = 0, len(data)
    while position < end:
        if position + _HEAD.size > end:
            raise ValueError("text leaves cut short")
        start, length, encoding_size, charset_size = _HEAD.unpack_from(data, position)
        position += _HEAD.size
        names_end = position + encoding_size + charset_size
        if names_end > end:
            raise ValueError("text leaves cut short")
        encoding = data[position : position + encoding_size].decode("utf-8", "surrogatepass")
        charset = data[position + encoding_size : names_end].decode("utf-8", "surrogatepass")
        out.append((start, length, encoding, charset))
        position = names_end
    return out
