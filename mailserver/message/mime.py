"""A byte-offset-exact MIME structure parser (RFC 2045, RFC 2046, RFC 2231).

:func:`parse` runs once, at delivery time; the store caches its result so that IMAP FETCH
ENVELOPE / BODYSTRUCTURE / BODY[part] never re-read the message file. Every node of the
structure records where its header and body sit in the original bytes, and every size and
line count is of the bytes as given (CRLF or LF-only line ends alike).

Shape of a ``bodystructure`` node (all values JSON-serialisable):

- every node: ``type``, ``subtype`` (lower-case), ``params`` (dict, names lower-case, RFC 2231
  decoded), ``disposition`` (``[type, params]`` or None), ``language`` (list or None),
  ``location``, ``header_offset``, ``body_offset``, ``body_length``, ``size``;
- a multipart node has ``parts`` (a non-empty list of nodes); a node is multipart if and
  only if it has ``parts``;
- any other node has ``id``, ``description``, ``encoding`` (lower-case), ``lines`` (for
  ``text/*`` and ``message/rfc822``, else None) and ``md5``;
- a parsed ``message/rfc822`` (or ``message/global``) node also has ``envelope`` and
  ``bodystructure``, the encapsulated message's; one that is base64/quoted-printable encoded
  or too deep has neither and is described as an opaque leaf.

Broken MIME is described, never refused: a missing closing boundary ends the part at the end
of its parent, a multipart without a usable boundary is text/plain, a multipart without any
delimiter line has one headerless text/plain part holding its whole body, a bogus
Content-Type is text/plain (RFC 2045 §5.2), nesting deeper than :data:`MAX_DEPTH` turns
containers into leaves, and delimiters after the :data:`MAX_PARTS`-th part are ignored.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field

from mailserver.message.envelope import build_envelope
from mailserver.message.headers import (
    decode_charset,
    decode_encoded_words,
    decode_text,
    first_fields,
    header_length,
    parse_headers,
)
from mailserver.message.octets import long_lines

__all__ = [
    "MAX_DEPTH",
    "MAX_PARTS",
    "ParsedMessage",
    "parse",
    "parse_content_disposition",
    "parse_content_type",
    "parse_parameters",
]

#: Containers nested deeper than this are described as leaves.
MAX_DEPTH = 32
#: At most this many multipart children per message; once reached, the open part of each
#: multipart runs to the end of its parent (bounds the cached structure of hostile mail).
MAX_PARTS = 10_000

_TEXT_PLAIN: tuple[str, str, dict[str, str]] = ("text", "plain", {"charset": "us-ascii"})
_MESSAGE_RFC822: tuple[str, str, dict[str, str]] = ("message", "rfc822", {})
# RFC 2045 §5.1 token: any CHAR except SPACE, CTLs and tspecials.
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
# RFC 2231 §3-4: name*, name*N, name*N*
_EXTENDED_NAME = re.compile(r"(?P<name>[^*]+)\*(?:(?P<index>[0-9]+)(?P<star>\*)?)?")
# RFC 2045 §6.4: these encodings keep the body readable as a message (RFC 2046 §5.2.1).
_IDENTITY_ENCODINGS = frozenset({"7bit", "8bit", "binary"})


@dataclass(frozen=True)
class ParsedMessage:
    """The cached facts about one raw message.

    ``envelope`` is the IMAP ENVELOPE (see :func:`mailserver.message.envelope.build_envelope`),
    ``bodystructure`` the root node described in the module docstring, ``attachments`` one
    dict per attachment (part, filename, content_type, size, encoding), ``size`` the length
    of the data and ``has_8bit`` whether any byte is outside US-ASCII.
    """

    envelope: dict[str, object]
    bodystructure: dict[str, object]
    attachments: list[dict[str, object]] = field(default_factory=list)
    size: int = 0
    has_8bit: bool = False


def _strip_comments(text: str) -> str:
    """Remove RFC 822 comments (nesting allowed) outside quoted strings."""
    if "(" not in text:
        return text
    out: list[str] = []
    depth = 0
    quoted = False
    i = 0
    while i < len(text):
        char = text[i]
        if depth:
            if char == "\\":
                i += 1
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
        elif quoted:
            out.append(char)
            if char == "\\" and i + 1 < len(text):
                i += 1
                out.append(text[i])
            elif char == '"':
                quoted = False
        elif char == "(":
            depth = 1
        else:
            quoted = char == '"'
            out.append(char)
        i += 1
    return "".join(out)


def _segments(text: str) -> list[str]:
    """Split ``text`` at semicolons outside quoted strings, in one linear pass."""
    segments: list[str] = []
    start = 0
    quoted = False
    i = 0
    while i < len(text):
        char = text[i]
        if quoted and char == "\\":
            i += 1
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            segments.append(text[start:i])
            start = i + 1
        i += 1
    segments.append(text[start:])
    return segments


def _unquote(value: str) -> str:
    """Return the content of a quoted-string (escapes removed; an unterminated one runs to
    the end), or the stripped token."""
    value = value.strip()
    if not value.startswith('"'):
        return value
    out: list[str] = []
    i = 1
    while i < len(value) and value[i] != '"':
        if value[i] == "\\" and i + 1 < len(value):
            i += 1
        out.append(value[i])
        i += 1
    return "".join(out)


def _raw_parameters(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Split ``value; name=value; ...`` into the leading value and (name, value) pairs,
    skipping parameters without a name or ``=`` (tolerant of broken mail)."""
    head, *rest = _segments(_strip_comments(text))
    params: list[tuple[str, str]] = []
    for segment in rest:
        name, equals, value = segment.partition("=")
        name = name.strip().lower()
        if equals and name:
            params.append((name, _unquote(value)))
    return head.strip(), params


def _decode_2231(sections: dict[int, tuple[str, bool]]) -> str:
    """Join RFC 2231 §3-4 continuation sections and decode ``charset'language'%XX`` text."""
    charset = ""
    chunks: list[bytes] = []
    first = min(sections)  # once: per section it made 10,000 sections take seconds
    for index in sorted(sections):
        value, extended = sections[index]
        if extended:
            if index == first and value.count("'") >= 2:
                charset, _language, value = value.split("'", 2)
            chunks.append(urllib.parse.unquote_to_bytes(value.encode("latin-1", "replace")))
        else:
            chunks.append(value.encode("latin-1", "replace"))
    raw = b"".join(chunks)
    return decode_charset(raw, charset) if charset else decode_text(raw)


def _parameters(raw: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, str]]:
    """Decode parameters: returns (decoded params, raw latin-1 values of plain params).

    The first occurrence of a name wins; an RFC 2231 form overrides the plain form of the
    same name (RFC 2231 §3: senders give both for old readers).
    """
    plain: dict[str, str] = {}
    extended: dict[str, dict[int, tuple[str, bool]]] = {}
    for name, value in raw:
        match = _EXTENDED_NAME.fullmatch(name) if "*" in name else None
        if match is None:
            plain.setdefault(name, value)
            continue
        base = match.group("name")
        if match.group("index") is None:
            extended.setdefault(base, {}).setdefault(0, (value, True))
        else:
            index = int(match.group("index"))
            if index > 10000:  # absurd section numbers are ignored
                continue
            extended.setdefault(base, {}).setdefault(index, (value, bool(match.group("star"))))
    params = {name: decode_text(value.encode("latin-1")) for name, value in plain.items()}
    for name, sections in extended.items():
        params[name] = _decode_2231(sections)
    return params, plain


def parse_parameters(raw: bytes) -> tuple[str, dict[str, str]]:
    """Parse a MIME header value ``value; name=value; ...`` (RFC 2045 §5.1, RFC 2231).

    Returns the leading value (lower-case) and the decoded parameters; never raises.
    """
    head, params = _raw_parameters(raw.decode("latin-1"))
    return head.lower(), _parameters(params)[0]


def _content_type(raw: bytes | None) -> tuple[str, str, dict[str, str], bytes | None] | None:
    """Parse Content-Type into (type, subtype, params, raw boundary); None when bogus."""
    if raw is None:
        return None
    head, raw_params = _raw_parameters(raw.decode("latin-1"))
    type_, slash, subtype = head.partition("/")
    type_, subtype = type_.strip().lower(), subtype.strip().lower()
    if not slash or not _TOKEN.fullmatch(type_) or not _TOKEN.fullmatch(subtype):
        return None  # RFC 2045 §5.2: invalid syntax means text/plain; charset=us-ascii
    params, plain = _parameters(raw_params)
    boundary: bytes | None = None
    if "boundary" in plain:
        boundary = plain["boundary"].encode("latin-1", "replace")
    elif "boundary" in params:
        boundary = params["boundary"].encode("utf-8", "replace")
    return type_, subtype, params, boundary


def parse_content_type(raw: bytes | None) -> tuple[str, str, dict[str, str]]:
    """Parse a Content-Type value into (type, subtype, params); a missing or bogus value
    gives text/plain; charset=us-ascii (RFC 2045 §5.2). Never raises."""
    parsed = _content_type(raw)
    if parsed is None:
        return _TEXT_PLAIN[0], _TEXT_PLAIN[1], dict(_TEXT_PLAIN[2])
    return parsed[0], parsed[1], parsed[2]


def parse_content_disposition(raw: bytes | None) -> list[object] | None:
    """Parse Content-Disposition (RFC 2183) into ``[type, params]``, or None when absent
    or empty. Never raises."""
    if raw is None:
        return None
    head, params = parse_parameters(raw)
    if not head:
        return None
    return [head, params]


def _line_count(data: bytes, start: int, end: int) -> int:
    """The number of lines in ``data[start:end]``; an unterminated last line counts."""
    if start >= end:
        return 0
    return _lf_count(data, start, end) + (data[end - 1] != 0x0A)


def _lf_count(data: bytes, start: int, end: int) -> int:
    """The LFs in ``data[start:end]``. Long lines (probes at the start, middle and end) are
    counted by what deleting the LFs removes: ``bytes.replace`` of one octet finds each with
    ``memchr``, about twice as fast as ``bytes.count`` tests every octet, even with the
    slice's copy; dense line ends (about ten times slower that way) are counted."""
    if long_lines(data, start, end):
        body = data[start:end] if start or end != len(data) else data
        return len(body) - len(body.replace(b"\n", b""))
    return data.count(b"\n", start, end)


class _Parser:
    """One parse of one message: walks the entity tree and collects attachments."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.attachments: list[dict[str, object]] = []
        self.parts_left = MAX_PARTS

    def entity(
        self,
        start: int,
        end: int,
        depth: int,
        number: str,
        root: bool,
        default: tuple[str, str, dict[str, str]] = _TEXT_PLAIN,
        collect: bool = True,
    ) -> dict[str, object]:
        """Describe the entity (header + body) in ``data[start:end]``.

        ``number`` is the IMAP part number (RFC 3501 §6.4.5): of the part itself, or for a
        message ``root`` the prefix its parts are numbered under ("" for the top level).
        """
        body_offset = start + header_length(self.data, start, end)
        headers = parse_headers(self.data[start:body_offset])
        return self.node(headers, start, body_offset, end, depth, number, root, default, collect)

    def node(
        self,
        headers: list[tuple[str, bytes]],
        header_offset: int,
        body_offset: int,
        end: int,
        depth: int,
        number: str,
        root: bool,
        default: tuple[str, str, dict[str, str]],
        collect: bool,
    ) -> dict[str, object]:
        """Describe an entity whose header has already been parsed."""
        fields = first_fields(headers)
        raw_type = fields.get("content-type")
        parsed = _content_type(raw_type) if raw_type is not None else None
        boundary: bytes | None = None
        if parsed is not None:
            type_, subtype, params, boundary = parsed
        elif raw_type is None:
            type_, subtype, params = default[0], default[1], dict(default[2])
        else:
            type_, subtype, params = _TEXT_PLAIN[0], _TEXT_PLAIN[1], dict(_TEXT_PLAIN[2])
        if type_ == "multipart" and not boundary:
            # No usable boundary: the body cannot be split, so it is read as text.
            type_, subtype, params = _TEXT_PLAIN[0], _TEXT_PLAIN[1], dict(_TEXT_PLAIN[2])
        node: dict[str, object] = {"type": type_, "subtype": subtype, "params": params}
        language = fields.get("content-language")
        languages = None
        if language is not None:
            languages = [tag.strip() for tag in decode_text(language).split(",") if tag.strip()]
        location = fields.get("content-location")
        common = {
            "disposition": parse_content_disposition(fields.get("content-disposition")),
            "language": languages or None,
            "location": decode_text(location) if location is not None else None,
            "header_offset": header_offset,
            "body_offset": body_offset,
            "body_length": end - body_offset,
            "size": end - body_offset,
        }
        if type_ == "multipart" and boundary and depth < MAX_DEPTH:
            child_default = _MESSAGE_RFC822 if subtype == "digest" else _TEXT_PLAIN
            node["parts"] = self.multipart(
                boundary, body_offset, end, depth, number, child_default, collect
            )
            node.update(common)
            return node
        raw_encoding = fields.get("content-transfer-encoding")
        encoding = "7bit"  # RFC 2045 §6.1 default
        if raw_encoding is not None:
            encoding = _strip_comments(decode_text(raw_encoding)).strip().lower() or "7bit"
        description = fields.get("content-description")
        content_id = fields.get("content-id")
        md5 = fields.get("content-md5")
        is_message = type_ == "message" and subtype in ("rfc822", "global")
        node.update(
            {
                "id": decode_text(content_id) if content_id is not None else None,
                "description": (
                    decode_encoded_words(decode_text(description))
                    if description is not None
                    else None
                ),
                "encoding": encoding,
                "size": end - body_offset,
                "lines": (
                    _line_count(self.data, body_offset, end)
                    if type_ == "text" or is_message
                    else None
                ),
                "md5": decode_text(md5) if md5 is not None else None,
            }
        )
        node.update({key: value for key, value in common.items() if key != "size"})
        part = (f"{number}.1" if number else "1") if root else number
        if collect:
            self.attachment(node, part)
        if is_message and encoding in _IDENTITY_ENCODINGS and depth < MAX_DEPTH:
            inner_end = body_offset + header_length(self.data, body_offset, end)
            inner_headers = parse_headers(self.data[body_offset:inner_end])
            node["envelope"] = build_envelope(inner_headers)
            # The parts of an attached message belong to it, not to this message's list.
            node["bodystructure"] = self.node(
                inner_headers,
                body_offset,
                inner_end,
                end,
                depth + 1,
                number=part,
                root=True,
                default=_TEXT_PLAIN,
                collect=False,
            )
        return node

    def multipart(
        self,
        boundary: bytes,
        start: int,
        end: int,
        depth: int,
        number: str,
        default: tuple[str, str, dict[str, str]],
        collect: bool,
    ) -> list[dict[str, object]]:
        """Split a multipart body at its delimiter lines (RFC 2046 §5.1.1) and describe each
        part; the line break before a delimiter belongs to the delimiter, not the part."""
        data = self.data
        delimiter = re.compile(
            rb"(?m)^--" + re.escape(boundary) + rb"(--)?[ \t]*\r?$"
        )  # RFC 2046 §5.1.1: transport padding (LWSP) may follow the boundary
        spans: list[tuple[int, int]] = []
        part_start: int | None = None
        for match in delimiter.finditer(data, start, end):
            if self.parts_left <= 0 and not match.group(1):
                break  # MAX_PARTS reached: the open part (if any) runs to the end
            line_start = match.start()
            if part_start is not None:
                part_end = line_start
                if part_end > part_start and data[part_end - 1] == 0x0A:
                    part_end -= 1
                    if part_end > part_start and data[part_end - 1] == 0x0D:
                        part_end -= 1
                spans.append((part_start, part_end))
            if match.group(1):
                part_start = None
                break
            self.parts_left -= 1
            line_end = match.end()
            part_start = line_end + 1 if line_end < end and data[line_end] == 0x0A else line_end
        if part_start is not None:
            spans.append((part_start, end))  # no close delimiter: the part runs to the end
        parts: list[dict[str, object]] = []
        if not spans:
            # No delimiter line at all: one headerless text/plain part holds the whole body.
            part = f"{number}.1" if number else "1"
            return [self.node([], start, start, end, depth + 1, part, False, _TEXT_PLAIN, collect)]
        for index, (part_start, part_end) in enumerate(spans, 1):
            part = f"{number}.{index}" if number else str(index)
            parts.append(
                self.entity(part_start, part_end, depth + 1, part, False, default, collect)
            )
        return parts

    def attachment(self, node: dict[str, object], part: str) -> None:
        """Record ``node`` as an attachment when it has an attachment disposition, a file
        name, or is not text."""
        disposition = node["disposition"]
        disposition_type: object = None
        filename: str | None = None
        if isinstance(disposition, list):
            disposition_type, disposition_params = disposition
            if isinstance(disposition_params, dict):
                filename = disposition_params.get("filename")
        params = node["params"]
        if not filename and isinstance(params, dict):
            filename = params.get("name")
        if filename:
            filename = decode_encoded_words(filename)
        if disposition_type != "attachment" and not filename and node["type"] == "text":
            return
        self.attachments.append(
            {
                "part": part,
                "filename": filename or None,
                "content_type": f"{node['type']}/{node['subtype']}",
                "size": node["size"],
                "encoding": node["encoding"],
            }
        )


def parse(data: bytes) -> ParsedMessage:
    """Parse raw message bytes (without an mbox ``From`` line) into a :class:`ParsedMessage`.

    Never raises on any input; all offsets lie within ``data``.
    """
    parser = _Parser(data)
    header_end = header_length(data)
    headers = parse_headers(data[:header_end])
    structure = parser.node(headers, 0, header_end, len(data), 0, "", True, _TEXT_PLAIN, True)
    return ParsedMessage(
        envelope=build_envelope(headers),
        bodystructure=structure,
        attachments=parser.attachments,
        size=len(data),
        has_8bit=not data.isascii(),
    )
