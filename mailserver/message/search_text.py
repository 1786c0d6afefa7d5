"""The text SEARCH SUBJECT, FROM, TO, CC and BCC look in, made from a message's envelope.

A leaf (only the standard library), shared by the IMAP server, which matches these keys as
case-insensitive substrings (RFC 9051 §6.4.4), and by the store, which keeps the same texts
per message in its index so a search on these keys is one pass over the index (issue 6).
Guarantees:

1. :func:`field_text` is the one definition of the text a key looks in: the envelope's
   (decoded) subject, or its address list written ``name <local@domain>``, joined with
   ``", "``; case-folded (``str.casefold``), so a search compares the case-folded search
   string against it with ``in``.
2. :func:`encode` is the form the store keeps a text in, and :func:`needle` the search
   string in the same form: UTF-8 (lone surrogates passed through), a self-synchronising
   encoding, so ``needle(value) in encode(text)`` is exactly ``value.casefold() in text``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["FIELDS", "encode", "field_text", "needle", "texts"]

#: The SEARCH keys answered from the envelope, and the one-byte tag the store keeps each
#: field's text under.
FIELDS = {"SUBJECT": b"S", "FROM": b"F", "TO": b"T", "CC": b"C", "BCC": b"B"}
_ENVELOPE_KEYS = {"SUBJECT": "subject", "FROM": "from", "TO": "to", "CC": "cc", "BCC": "bcc"}


def _addresses(entries: object) -> str:
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        return ""
    out = []
    for entry in entries:
        name, _route, local, domain = (list(entry) + [None] * 4)[:4]
        address = f"{local or ''}@{domain or ''}" if domain else str(local or "")
        out.append(f"{name} <{address}>" if name else address)
    return ", ".join(out)


def field_text(envelope: Mapping[str, object], field: str) -> str:
    """The case-folded text SEARCH ``field`` (a key of :data:`FIELDS`) looks in."""
    value = envelope.get(_ENVELOPE_KEYS[field])
    if field == "SUBJECT":
        return str(value or "").casefold()
    return _addresses(value).casefold()


def encode(text: str) -> bytes:
    """``text`` as the store keeps it (see the module docstring)."""
    return text.encode("utf-8", "surrogatepass")


def texts(envelope: Mapping[str, object]) -> dict[bytes, bytes]:
    """Every field's text for ``envelope`` in the stored form, by the field's tag."""
    if not isinstance(envelope, Mapping):
        envelope = {}
    return {tag: encode(field_text(envelope, field)) for field, tag in FIELDS.items()}


def needle(value: str) -> bytes:
    """A search string in the stored form of the texts: case-folded and encoded."""
    return encode(value.casefold())
