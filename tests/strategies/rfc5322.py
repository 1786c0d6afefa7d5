"""Strategies for RFC 5322 header fields, RFC 2047 encoded-words and address lists
(``mailserver.message.headers`` and ``mailserver.message.envelope``).

Models: :func:`header_blocks` (fields, and the block with CRLF or LF line ends and folding),
:func:`encoded_texts` (text and its encoded-words), :func:`address_lists` (mailboxes and
groups, and the ENVELOPE entries they must parse to). Noise: :func:`headerish` (lines near
the header grammar: continuation lines, stray colons, CRs, encoded-word starts, 8-bit text).
"""

from __future__ import annotations

import base64

from hypothesis import strategies as st

#: RFC 5322 §2.2 ftext: printable US-ASCII except ":".
FTEXT = "".join(chr(c) for c in range(0x21, 0x7F) if c != 0x3A)
#: atext without "." (RFC 5322 §3.2.3), for words of a display name.
ATEXT = "abcxyzABCXYZ0189!#$%&'*+/=?^_`{|}~-"

field_names = st.text(alphabet=FTEXT, min_size=1, max_size=16)
_words = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E) | st.sampled_from("éü日"),
    min_size=1,
    max_size=10,
)
#: Unstructured field values: words separated by single spaces (no CR, LF or outer blanks).
values = st.lists(_words, max_size=8).map(" ".join)


@st.composite
def header_blocks(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, bytes]]]:
    """``(block, fields)``: a header block ending with its empty line, each value folded at
    some of its spaces (RFC 5322 §2.2.3), and the (name, unfolded value) pairs it holds."""
    newline = draw(st.sampled_from(["\r\n", "\n"]))
    fields = draw(st.lists(st.tuples(field_names, values), max_size=8))
    lines = []
    for name, value in fields:
        words = value.split(" ")
        folded = words[0]
        for word in words[1:]:
            folded += draw(st.sampled_from([" ", newline + " "])) + word  # unfolds to " "
        space = draw(st.sampled_from(["", " ", "  ", "\t"]))
        lines.append(f"{name}:{space}{folded}{newline}")
    block = ("".join(lines) + newline).encode("utf-8")
    return block, [(name, value.encode("utf-8")) for name, value in fields]


def _q(raw: bytes) -> str:
    """RFC 2047 §4.2 Q encoding: "_" for space, "=XX" for anything not alphanumeric."""
    return "".join(
        "_" if b == 0x20 else chr(b) if chr(b).isalnum() and b < 0x80 else f"={b:02X}"
        for b in raw
    )


@st.composite
def encoded_texts(draw: st.DrawFn) -> tuple[str, str]:
    """``(text, encoded)``: text in UTF-8 cut at any octet into encoded-words (B or Q,
    charset in any case), separated by folding whitespace, which decoding drops."""
    text = draw(st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1,
                        max_size=30))  # fmt: skip
    raw = text.encode("utf-8")
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(raw) - 1)), max_size=3))))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)]) if raw[a:b]]
    words = []
    for chunk in chunks:
        charset = draw(st.sampled_from(["utf-8", "UTF-8", "Utf-8"]))
        if draw(st.booleans()):
            words.append(f"=?{charset}?{draw(st.sampled_from('Bb'))}?"
                         f"{base64.b64encode(chunk).decode()}?=")  # fmt: skip
        else:
            words.append(f"=?{charset}?{draw(st.sampled_from('Qq'))}?{_q(chunk)}?=")
    return text, draw(st.sampled_from([" ", "\r\n ", "\t"])).join(words)


_DISPLAY_WORDS = st.text(alphabet=ATEXT, min_size=1, max_size=8).filter(lambda w: "=?" not in w)
_QUOTED_NAMES = (
    st.lists(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E)
                     | st.sampled_from("éü"), min_size=1, max_size=8),
             min_size=1, max_size=3)
    .map(" ".join)
    .filter(lambda n: "=?" not in n)
)  # fmt: skip
_LOCALS = st.lists(st.text(alphabet=ATEXT, min_size=1, max_size=8), min_size=1, max_size=3).map(
    ".".join
)
_DOMAINS = st.lists(st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,6}[A-Za-z0-9])?", fullmatch=True),
                    min_size=1, max_size=3).map(".".join)  # fmt: skip


@st.composite
def mailbox_texts(draw: st.DrawFn) -> tuple[str, list[str | None]]:
    """``(text, entry)``: ``local@domain``, ``Name <local@domain>`` or ``"Quoted, Name"
    <local@domain>``, and its ENVELOPE entry [name, None, local, domain]."""
    local, domain = draw(_LOCALS), draw(_DOMAINS)
    kind = draw(st.sampled_from(["bare", "atoms", "quoted"]))
    if kind == "bare":
        return f"{local}@{domain}", [None, None, local, domain]
    if kind == "atoms":
        name = " ".join(draw(st.lists(_DISPLAY_WORDS, min_size=1, max_size=3)))
        return f"{name} <{local}@{domain}>", [name, None, local, domain]
    name = draw(_QUOTED_NAMES)
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}" <{local}@{domain}>', [name, None, local, domain]


@st.composite
def address_lists(draw: st.DrawFn) -> tuple[bytes, list[list[str | None]]]:
    """``(field value, entries)``: mailboxes and groups (RFC 5322 §3.4) separated by commas,
    and the ENVELOPE entries (RFC 3501 §7.4.2: a group is a start entry, its members and an
    end entry)."""
    texts, entries = [], []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.integers(0, 4)) == 0:
            group = " ".join(draw(st.lists(_DISPLAY_WORDS, min_size=1, max_size=2)))
            members = draw(st.lists(mailbox_texts(), max_size=3))
            texts.append(f"{group}: {', '.join(text for text, _ in members)};")
            entries += [[None, None, group, None], *(e for _, e in members)]
            entries.append([None, None, None, None])
        else:
            text, entry = draw(mailbox_texts())
            texts.append(text)
            entries.append(entry)
    separator = draw(st.sampled_from([", ", ",", ",\r\n "]))
    return separator.join(texts).encode("utf-8"), entries


def headerish() -> st.SearchStrategy[bytes]:
    """Header-like noise: fields, continuation lines, stray colons and CRs, broken
    encoded-words and 8-bit bytes, joined with LF (CRs come from the fragments)."""
    return st.lists(
        st.sampled_from([b"A: 1", b" cont", b"\t", b"", b"\r", b"garbage", b":", b"X :y",
                         b"=?", b"Subject: =?utf-8?b?@@?= =?x?q?=FF?=", b"From: A <a@b>, (c",
                         b"To: g: a@b, \"c\" <d@e>;", b"\xff\xfe", b"=?utf-8?q?a?= =?utf-8?b?"])
        | st.binary(max_size=20),
        max_size=12,
    ).map(b"\n".join)  # fmt: skip
