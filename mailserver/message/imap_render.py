"""IMAP ENVELOPE, BODYSTRUCTURE and BODY of a message's cached parse results, rendered once at
delivery and kept beside them in the index, so a FETCH writes stored bytes instead of
rebuilding them from Python structures per message (issue 6).

A leaf (only the standard library): the store renders with it when it indexes a message, and
the IMAP server reads the stored form. Guarantees:

1. :func:`envelope` and :func:`body_structure` are the one serialisation of these items (RFC
   9051 §7.5.2: the IMAP quoting and literal choices, UTF-8 or RFC 2047 / RFC 2231 forms for
   the client's UTF8=ACCEPT state): :mod:`mailserver.imap.response` re-exports them, so what
   is stored at delivery is what FETCH renders for an object with nothing stored.
2. :func:`render` covers the parse results of :func:`mailserver.message.mime.parse` that carry
   body offsets (the current layout); it returns None for anything older, which the server
   then renders as before.
3. The stored form (:func:`pack`) is a sequence of (one-letter item tag, u32 length, bytes);
   an item's UTF-8 variant is stored only when it differs from the plain one.
   :func:`unpack` gives a mapping of item name (``ENVELOPE``, ``BODYSTRUCTURE``, ``BODY``, and
   the same with ``/utf8`` for the variants) to bytes; :func:`item` picks the one a client gets.
"""

from __future__ import annotations

import base64
import functools
import struct
from collections.abc import Iterable, Mapping

__all__ = [
    "ITEMS",
    "body_structure",
    "encoded_words",
    "envelope",
    "item",
    "pack",
    "render",
    "unpack",
]

#: The FETCH items kept rendered, by their one-letter tag in the stored form.
ITEMS = {"ENVELOPE": b"E", "BODYSTRUCTURE": b"S", "BODY": b"B"}
_NAMES = {tag[0]: name for name, tag in ITEMS.items()}
#: Tag of an item's UTF-8 variant: its tag in lower case.
_UTF8 = "/utf8"
_LENGTH = struct.Struct(">I")

Text = str | bytes


def render(meta: Mapping[str, object]) -> dict[str, bytes] | None:
    """The rendered items of an object's parse results (``envelope``, ``bodystructure``), or
    None when they are not in the current layout (no envelope, or a structure without the
    body offsets :func:`mailserver.message.mime.parse` records today)."""
    env = meta.get("envelope")
    structure = meta.get("bodystructure")
    if not env or not isinstance(env, Mapping) or not isinstance(structure, Mapping):
        return None
    if "body_offset" not in structure:
        return None
    wide = _items(env, structure, utf8=True)
    if all(value.isascii() for value in wide.values()):
        # Every string rendered was ASCII (a UTF-8 client gets any other octet as it is), and
        # an ASCII string is written the same for both kinds of client: no variants.
        return wide
    out = _items(env, structure, utf8=False)
    for name, value in wide.items():
        if out[name] != value:
            out[name + _UTF8] = value
    return out


def _items(
    env: Mapping[str, object], structure: Mapping[str, object], *, utf8: bool
) -> dict[str, bytes]:
    """ENVELOPE, BODYSTRUCTURE and BODY for one kind of client."""
    return {
        "ENVELOPE": envelope(env, utf8=utf8),
        "BODYSTRUCTURE": body_structure(structure, extended=True, utf8=utf8),
        "BODY": body_structure(structure, extended=False, utf8=utf8),
    }


def pack(items: Mapping[str, bytes]) -> bytes:
    """The stored form of :func:`render`'s items."""
    out = []
    for name, value in items.items():
        base, _, variant = name.partition("/")
        tag = ITEMS[base]
        out += [tag.lower() if variant else tag, _LENGTH.pack(len(value)), value]
    return b"".join(out)


def unpack(data: bytes) -> dict[str, bytes]:
    """The items of a stored form; ValueError when it is cut short or holds an unknown tag."""
    out: dict[str, bytes] = {}
    view = memoryview(data)
    position, end = 0, len(data)
    while position < end:
        if position + 5 > end:
            raise ValueError("rendered items cut short")
        tag = data[position]
        (length,) = _LENGTH.unpack_from(data, position + 1)
        start = position + 5
        position = start + length
        if position > end:
            raise ValueError("rendered items cut short")
        name = _NAMES.get(tag) or _NAMES.get(tag - 32 if 97 <= tag <= 122 else -1)
        if name is None:
            raise ValueError(f"unknown rendered item tag {tag!r}")
        out[name if tag < 97 else name + _UTF8] = bytes(view[start:position])
    return out


def item(items: Mapping[str, bytes], name: str, utf8: bool) -> bytes | None:
    """The stored value of FETCH item ``name`` for a client with (``utf8``) or without
    UTF8=ACCEPT; None when it is not stored."""
    if utf8:
        value = items.get(name + _UTF8)
        if value is not None:
            return value
    return items.get(name)


# -- the serialisation (RFC 9051 §4.3, §7.5.2) -----------------------------------------------

#: RFC 2047 §2: an encoded-word is at most 75 characters; 45 octets of UTF-8 stay below that.
_WORD_OCTETS = 45
#: RFC 2231 §7 attribute-char: what may appear unescaped in an extended parameter value.
_ATTRIBUTE_CHARS = frozenset(
    b"!#$&+-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz{|}~"
)


def _bytes(value: Text) -> bytes:
    if type(value) is bytes:
        return value
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _quotable(data: bytes, utf8: bool) -> bool:
    """RFC 9051 §4.3: no CR, LF or NUL; 8-bit only for a UTF-8 client and valid UTF-8."""
    if b"\r" in data or b"\n" in data or b"\x00" in data:
        return False
    if data.isascii():
        return True
    if not utf8:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _literal(data: bytes, binary: bool) -> bytes:
    return b"%s{%d}\r\n%s" % (b"~" if binary else b"", len(data), data)


def _ascii_string(value: str) -> bytes:
    if "\r" in value or "\n" in value or "\x00" in value:
        return _literal(value.encode("ascii"), "\x00" in value)
    return ('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"').encode("ascii")


#: Short ASCII values repeat across messages (types, parameter names, charsets, addresses).
_short_ascii = functools.lru_cache(maxsize=4096)(_ascii_string)


def _string(value: Text, utf8: bool) -> bytes:
    """``string``: quoted when possible, else a literal (literal8 when it holds NUL)."""
    if type(value) is str and value.isascii():
        return _short_ascii(value) if len(value) <= 64 else _ascii_string(value)
    data = _bytes(value)
    if _quotable(data, utf8):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return _literal(data, b"\x00" in data)


def _plist(items: Iterable[bytes]) -> bytes:
    return b"(" + b" ".join(items) + b")"


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "replace")


def encoded_words(text: str) -> str:
    """``text`` as RFC 2047 ``=?utf-8?b?...?=`` words when it is not ASCII, else unchanged
    (for a client that cannot take UTF-8 in ENVELOPE / BODYSTRUCTURE strings)."""
    if text.isascii():
        return text
    words: list[str] = []
    chunk = b""
    for char in text:
        octets = _utf8(char)
        if len(chunk) + len(octets) > _WORD_OCTETS:
            words.append(chunk.decode("utf-8"))
            chunk = b""
        chunk += octets
    if chunk:
        words.append(chunk.decode("utf-8"))
    return " ".join(
        "=?utf-8?b?" + base64.b64encode(_utf8(word)).decode("ascii") + "?=" for word in words
    )


def _ntext(value: object, utf8: bool) -> bytes:
    if value is None:
        return b"NIL"
    text = str(value)
    return _string(text if utf8 else encoded_words(text), utf8)


def _nraw(value: object, utf8: bool) -> bytes:
    return b"NIL" if value is None else _string(str(value), utf8)


def _address_list(entries: object, utf8: bool) -> bytes:
    if not entries or not isinstance(entries, list | tuple):
        return b"NIL"
    out: list[bytes] = []
    for entry in entries:
        name, route, local, domain = (list(entry) + [None] * 4)[:4]
        out.append(
            b"("
            + b" ".join(
                [
                    _ntext(name, utf8),
                    _nraw(route, utf8),
                    _nraw(local, utf8),
                    _nraw(domain, utf8),
                ]
            )
            + b")"
        )
    return b"(" + b"".join(out) + b")"


def envelope(env: Mapping[str, object], *, utf8: bool = False) -> bytes:
    """ENVELOPE of a cached envelope dict: ``(date subject from sender reply-to to cc bcc
    in-reply-to message-id)``."""
    return _plist(
        [
            _nraw(env.get("date"), utf8),
            _ntext(env.get("subject"), utf8),
            *(
                _address_list(env.get(key), utf8)
                for key in ("from", "sender", "reply_to", "to", "cc", "bcc")
            ),
            _nraw(env.get("in_reply_to"), utf8),
            _nraw(env.get("message_id"), utf8),
        ]
    )


def _rfc2231(value: str) -> str:
    return "utf-8''" + "".join(
        chr(byte) if byte in _ATTRIBUTE_CHARS else f"%{byte:02X}" for byte in _utf8(value)
    )


def _params(params: object, utf8: bool) -> bytes:
    if not params or not isinstance(params, Mapping):
        return b"NIL"
    out: list[bytes] = []
    for name, value in params.items():
        key, text = str(name).upper(), str(value)
        if not utf8 and not text.isascii():
            key, text = key + "*", _rfc2231(text)
        out += [_string(key, utf8), _string(text, utf8)]
    return _plist(out)


def _disposition(value: object, utf8: bool) -> bytes:
    if not value or not isinstance(value, list | tuple):
        return b"NIL"
    kind, params = (list(value) + [None])[:2]
    return _plist([_string(str(kind).upper(), utf8), _params(params, utf8)])


def _language(value: object, utf8: bool) -> bytes:
    if not value:
        return b"NIL"
    if isinstance(value, str):
        return _string(value, utf8)
    tags = [str(tag) for tag in value] if isinstance(value, list | tuple) else [str(value)]
    if len(tags) == 1:
        return _string(tags[0], utf8)
    return _plist([_string(tag, utf8) for tag in tags])


def _number(value: object) -> bytes:
    return b"%d" % (value if isinstance(value, int) and not isinstance(value, bool) else 0)


def body_structure(
    node: Mapping[str, object], *, extended: bool = True, utf8: bool = False
) -> bytes:
    """BODYSTRUCTURE (``extended``) or BODY of a cached node of
    :func:`mailserver.message.mime.parse`."""
    subtype = _string(str(node.get("subtype", "")).upper(), utf8)
    parts = node.get("parts")
    if isinstance(parts, list | tuple) and parts:
        children = b"".join(
            body_structure(part, extended=extended, utf8=utf8)
            for part in parts
            if isinstance(part, Mapping)
        )
        fields = [children + b" " + subtype]
        if extended:
            fields += [
                _params(node.get("params"), utf8),
                _disposition(node.get("disposition"), utf8),
                _language(node.get("language"), utf8),
                _nraw(node.get("location"), utf8),
            ]
        return b"(" + b" ".join(fields) + b")"
    media_type = str(node.get("type", "text")).lower()
    fields = [
        _string(media_type.upper(), utf8),
        subtype,
        _params(node.get("params"), utf8),
        _nraw(node.get("id"), utf8),
        _ntext(node.get("description"), utf8),
        _string(str(node.get("encoding") or "7bit").upper(), utf8),
        _number(node.get("size")),
    ]
    inner = node.get("bodystructure")
    if media_type == "message" and isinstance(inner, Mapping) and "envelope" in node:
        env = node.get("envelope")
        fields += [
            envelope(env if isinstance(env, Mapping) else {}, utf8=utf8),
            body_structure(inner, extended=extended, utf8=utf8),
            _number(node.get("lines")),
        ]
    elif media_type == "text":
        fields.append(_number(node.get("lines")))
    if extended:
        fields += [
            _nraw(node.get("md5"), utf8),
            _disposition(node.get("disposition"), utf8),
            _language(node.get("language"), utf8),
            _nraw(node.get("location"), utf8),
        ]
    return _plist(fields)
