"""RFC 5322 address lists and the IMAP ENVELOPE structure (RFC 3501 §7.4.2, RFC 9051 §7.5.2).

The parser is tolerant: it never raises, and recovers at the next comma from whatever it
cannot read, as IMAP servers must for the mail that actually arrives.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence

from mailserver.message.headers import decode_encoded_words, decode_text, first_fields

__all__ = ["MISSING_DOMAIN", "build_envelope", "parse_address_list"]

#: The host name reported for a mailbox without a domain (the UW IMAP / Dovecot convention;
#: a NIL host would mean group syntax, RFC 3501 §7.4.2).
MISSING_DOMAIN = ".MISSING-HOST-NAME."

#: One ENVELOPE address: [display name, route (always None), local part, domain].
AddressEntry = list[str | None]

_SPECIALS = '()<>@,;:\\".[]'
_ATOM = re.compile(r"[^\s()<>@,;:\\\".\[\]]+")
_SPACE = re.compile(r"\s+")


def _tokenize(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Split ``text`` into (kind, value) tokens and the list of comments.

    kinds: "atom", "quoted" (value unescaped), "literal" (``[...]`` as written) and
    "special" (one character of RFC 5322 §3.2.3 specials). Comments (RFC 5322 §3.2.2) nest
    and are removed; an unterminated quoted string or comment runs to the end.
    """
    tokens: list[tuple[str, str]] = []
    comments: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
        elif char == '"':
            value: list[str] = []
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
            tokens.append(("quoted", "".join(value)))
            i += 1
        elif char == "(":
            depth = 0
            start = i
            while i < n:
                if text[i] == "\\":
                    i += 1
                elif text[i] == "(":
                    depth += 1
                elif text[i] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            comments.append(text[start + 1 : i].strip())
            i += 1
        elif char == "[":
            end = text.find("]", i)
            end = n if end < 0 else end + 1
            tokens.append(("literal", text[i:end]))
            i = end
        elif char in _SPECIALS:
            tokens.append(("special", char))
            i += 1
        else:
            match = _ATOM.match(text, i)
            assert match is not None  # any other character starts an atom
            tokens.append(("atom", match.group()))
            i = match.end()
    return tokens, comments


def _phrase(tokens: Sequence[tuple[str, str]]) -> str | None:
    """Join display-name tokens with single spaces and decode RFC 2047 encoded-words (also
    inside quoted strings, as real mail needs); None when empty."""
    words: list[str] = []
    for kind, value in tokens:
        if kind == "special" and value == "." and words:
            words[-1] += "."
        elif kind != "special" or value not in "<>":
            words.append(value)
    text = _SPACE.sub(" ", decode_encoded_words(" ".join(words))).strip()
    return text or None


def _local_text(tokens: Sequence[tuple[str, str]]) -> str:
    """The local part as written: atoms and dots, quoted strings re-quoted."""
    parts: list[str] = []
    for kind, value in tokens:
        if kind == "quoted":
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'"{escaped}"')
        else:
            parts.append(value)
    return "".join(parts)


def _addr_spec(tokens: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """Split addr-spec tokens (RFC 5322 §3.4.1) into (local part, domain)."""
    at = max((i for i, tok in enumerate(tokens) if tok == ("special", "@")), default=-1)
    if at < 0:
        return _local_text(tokens), MISSING_DOMAIN
    domain = "".join(value for _, value in tokens[at + 1 :])
    return _local_text(tokens[:at]), domain or MISSING_DOMAIN


def _mailbox(tokens: list[tuple[str, str]], comments: list[str]) -> AddressEntry | None:
    """Turn the tokens of one mailbox (between commas) into an ENVELOPE address entry."""
    if not tokens:
        return None
    if ("special", "<") in tokens:
        start = tokens.index(("special", "<"))
        end = tokens.index(("special", ">"), start) if ("special", ">") in tokens[start:] else None
        inner = tokens[start + 1 : end]
        # RFC 5322 §4.4 obs-route: "@a,@b:" before the addr-spec is dropped.
        if ("special", ":") in inner:
            inner = inner[inner.index(("special", ":")) + 1 :]
        name = _phrase(tokens[:start])
        if not inner:
            return [name, None, "", MISSING_DOMAIN] if name else None
        local, domain = _addr_spec(inner)
        return [name, None, local, domain]
    local, domain = _addr_spec(tokens)
    # Old style "user@host (Full Name)": the comment is the display name.
    name = decode_encoded_words(comments[-1]).strip() if comments else None
    return [name or None, None, local, domain]


def parse_address_list(raw: bytes) -> list[AddressEntry]:
    """Parse an RFC 5322 §3.4 address-list into ENVELOPE address entries; never raises.

    Group syntax ``name: a, b;`` is represented as RFC 3501 §7.4.2 says: a start entry
    ``[None, None, name, None]``, the members, and an end entry ``[None, None, None, None]``.
    Every start entry has its end entry: a group left open, or followed by another group
    before its ``;``, is closed there. The entries of the last :data:`LISTS_KEPT` short
    lists are kept (the same recipients and senders recur); each call gets its own copy.
    """
    if len(raw) > LIST_KEPT_OCTETS:
        return _parse_address_list(raw)
    return [list(entry) for entry in _kept_address_list(raw)]


#: How many address lists, of at most :data:`LIST_KEPT_OCTETS` octets, are kept parsed.
LISTS_KEPT = 1024
LIST_KEPT_OCTETS = 512


@functools.lru_cache(maxsize=LISTS_KEPT)
def _kept_address_list(raw: bytes) -> tuple[tuple[str | None, ...], ...]:
    return tuple(tuple(entry) for entry in _parse_address_list(raw))


def _parse_address_list(raw: bytes) -> list[AddressEntry]:
    entries: list[AddressEntry] = []
    in_group = False
    pieces = _split_top_level(decode_text(raw))
    for piece, terminator in pieces:
        # Each piece is tokenised on its own so comments stay with their mailbox.
        current, comments = _tokenize(piece)
        if terminator == ":":
            if in_group:  # groups do not nest (RFC 5322 §3.4): a new one ends the open one
                entries.append([None, None, None, None])
            entries.append([None, None, _phrase(current) or "", None])
            in_group = True
            continue
        entry = _mailbox(current, comments)
        if entry is not None:
            entries.append(entry)
        if terminator == ";" and in_group:
            entries.append([None, None, None, None])
            in_group = False
    if in_group:
        entries.append([None, None, None, None])
    return entries


def _split_top_level(text: str) -> list[tuple[str, str]]:
    """Split an address list at top-level "," ";" and group ":" (outside quotes, comments
    and angle brackets) into (piece, terminator) pairs; the last terminator is ""."""
    pieces: list[tuple[str, str]] = []
    start = 0
    depth = 0
    angle = False
    quoted = False
    seen_at = False  # an "@" in this piece: a ":" is then a route, not a group
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if quoted:
            if char == "\\":
                i += 1
            elif char == '"':
                quoted = False
        elif depth:
            if char == "\\":
                i += 1
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
        elif char == '"':
            quoted = True
        elif char == "(":
            depth = 1
        elif char == "<":
            angle = True
        elif char == ">":
            angle = False
        elif char == "@":
            seen_at = True
        elif not angle and (char in ",;" or (char == ":" and not seen_at)):
            pieces.append((text[start:i], char))
            start = i + 1
            seen_at = False
        i += 1
    pieces.append((text[start:], ""))
    return pieces


def _address_field(fields: Mapping[str, bytes], name: str) -> list[AddressEntry] | None:
    raw = fields.get(name)
    if raw is None:
        return None
    entries = parse_address_list(raw)
    return entries or None


def _text_field(fields: Mapping[str, bytes], name: str) -> str | None:
    raw = fields.get(name)
    if raw is None:
        return None
    return decode_encoded_words(decode_text(raw))


def build_envelope(headers: Sequence[tuple[str, bytes]]) -> dict[str, object]:
    """Return the IMAP ENVELOPE of a header list as a JSON-serialisable dict.

    Keys: date, subject, from, sender, reply_to, to, cc, bcc, in_reply_to, message_id.
    Strings are decoded (8-bit and RFC 2047); an absent or empty field is None. Sender and
    reply_to default to from (RFC 3501 §7.4.2). Each is the first field of its name.
    """
    fields = first_fields(headers)
    sender = _address_field(fields, "from")
    return {
        "date": _text_field(fields, "date"),
        "subject": _text_field(fields, "subject"),
        "from": sender,
        "sender": _address_field(fields, "sender") or sender,
        "reply_to": _address_field(fields, "reply-to") or sender,
        "to": _address_field(fields, "to"),
        "cc": _address_field(fields, "cc"),
        "bcc": _address_field(fields, "bcc"),
        "in_reply_to": _text_field(fields, "in-reply-to"),
        "message_id": _text_field(fields, "message-id"),
    }
