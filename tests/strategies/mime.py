"""Strategies for MIME messages (``mailserver.message.mime``).

Model: :func:`messages` draws an entity tree (text and application leaves, multiparts with
their own boundaries, ``message/rfc822`` parts holding a whole message) and serialises it
with CRLF or LF line ends; :func:`check_against` compares a parsed structure with the tree.
Noise: :func:`mime_noise` (header and boundary lines of several nesting levels, mixed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

_TOKEN = "abcdefghijklmnopqrstuvwxyz0123456789-+."
_tokens = st.text(alphabet=_TOKEN, min_size=1, max_size=8)
#: Body lines that can never be a boundary delimiter (no line starts with "-").
_body_lines = st.text(alphabet="abcXYZ019 .,=;:!?é", max_size=20)


@dataclass
class Entity:
    """One MIME entity of the model: a leaf (``body``), a multipart (``parts``) or a
    message/rfc822 part (``inner``)."""

    type: str
    subtype: str
    params: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    parts: list[Entity] = field(default_factory=list)
    inner: Entity | None = None
    boundary: str = ""


def _leaf(draw: st.DrawFn, newline: str) -> Entity:
    type_, subtype = draw(st.sampled_from([("text", "plain"), ("text", "html"),
                                           ("application", "octet-stream"),
                                           ("image", "png")]))  # fmt: skip
    params = draw(st.dictionaries(st.sampled_from(["charset", "name", "format", "x-a"]),
                                  _tokens | st.just("with space"), max_size=3))  # fmt: skip
    lines = draw(st.lists(_body_lines, max_size=5))
    body = newline.join(lines).encode("utf-8")
    return Entity(type_, subtype, params, body=body)


def _entity(draw: st.DrawFn, newline: str, depth: int, counter: list[int]) -> Entity:
    kind = draw(st.sampled_from(["leaf", "multipart", "message"] if depth < 4 else ["leaf"]))
    if kind == "leaf":
        return _leaf(draw, newline)
    if kind == "message":
        return Entity("message", "rfc822", inner=_entity(draw, newline, depth + 1, counter))
    counter[0] += 1
    boundary = f"=_b{counter[0]}_{draw(_tokens)}"
    subtype = draw(st.sampled_from(["mixed", "alternative", "related"]))
    parts = [_entity(draw, newline, depth + 1, counter) for _ in range(draw(st.integers(1, 3)))]
    return Entity("multipart", subtype, {"boundary": boundary}, parts=parts, boundary=boundary)


def _header(entity: Entity, draw: st.DrawFn) -> str:
    params = "".join(
        f'; {name}="{value}"' if " " in value or name == "boundary" else f"; {name}={value}"
        for name, value in entity.params.items()
    )
    type_ = draw(st.sampled_from([entity.type, entity.type.upper()]))
    return f"Content-Type: {type_}/{entity.subtype}{params}"


def serialise(entity: Entity, newline: str, draw: st.DrawFn) -> bytes:
    """The entity as bytes: its header, an empty line and its body."""
    header = [_header(entity, draw)]
    if draw(st.booleans()):
        header.append("Content-Transfer-Encoding: 7bit")
    head = (newline.join(header) + newline + newline).encode("utf-8")
    if entity.inner is not None:
        return head + serialise(entity.inner, newline, draw)
    if not entity.parts:
        return head + entity.body
    nl = newline.encode()
    delimiter = b"--" + entity.boundary.encode()
    body = b"preamble" + nl if draw(st.booleans()) else b""
    for part in entity.parts:
        body += delimiter + nl + serialise(part, newline, draw) + nl
    body += delimiter + b"--" + nl + (b"epilogue" + nl if draw(st.booleans()) else b"")
    return head + body


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, Entity]:
    """``(message bytes, entity tree)`` with CRLF or LF line ends throughout."""
    newline = draw(st.sampled_from(["\r\n", "\n"]))
    entity = _entity(draw, newline, 0, [0])
    return serialise(entity, newline, draw), entity


def check_against(data: bytes, node: dict[str, object], entity: Entity) -> None:
    """Assert that the parsed ``node`` describes ``entity``: type, subtype, parameters, the
    leaf bodies (read back through the node's offsets), parts and encapsulated messages."""
    assert (node["type"], node["subtype"]) == (entity.type, entity.subtype), node
    assert node["params"] == entity.params, node
    if entity.parts:
        parts = node["parts"]
        assert isinstance(parts, list) and len(parts) == len(entity.parts), node
        for child, model in zip(parts, entity.parts):
            check_against(data, child, model)
        return
    assert "parts" not in node
    if entity.inner is not None:
        inner = node["bodystructure"]
        assert isinstance(inner, dict)
        check_against(data, inner, entity.inner)
        return
    start = node["body_offset"]
    assert isinstance(start, int) and isinstance(node["body_length"], int)
    assert data[start : start + node["body_length"]] == entity.body


def mime_noise() -> st.SearchStrategy[bytes]:
    """Mixtures of MIME header and delimiter lines (two boundaries, digests, rfc822 parts,
    RFC 2231 continuations, broken encodings), joined with LF or CRLF."""
    fragments = st.sampled_from(
        [b"Content-Type: multipart/mixed; boundary=a", b"Content-Type: multipart/digest; "
         b"boundary=b", b'Content-Type: multipart/alternative; boundary="a"',
         b"Content-Type: message/rfc822", b"Content-Type: message/global",
         b"Content-Type: text/plain; name*0*=utf-8''%FF; name*1=x; name*99999=y",
         b"Content-Disposition: attachment; filename*=utf-8''%E2%82%AC", b"Content-Type: ;",
         b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: (c) 8bit",
         b"Content-Language: en, (x) de", b"--a", b"--a--", b"--b", b"--b--", b"--a  ",
         b"", b" folded", b"text \xff\xfe", b"\r", b"Content-Type: multipart/mixed; boundary="]
    )  # fmt: skip
    return st.tuples(st.lists(fragments, max_size=40), st.sampled_from([b"\n", b"\r\n"])).map(
        lambda drawn: drawn[1].join(drawn[0])
    )
